"""Text spans labeling webapp: the engine's routes (labeling.api) with the `spans` annotation
kind (labeling.kinds.spans), and the labeling page (labeling.ui)."""

from labeling.ui import webapp_backend

create_backend = webapp_backend("text", kind="spans")
