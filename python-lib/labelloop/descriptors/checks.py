"""Descriptor validation: the schema, the checks a schema cannot express, DSS normalisation.

A descriptor error names the file, the JSON pointer and a plain-sentence reason (worded by
``labelloop.errors.schema_problems``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DescriptorError, json_pointer, schema_problems
from ..params import PARAM_TYPES, as_bool, value_problems
from .schemas import load_json, validator

_WEBAPP_FLAGS = ("hasBackend", "noJSSecurity", "standardWebAppLibraries")
# Role defaults as in DSS: a role takes one dataset unless it says otherwise.
_ROLE_DEFAULTS = {
    "arity": "UNARY",
    "required": False,
    "acceptsDataset": True,
    "acceptsManagedFolder": False,
    "acceptsSavedModel": False,
}
_ROLE_FLAGS = ("required", "acceptsDataset", "acceptsManagedFolder", "acceptsSavedModel")


def _sort_key(path: tuple) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# Checks the schema cannot express


def _param_checks(params: Any, base: tuple) -> Iterator[tuple[tuple, str]]:
    if not isinstance(params, list):
        return
    seen: dict[str, int] = {}
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            continue
        here = base + (i,)
        name, ptype = p.get("name"), p.get("type")
        if isinstance(name, str) and ptype != "SEPARATOR":
            if name in seen:
                yield here + ("name",), (
                    f"duplicate param name {name!r} (first used at {json_pointer(base + (seen[name],))})"
                )
            else:
                seen[name] = i
        if ptype in ("SELECT", "MULTISELECT") and not p.get("selectChoices"):
            yield here, f"a {ptype} param needs 'selectChoices': [{{\"value\": ..., \"label\": ...}}, ...]"
        for lo, hi in (("minI", "maxI"), ("minD", "maxD")):
            a, b = p.get(lo), p.get(hi)
            if _is_number(a) and _is_number(b) and a > b:
                yield here, f"{lo} ({a}) is greater than {hi} ({b})"
        if p.get("defaultValue") is not None and ptype in PARAM_TYPES:
            for problem in value_problems(p, p["defaultValue"]):
                yield here + ("defaultValue",), f"the default value {problem}"


def _role_checks(roles: Any, base: tuple) -> Iterator[tuple[tuple, str]]:
    if not isinstance(roles, list):
        return
    seen: dict[str, int] = {}
    for i, r in enumerate(roles):
        name = r.get("name") if isinstance(r, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            yield base + (i, "name"), (
                f"duplicate role name {name!r} (first used at {json_pointer(base + (seen[name],))})"
            )
        else:
            seen[name] = i


def _project_checks(data: dict) -> Iterator[tuple[tuple, str]]:
    recipes = data.get("recipes") if isinstance(data.get("recipes"), dict) else {}
    scenarios = data.get("scenarios")
    if not isinstance(scenarios, dict):
        return
    for sname, scenario in scenarios.items():
        steps = scenario.get("steps") if isinstance(scenario, dict) else None
        if not isinstance(steps, list):
            continue
        for i, step in enumerate(steps):
            if isinstance(step, dict) and isinstance(step.get("recipe"), str):
                if step["recipe"] not in recipes:
                    known = ", ".join(recipes) or "none defined"
                    yield ("scenarios", sname, "steps", i, "recipe"), (
                        f"unknown recipe {step['recipe']!r} (recipes: {known})"
                    )


def _semantic_errors(kind: str, data: Any) -> Iterator[tuple[tuple, str]]:
    if not isinstance(data, dict):
        return
    if kind == "project":
        yield from _project_checks(data)
        return
    yield from _param_checks(data.get("params"), ("params",))
    for key in ("inputRoles", "outputRoles"):
        yield from _role_checks(data.get(key), (key,))


def descriptor_errors(kind: str, data: Any, path: str | Path) -> list[DescriptorError]:
    """Every schema violation and semantic problem of a descriptor, sorted by JSON pointer."""
    found = schema_problems(validator(kind).iter_errors(data))
    found.extend(_semantic_errors(kind, data))
    unique = dict.fromkeys(found)  # a reason reached twice (e.g. via two schema paths) once
    ordered = sorted(unique, key=lambda item: _sort_key(item[0]))
    return [DescriptorError(str(path), reason, pointer=json_pointer(p)) for p, reason in ordered]


# ---------------------------------------------------------------------------------------------
# Validation with DSS normalisation


def _normalise(kind: str, data: dict) -> dict:
    out = copy.deepcopy(data)
    if kind == "project":
        for recipe in (out.get("recipes") or {}).values():
            for key in ("inputs", "outputs"):
                bindings = recipe.get(key) or {}
                for role, names in bindings.items():
                    if isinstance(names, str):
                        bindings[role] = [names]
        return out
    for p in out.get("params") or []:
        if "mandatory" in p:
            p["mandatory"] = as_bool(p["mandatory"])
    for key in ("inputRoles", "outputRoles"):
        for role in out.get(key) or []:
            for name in _ROLE_FLAGS:
                if name in role:
                    role[name] = as_bool(role[name])
            for name, default in _ROLE_DEFAULTS.items():
                role.setdefault(name, default)
    if kind == "webapp":
        for name in _WEBAPP_FLAGS:
            if name in out:
                out[name] = as_bool(out[name])
    return out


def validate_descriptor(kind: str, data: Any, path: str | Path) -> dict:
    """Validate a descriptor; raise its first error, else return a normalised copy."""
    errors = descriptor_errors(kind, data, path)
    if errors:
        first = errors[0]
        reason = first.reason
        if len(errors) > 1:
            more = len(errors) - 1
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        err = DescriptorError(first.path, reason, pointer=first.pointer, line=first.line)
        err.errors = errors  # type: ignore[attr-defined]  # all of them, for `plugin validate`
        raise err
    return _normalise(kind, data)


def load_descriptor(kind: str, path: str | Path) -> dict:
    """Load and validate a descriptor file."""
    return validate_descriptor(kind, load_json(path), path)
