"""Component params (the DSS ``params`` list of a recipe, webapp, trigger or step): one
validation path.

A component's config is checked in three steps: defaults fill unset params, a thin coercion
turns values typed as text (a command line, DSS string flags, query arguments) into the declared
type, and the JSON Schema compiled from the params declaration (``params_schema``) validates the
result. Schema errors are worded by ``labelloop.errors.schema_problems`` and name the component
and the param: ``lab/sampler: param 'count' (Labelings) must be between 1 and 100, got 500``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from typing import Any

from jsonschema import Draft202012Validator

from .errors import ConfigError, json_pointer, schema_problems, shown
from .visibility import visible

PARAM_TYPES = (
    "STRING", "TEXTAREA", "STRINGS", "INT", "DOUBLE", "BOOLEAN", "SELECT", "MULTISELECT",
    "KEY_VALUE_LIST", "MAP", "DATASET", "DATASETS", "FOLDER", "MANAGED_FOLDER", "SAVED_MODEL",
    "COLUMN", "COLUMNS", "SEPARATOR",
)
_STRING_TYPES = {"STRING", "TEXTAREA", "COLUMN", "DATASET", "FOLDER", "MANAGED_FOLDER", "SAVED_MODEL"}
_LIST_TYPES = {"STRINGS", "COLUMNS", "DATASETS"}
_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
_KV_WORDS = 'an object {key: value} or a list [{"from": key, "to": value}]'


def flag(value: Any) -> bool:
    """A DSS flag: true, or the string "true"."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fields(params: Any) -> list[dict]:
    return [p for p in params or [] if isinstance(p, dict) and p.get("type") != "SEPARATOR"
            and isinstance(p.get("name"), str) and p.get("name")]


def choices_text(p: dict) -> str:
    """A SELECT / MULTISELECT param's choices as text: '"a" (Label A), "b"'."""
    parts = []
    for c in p.get("selectChoices") or []:
        if isinstance(c, dict):
            label = c.get("label")
            text = shown(c.get("value"))
            parts.append(f"{text} ({label})" if label and label != c.get("value") else text)
    return ", ".join(parts) or "(no choices defined)"


# ---------------------------------------------------------------------------------------------
# Params -> JSON Schema


def _type_schema(p: dict) -> dict:
    ptype = p.get("type")
    choices = [c.get("value") for c in p.get("selectChoices") or [] if isinstance(c, dict)]
    if ptype in _STRING_TYPES:
        return {"type": "string", "x-must": "a string"}
    if ptype in _LIST_TYPES:
        return {"type": "array", "items": {"type": "string", "x-must": "a string"},
                "x-must": "a list of strings"}
    if ptype in ("INT", "DOUBLE"):
        lo, hi = ("minI", "maxI") if ptype == "INT" else ("minD", "maxD")
        s: dict = ({"type": "integer", "x-must": "an integer"} if ptype == "INT"
                   else {"type": "number", "x-must": "a number"})
        if _is_number(p.get(lo)):
            s["minimum"] = p[lo]
        if _is_number(p.get(hi)):
            s["maximum"] = p[hi]
        return s
    if ptype == "BOOLEAN":
        return {"type": "boolean", "x-must": "true or false"}
    if ptype == "SELECT":
        return {"enum": list(choices), "x-choices": choices_text(p)}
    if ptype == "MULTISELECT":
        return {"type": "array", "x-must": "a list of choices",
                "items": {"enum": list(choices), "x-choices": choices_text(p)}}
    value = {"type": ["string", "null"], "x-must": "a string (values map strings to strings)"}
    if ptype == "MAP":
        return {"type": "object", "additionalProperties": value, "x-must": "an object {key: value}"}
    if ptype == "KEY_VALUE_LIST":
        return {"x-must": _KV_WORDS, "anyOf": [
            {"type": "object", "additionalProperties": value},
            {"type": "array", "items": {
                "type": "object", "required": ["from"],
                "properties": {"from": {"type": "string"}, "to": {"type": ["string", "null"]}},
            }},
        ]}
    return {}


def param_schema(p: dict, mandatory: bool = False) -> dict:
    """The JSON Schema of one param's value; a mandatory value may be neither null nor empty."""
    s = _type_schema(p)
    ptype = p.get("type")
    if mandatory:
        hint = f" (type {ptype})" if ptype in PARAM_TYPES else ""
        if ptype in ("SELECT", "MULTISELECT"):
            hint = f"; allowed values: {choices_text(p)}"
        s["x-missing"] = f"is mandatory but was not given{hint}"
        if ptype in _STRING_TYPES:
            s["minLength"] = 1
        elif ptype in _LIST_TYPES or ptype == "MULTISELECT":
            s["minItems"] = 1
        elif ptype in ("MAP", "KEY_VALUE_LIST"):
            s["minProperties"] = 1
    elif "type" in s:  # DSS stores an unset optional param as null
        s["type"] = [s["type"], "null"]
    elif "enum" in s:
        s["enum"].append(None)
    elif "anyOf" in s:
        s["anyOf"].append({"type": "null"})
    if p.get("label"):
        s["title"] = p["label"]
    if p.get("description"):
        s["description"] = p["description"]
    if "defaultValue" in p:
        s["default"] = copy.deepcopy(p["defaultValue"])
    return s


