"""Descriptor files (plugin.json, recipe.json, ..., project.json): loading, validation, params.

Schemas live in ``labelloop/schemas/<kind>.json`` (Draft 2020-12) and share ``common.json``.
A descriptor error names the file, the JSON pointer and a plain-sentence reason; a config
error names the component, the param, what was given and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from .errors import ConfigError, DescriptorError

KINDS = ("plugin", "recipe", "webapp", "trigger", "step", "project")

PARAM_TYPES = (
    "STRING", "TEXTAREA", "STRINGS", "INT", "DOUBLE", "BOOLEAN", "SELECT", "MULTISELECT",
    "KEY_VALUE_LIST", "MAP", "DATASET", "DATASETS", "FOLDER", "MANAGED_FOLDER", "SAVED_MODEL",
    "COLUMN", "COLUMNS", "SEPARATOR",
)
_STRING_TYPES = {"STRING", "TEXTAREA", "COLUMN", "DATASET", "FOLDER", "MANAGED_FOLDER", "SAVED_MODEL"}
_LIST_TYPES = {"STRINGS", "COLUMNS", "DATASETS"}
_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
_COMMON_REF = "common.json#"
_NAME_HELP = {
    "^[A-Za-z0-9][A-Za-z0-9_-]*$":
        "use letters, digits, '_' and '-', starting with a letter or digit",
}
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


# ---------------------------------------------------------------------------------------------
# Loading files and schemas


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
def _bundled(kind: str) -> dict:
    # Bundle common.json's $defs into the kind's schema so the result stands on its own.
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


def schema_for(kind: str) -> dict:
    """The packaged JSON Schema of a descriptor kind (self-contained, Draft 2020-12)."""
    return copy.deepcopy(_bundled(kind))


@functools.cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(_bundled(kind))


# ---------------------------------------------------------------------------------------------
# Schema errors in plain sentences


def _pointer(path: tuple) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _sort_key(path: tuple) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_TYPE_WORDS = {
    "string": "a string", "object": "an object", "array": "a list", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _translate(error: ValidationError) -> Iterator[tuple[tuple, str]]:
    """Yield (path, reason) pairs for one jsonschema error."""
    path = tuple(error.absolute_path)
    kw, schema, inst, value = error.validator, error.schema, error.instance, error.validator_value
    if kw == "required":
        missing = error.message.removesuffix(" is a required property")
        yield path, f"{missing} is required"
    elif kw == "enum":
        what = schema.get("x-what") if isinstance(schema, dict) else None
        shown = ", ".join(str(v) if what and isinstance(v, str) else _show(v) for v in value)
        yield path, f"{_show(inst)} is not one of the allowed {what or 'values'} ({shown})"
    elif kw == "const":
        yield path, f"expected {_show(value)}, got {_show(inst)}"
    elif kw == "type":
        types = [value] if isinstance(value, str) else list(value)
        yield path, f"expected {_or([_TYPE_WORDS.get(t, t) for t in types])}, got {_json_type(inst)} {_show(inst)}"
    elif kw == "pattern":
        hint = schema.get("x-pattern-help")
        if hint:
            yield path, f"{_show(inst)} is not valid: {hint}"
        else:
            yield path, f"{_show(inst)} does not match the pattern {value}"
    elif kw == "minLength" and value == 1:
        yield path, "must not be empty"
    elif kw == "additionalProperties" and isinstance(inst, dict):
        yield from _extra_keys(path, schema, inst)
    elif kw in ("oneOf", "anyOf"):
        yield from _translate_choice(error, path)
    else:
        yield path, error.message


def _extra_keys(path: tuple, schema: dict, inst: dict) -> Iterator[tuple[tuple, str]]:
    props = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in inst:
        if key in props or any(re.search(p, key) for p in patterns):
            continue
        if patterns:
            hint = _NAME_HELP.get(patterns[0], f"it must match {patterns[0]}") if len(patterns) == 1 else ""
            yield path + (key,), f"{key!r} is not a valid name" + (f": {hint}" if hint else "")
            continue
        reason = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, list(props), n=1)
        if close:
            reason += f" (did you mean {close[0]!r}?)"
        if props:
            reason += f"; allowed keys: {', '.join(props)}"
        yield path + (key,), reason


def _translate_choice(error: ValidationError, path: tuple) -> Iterator[tuple[tuple, str]]:
    schema, inst = error.schema, error.instance
    forms = schema.get("x-forms")
    if forms:
        # A discriminated oneOf (scenario steps): each branch requires its own key.
        branches = schema[error.validator]
        keys = [b.get("required", [None])[0] for b in branches]
        if not isinstance(inst, dict):
            yield path, f"expected an object, one of {forms}; got {_json_type(inst)} {_show(inst)}"
            return
        present = [i for i, k in enumerate(keys) if k in inst]
        if len(present) == 1:
            i = present[0]
            sub = [c for c in error.context if c.relative_schema_path and c.relative_schema_path[0] == i]
            if sub:
                for c in sub:
                    yield from _translate(c)
                return
        if len(present) > 1:
            both = _or([repr(keys[i]) for i in present]).replace(" or ", " and ")
            yield path, f"has {both}, but a step takes exactly one of them: {forms}"
            return
        yield path, f"expected one of {forms}; got keys {', '.join(map(repr, inst)) or '(none)'}"
        return
    expected = schema.get("x-expected")
    if expected:
        yield path, f"expected {expected}, got {_json_type(inst)} {_show(inst)}"
        return
    best = best_match(error.context) if error.context else None
    if best is not None:
        yield from _translate(best)
    else:
        yield path, error.message


# ---------------------------------------------------------------------------------------------
# Semantic checks the schema cannot express


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


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
                    f"duplicate param name {name!r} (first used at {_pointer(base + (seen[name],))})"
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
            _, problem = _coerce(p, p["defaultValue"])
            if problem:
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
                f"duplicate role name {name!r} (first used at {_pointer(base + (seen[name],))})"
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
    found: list[tuple[tuple, str]] = []
    for error in _validator(kind).iter_errors(data):
        found.extend(_translate(error))
    found.extend(_semantic_errors(kind, data))
    unique = dict.fromkeys(found)  # a reason reached twice (e.g. via two schema paths) once
    ordered = sorted(unique, key=lambda item: _sort_key(item[0]))
    return [DescriptorError(str(path), reason, pointer=_pointer(p)) for p, reason in ordered]


# ---------------------------------------------------------------------------------------------
# Validation with DSS normalisation


def _as_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


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
            p["mandatory"] = _as_bool(p["mandatory"])
    for key in ("inputRoles", "outputRoles"):
        for role in out.get(key) or []:
            for flag in _ROLE_FLAGS:
                if flag in role:
                    role[flag] = _as_bool(role[flag])
            for name, default in _ROLE_DEFAULTS.items():
                role.setdefault(name, default)
    if kind == "webapp":
        for flag in _WEBAPP_FLAGS:
            if flag in out:
                out[flag] = _as_bool(out[flag])
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


# ---------------------------------------------------------------------------------------------
# Component params: JSON Schema and config validation


def _param_schema(p: dict) -> dict:
    ptype = p.get("type")
    choices = [c.get("value") for c in p.get("selectChoices") or [] if isinstance(c, dict)]
    if ptype in _STRING_TYPES:
        s: dict = {"type": "string"}
    elif ptype in _LIST_TYPES:
        s = {"type": "array", "items": {"type": "string"}}
    elif ptype == "INT":
        s = {"type": "integer"}
    elif ptype == "DOUBLE":
        s = {"type": "number"}
    elif ptype == "BOOLEAN":
        s = {"type": "boolean"}
    elif ptype == "SELECT":
        s = {"enum": list(choices)}
    elif ptype == "MULTISELECT":
        s = {"type": "array", "items": {"enum": list(choices)}}
    elif ptype == "MAP":
        s = {"type": "object", "additionalProperties": {"type": "string"}}
    elif ptype == "KEY_VALUE_LIST":
        s = {"anyOf": [
            {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            {"type": "array", "items": {
                "type": "object", "required": ["from"],
                "properties": {"from": {"type": "string"}, "to": {"type": ["string", "null"]}},
            }},
        ]}
    else:
        s = {}
    lo, hi = ("minI", "maxI") if ptype == "INT" else ("minD", "maxD")
    if ptype in ("INT", "DOUBLE"):
        if _is_number(p.get(lo)):
            s["minimum"] = p[lo]
        if _is_number(p.get(hi)):
            s["maximum"] = p[hi]
    if not _flag(p.get("mandatory")):
        # DSS stores an unset optional param as null.
        if "type" in s:
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


def params_schema(params: list[dict], component: str = "") -> dict:
    """Compile DSS params into a JSON Schema (Draft 2020-12) for a config object."""
    props: dict[str, dict] = {}
    required: list[str] = []
    for p in params:
        if not isinstance(p, dict) or p.get("type") == "SEPARATOR" or not p.get("name"):
            continue
        props[p["name"]] = _param_schema(p)
        # A param with a visibilityCondition may be hidden, so the schema cannot require it.
        if (_flag(p.get("mandatory")) and p.get("defaultValue") is None
                and not p.get("visibilityCondition")):
            required.append(p["name"])
    schema: dict = {"$schema": _SCHEMA_URI, "type": "object"}
    if component:
        schema["title"] = f"config of {component}"
    schema["properties"] = props
    if required:
        schema["required"] = required
    schema["additionalProperties"] = True
    return schema


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _choices_text(p: dict) -> str:
    parts = []
    for c in p.get("selectChoices") or []:
        if isinstance(c, dict):
            label = c.get("label")
            text = _show(c.get("value"))
            parts.append(f"{text} ({label})" if label and label != c.get("value") else text)
    return ", ".join(parts) or "(no choices defined)"


def _match_choice(p: dict, v: Any) -> tuple[bool, Any]:
    values = [c.get("value") for c in p.get("selectChoices") or [] if isinstance(c, dict)]
    for c in values:
        if type(c) is type(v) and c == v:
            return True, c
    # A value typed on a command line arrives as a string: match it by its text.
    by_text = [c for c in values if str(c) == str(v)]
    if len(by_text) == 1:
        return True, by_text[0]
    return False, v


def _range_problem(p: dict, v: float, lo_key: str, hi_key: str) -> str | None:
    lo, hi = p.get(lo_key), p.get(hi_key)
    lo = lo if _is_number(lo) else None
    hi = hi if _is_number(hi) else None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if lo is not None and hi is not None:
            allowed = f"between {lo} and {hi}"
        elif lo is not None:
            allowed = f"at least {lo}"
        else:
            allowed = f"at most {hi}"
        return f"must be {allowed}, got {_show(v)}"
    return None


def _kv_value(v: Any) -> tuple[bool, Any]:
    if v is None or isinstance(v, str):
        return True, v
    if _is_number(v):
        return True, str(v)
    return False, v


def _coerce(p: dict, v: Any) -> tuple[Any, str | None]:
    """Coerce one param value to its type; return (value, problem or None)."""
    ptype = p.get("type")
    if ptype in _STRING_TYPES:
        return (v, None) if isinstance(v, str) else (v, f"must be a string, got {_json_type(v)} {_show(v)}")
    if ptype in _LIST_TYPES:
        if isinstance(v, str):
            return [v], None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v, None
        return v, f"must be a list of strings, got {_show(v)}"
    if ptype == "INT":
        out: Any = None
        if _is_number(v) and (isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())):
            out = int(v)
        elif isinstance(v, str):
            try:
                out = int(v.strip())
            except ValueError:
                try:
                    f = float(v)
                    out = int(f) if math.isfinite(f) and f.is_integer() else None
                except ValueError:
                    out = None
        if out is None:
            return v, f"must be an integer, got {_show(v)}"
        problem = _range_problem(p, out, "minI", "maxI")
        return out, problem
    if ptype == "DOUBLE":
        out = None
        if _is_number(v):
            out = float(v)
        elif isinstance(v, str):
            try:
                out = float(v.strip())
            except ValueError:
                out = None
        if out is None:
            return v, f"must be a number, got {_show(v)}"
        return out, _range_problem(p, out, "minD", "maxD")
    if ptype == "BOOLEAN":
        b = _as_bool(v)
        return (b, None) if isinstance(b, bool) else (v, f"must be true or false, got {_show(v)}")
    if ptype == "SELECT":
        ok, c = _match_choice(p, v)
        if ok:
            return c, None
        return v, f"got {_show(v)}, which is not one of the allowed values: {_choices_text(p)}"
    if ptype == "MULTISELECT":
        items = v if isinstance(v, list) else [v]
        matched, bad = [], []
        for item in items:
            ok, c = _match_choice(p, item)
            (matched if ok else bad).append(c)
        if bad:
            return v, (f"got {', '.join(_show(b) for b in bad)}, which "
                       f"{'is' if len(bad) == 1 else 'are'} not among the allowed values: {_choices_text(p)}")
        return matched, None
    if ptype in ("KEY_VALUE_LIST", "MAP"):
        return _coerce_mapping(ptype, v)
    return v, None


def _coerce_mapping(ptype: str, v: Any) -> tuple[Any, str | None]:
    pairs: list[tuple[Any, Any]]
    if isinstance(v, dict):
        pairs = list(v.items())
    elif ptype == "KEY_VALUE_LIST" and isinstance(v, list) and all(
        isinstance(x, dict) and "from" in x for x in v
    ):
        pairs = [(x["from"], x.get("to")) for x in v]
    else:
        allowed = ("an object {key: value} or a list [{\"from\": key, \"to\": value}]"
                   if ptype == "KEY_VALUE_LIST" else "an object {key: value}")
        return v, f"must be {allowed}, got {_show(v)}"
    out: dict[str, Any] = {}
    for key, value in pairs:
        ok, value = _kv_value(value)
        if not ok or not isinstance(key, str):
            return v, f"must map strings to strings, got {_show({str(key): value})}"
        out[key] = value
    return out, None


def _empty(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, list | dict) and not v)


def _param_label(component: str, p: dict) -> str:
    label = p.get("label")
    text = f"{component}: param {p.get('name')!r}"
    return text + (f" ({label})" if label and label != p.get("name") else "")


def validate_config(component: str, params: list[dict], config: dict | None) -> dict:
    """Return a new config with defaults applied and values coerced; ConfigError lists all problems."""
    who = component or "config"
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{who}: the config must be an object of param values, got {_show(config)}")
    out = copy.deepcopy(config)
    fields = [p for p in params if isinstance(p, dict) and p.get("type") != "SEPARATOR"
              and isinstance(p.get("name"), str)]
    for p in fields:
        if out.get(p["name"]) is None and p.get("defaultValue") is not None:
            out[p["name"]] = copy.deepcopy(p["defaultValue"])
    problems: list[str] = []
    for p in fields:
        name = p["name"]
        if out.get(name) is None:
            continue
        value, problem = _coerce(p, out[name])
        if problem:
            problems.append(f"{_param_label(who, p)} {problem}")
        else:
            out[name] = value
    for p in fields:
        if _flag(p.get("mandatory")) and _empty(out.get(p["name"])) and _visible(p, out):
            hint = ""
            if p.get("type") in ("SELECT", "MULTISELECT"):
                hint = f"; allowed values: {_choices_text(p)}"
            elif p.get("type") in PARAM_TYPES:
                hint = f" (type {p['type']})"
            problems.append(f"{_param_label(who, p)} is mandatory but was not given{hint}")
    if problems:
        raise ConfigError("\n".join(problems))
    return out


# ---------------------------------------------------------------------------------------------
# visibilityCondition: a tiny safe evaluator for the common DSS forms


class _Unsupported(Exception):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<op>===|!==|==|!=|&&|\|\||!|\(|\))"
    r"|(?P<ref>model(?:\.[A-Za-z_$][\w$]*)+)"
    r"|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<kw>true|false|null|undefined)\b)"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _Unsupported(text[pos:])
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _truthy(v: Any) -> bool:
    # JavaScript truthiness: an empty list or object is true.
    if v is None or v is False or v == "" or (_is_number(v) and (v == 0 or v != v)):
        return False
    return True


class _Eval:
    def __init__(self, tokens: list[tuple[str, str]], model: dict):
        self.toks, self.i, self.model = tokens, 0, model

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) and self.toks[self.i][0] == "op" else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise _Unsupported("unexpected end")
        self.i += 1
        return self.toks[self.i - 1]

    def expr(self) -> Any:
        left = self.conj()
        while self.peek() == "||":
            self.take()
            right = self.conj()
            left = left if _truthy(left) else right
        return left

    def conj(self) -> Any:
        left = self.unary()
        while self.peek() == "&&":
            self.take()
            right = self.unary()
            left = right if _truthy(left) else left
        return left

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not _truthy(self.unary())
        return self.compare()

    def compare(self) -> Any:
        left = self.atom()
        op = self.peek()
        if op in ("==", "===", "!=", "!=="):
            self.take()
            right = self.atom()
            return (left == right) if op in ("==", "===") else (left != right)
        return left

    def atom(self) -> Any:
        kind, text = self.take()
        if kind == "op" and text == "(":
            value = self.expr()
            if self.take() != ("op", ")"):
                raise _Unsupported("missing )")
            return value
        if kind == "ref":
            value: Any = self.model
            for part in text.split(".")[1:]:
                value = value.get(part) if isinstance(value, dict) else None
            return value
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "kw":
            return {"true": True, "false": False}.get(text)
        raise _Unsupported(text)


def _visible(p: dict, model: dict) -> bool:
    cond = p.get("visibilityCondition")
    if cond is None or cond == "":
        return True
    if isinstance(cond, bool):
        return cond
    if not isinstance(cond, str):
        return True
    try:
        ev = _Eval(_tokens(cond), model)
        value = ev.expr()
        if ev.i != len(ev.toks):
            raise _Unsupported("trailing tokens")
    except _Unsupported:
        return True  # an expression we cannot evaluate: assume the param is shown
    return _truthy(value)
