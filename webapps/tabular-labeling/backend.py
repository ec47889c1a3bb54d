"""Tabular labeling webapp: the engine and routes come from labeling.api."""

from labeling.api import backend_factory

create_backend = backend_factory("tabular")