def params_schema(params: list[dict], component: str = "", model: dict | None = None) -> dict:
    """Compile DSS params into the JSON Schema (Draft 2020-12) of a config object.

    Without ``model`` a param with a ``visibilityCondition`` may be hidden, so it is optional
    and a param with a default is not required (the default fills it). With ``model`` (the config
    being checked, defaults applied) each condition is evaluated on it.
    """
    fields = _fields(params)
    if model is None:
        mandatory = [p["name"] for p in fields
                     if flag(p.get("mandatory")) and not p.get("visibilityCondition")]
        required = [p["name"] for p in fields
                    if p["name"] in mandatory and p.get("defaultValue") is None]
    else:
        mandatory = required = _shown_mandatory(fields, model)
    return _schema(fields, component, set(mandatory), required)


def _shown_mandatory(fields: list[dict], model: dict) -> list[str]:
    return [p["name"] for p in fields if flag(p.get("mandatory")) and visible(p, model)]


def _schema(fields: list[dict], component: str, mandatory: set[str], required: list[str]) -> dict:
    props = {p["name"]: param_schema(p, p["name"] in mandatory) for p in fields}
    schema: dict = {"$schema": _SCHEMA_URI, "type": "object"}
    if component:
        schema["title"] = f"config of {component}"
    schema["properties"] = props
    if required:
        schema["required"] = required
    schema["additionalProperties"] = True
    return schema


@functools.lru_cache(maxsize=256)
def _validator(fields_json: str, mandatory: tuple[str, ...]) -> Draft202012Validator:
    # Configs are checked often (each trigger evaluation) against few declarations.
    return Draft202012Validator(_schema(json.loads(fields_json), "", set(mandatory),
                                        list(mandatory)))


# ---------------------------------------------------------------------------------------------
# Thin coercion of values typed as text; the schema then says what is still wrong


def _match_choice(p: dict, v: Any) -> Any:
    values = [c.get("value") for c in p.get("selectChoices") or [] if isinstance(c, dict)]
    if any(type(c) is type(v) and c == v for c in values):
        return v
    by_text = [c for c in values if str(c) == str(v)]  # "3" typed on a command line is 3
    return by_text[0] if len(by_text) == 1 else v


def _as_int(v: Any) -> Any:
    if _is_number(v) and (isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            try:
                f = float(v)
            except ValueError:
                return v
            return int(f) if math.isfinite(f) and f.is_integer() else v
    return v


def _as_float(v: Any) -> Any:
    if _is_number(v):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return v
    return v


def as_bool(v: Any) -> Any:
    """The strings "true" / "false" (any case) as booleans; anything else unchanged."""
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return v


def _as_mapping(ptype: str, v: Any) -> Any:
    if ptype == "KEY_VALUE_LIST" and isinstance(v, list) and all(
            isinstance(x, dict) and "from" in x and isinstance(x["from"], str) for x in v):
        v = {x["from"]: x.get("to") for x in v}
    if isinstance(v, dict):
        return {k: str(x) if _is_number(x) else x for k, x in v.items()}
    return v


def coerce(p: dict, v: Any) -> Any:
    """A value converted to the param's declared type where it is text for one ("7", "true",
    a single name for a list); a value that does not convert is returned unchanged."""
    ptype = p.get("type")
    if ptype in _LIST_TYPES:
        return [v] if isinstance(v, str) else v
    if ptype == "INT":
        return _as_int(v)
    if ptype == "DOUBLE":
        return _as_float(v)
    if ptype == "BOOLEAN":
        return as_bool(v)
    if ptype == "SELECT":
        return _match_choice(p, v)
    if ptype == "MULTISELECT":
        return [_match_choice(p, x) for x in (v if isinstance(v, list) else [v])]
    if ptype in ("KEY_VALUE_LIST", "MAP"):
        return _as_mapping(ptype, v)
    return v


# ---------------------------------------------------------------------------------------------
# Validation


def value_problems(p: dict, value: Any) -> list[str]:
    """What is wrong with one value of a param (coerced first), as reasons; [] when it is valid."""
    schema = param_schema(p)
    errors = Draft202012Validator(schema).iter_errors(coerce(p, value))
    return [_where(path) + reason for path, reason in schema_problems(errors)]


def _where(rest: tuple) -> str:
    return f"(at {json_pointer(rest)}) " if rest else ""


def _param_label(who: str, p: dict) -> str:
    label = p.get("label")
    text = f"{who}: param {p.get('name')!r}"
    return text + (f" ({label})" if label and label != p.get("name") else "")


def validate_config(component: str, params: list[dict], config: dict | None) -> dict:
    """Return a new config with defaults applied and values coerced; ConfigError lists all problems."""
    who = component or "config"
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{who}: the config must be an object of param values, got {shown(config)}")
    out = copy.deepcopy(config)
    fields = _fields(params)
    for p in fields:
        name = p["name"]
        if out.get(name) is None and p.get("defaultValue") is not None:
            out[name] = copy.deepcopy(p["defaultValue"])
        if out.get(name) is not None:
            out[name] = coerce(p, out[name])
    validator = _validator(json.dumps(fields, sort_keys=True, default=str),
                           tuple(_shown_mandatory(fields, out)))
    given = {k: v for k, v in out.items() if v is not None}  # null is an unset param
    problems = schema_problems(validator.iter_errors(given))
    if problems:
        order = {p["name"]: i for i, p in enumerate(fields)}
        by_name = {p["name"]: p for p in fields}
        problems.sort(key=lambda item: order.get(item[0][0], len(order)) if item[0] else -1)
        lines = []
        for path, reason in problems:
            p = by_name.get(path[0]) if path else None
            head = _param_label(who, p) if p else f"{who}: {json_pointer(path[:1]) or 'the config'}"
            lines.append(f"{head} {_where(path[1:])}{reason}")
        raise ConfigError("\n".join(lines))
    return out
