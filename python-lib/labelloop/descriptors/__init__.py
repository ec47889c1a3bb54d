"""Descriptor files (plugin.json, recipe.json, webapp.json, trigger.json, step.json,
project.json): loading, validation against the packaged schemas, DSS normalisation.

- ``schemas``: reading a descriptor's JSON and the bundled JSON Schema of each kind;
- ``checks``: the schema plus the checks it cannot express, and DSS normalisation.

A component's config (its params) is validated by ``labelloop.params``; ``validate_config`` is
re-exported here because plugins import it from this public module.
"""

from __future__ import annotations

from ..params import PARAM_TYPES, params_schema, validate_config
from .checks import descriptor_errors, load_descriptor, validate_descriptor
from .schemas import KINDS, load_json, schema_for

__all__ = [
    "KINDS", "PARAM_TYPES", "descriptor_errors", "load_descriptor", "load_json",
    "params_schema", "schema_for", "validate_config", "validate_descriptor",
]
