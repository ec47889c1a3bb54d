"""The labeling plugin's engine and routes, with this plugin's `keywords` annotation kind."""

from labeling.ui import webapp_backend

create_backend = webapp_backend("text", kind="keywords")
