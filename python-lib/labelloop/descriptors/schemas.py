"""The packaged JSON Schemas of descriptor files, and reading a descriptor file's JSON.

Schemas live in ``labelloop/schemas/<kind>.json`` (Draft 2020-12) and share ``common.json``,
whose ``$defs`` are bundled into each kind's schema so that it stands on its own.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ..errors import DescriptorError

KINDS = ("plugin", "recipe", "webapp", "trigger", "step", "project")

_COMMON_REF = "common.json#"


def load_json(path: str | Path) -> Any:
    """Read a JSON file; malformed JSON raises DescriptorError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DescriptorError(str(path), f"cannot read the file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DescriptorError(str(path), f"the file is not UTF-8 text: {e.reason}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DescriptorError(
            str(path), f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})", line=e.lineno
        ) from e


@functools.cache
def _packaged(name: str) -> dict:
    return json.loads(resources.files("labelloop").joinpath("schemas", f"{name}.json").read_text())


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMMON_REF):
            out["$ref"] = "#" + ref[len(_COMMON_REF):]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


@functools.cache
def schema_for(kind: str) -> dict:
    """The packaged JSON Schema of a descriptor kind (self-contained, Draft 2020-12); shared:
    do not change it."""
    if kind not in KINDS:
        raise ValueError(f"unknown descriptor kind {kind!r}; expected one of {', '.join(KINDS)}")
    schema = _rewrite_refs(_packaged(kind))
    defs = dict(_packaged("common")["$defs"])
    clash = set(defs) & set(schema.get("$defs", {}))
    if clash:
        raise ValueError(f"schema {kind}.json redefines common $defs: {sorted(clash)}")
    defs.update(schema.get("$defs", {}))
    schema["$defs"] = defs
    return schema


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    """The (cached) validator of a descriptor kind's schema."""
    return Draft202012Validator(schema_for(kind))
