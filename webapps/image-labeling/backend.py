"""Image labeling webapp: the engine's routes (labeling.api) and the labeling page (labeling.ui)."""

from labeling.ui import webapp_backend

create_backend = webapp_backend("image")
