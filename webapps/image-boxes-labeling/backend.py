"""Image boxes labeling webapp: the engine's routes (labeling.api) with the `boxes` annotation
kind (labeling.kinds.boxes), and the labeling page (labeling.ui)."""

from labeling.ui import webapp_backend

create_backend = webapp_backend("image", kind="boxes")
