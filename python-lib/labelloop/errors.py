"""Exceptions the CLI and the API turn into one clear line / a JSON error, and the one
formatter that turns JSON Schema errors into (JSON pointer, plain-sentence reason) pairs."""

from __future__ import annotations

import difflib
import errno
import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError


class LabelloopError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""

    status = 400


class DescriptorError(LabelloopError):
    """A plugin descriptor or project.json is malformed or violates its schema."""

    def __init__(self, path: str, reason: str, pointer: str | None = None, line: int | None = None):
        self.path = str(path)
        self.pointer = pointer
        self.line = line
        self.reason = reason
        where = self.path
        if line is not None:
            where += f", line {line}"
        if pointer is not None:
            where += f", at {pointer or '/'}"
        super().__init__(f"{where}: {reason}")


class ConfigError(LabelloopError):
    """A component's config (params) does not validate."""


class NotFoundError(LabelloopError):
    """An unknown dataset, folder, model, recipe, component, webapp or item."""

    status = 404


class ConflictError(LabelloopError):
    """The request conflicts with the current state (exists already, locked, ...)."""

    status = 409


class UntrustedModelError(LabelloopError):
    """A saved model file holds types that are not trusted, or is not a skops file."""


class DiskFullError(LabelloopError):
    """A write found the disk (or the database) full: its transaction was rolled back."""

    status = 507


_SQLITE_FULL = 13  # sqlite3's extended error code of "database or disk is full"
_PG_DISK_FULL = "53100"  # PostgreSQL's SQLSTATE disk_full
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> DiskFullError | None:
    """A DiskFullError when `exc`, or the error it wraps (a driver's, an OSError), says that
    the disk is full; else None."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or any(err is s for s in seen) or len(seen) > 20:
            continue
        seen.append(err)
        code = getattr(err, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF == _SQLITE_FULL) or \
                getattr(err, "sqlstate", None) == _PG_DISK_FULL or \
                (isinstance(err, OSError) and err.errno in _NO_SPACE) or \
                "database or disk is full" in str(err):
            return DiskFullError("the disk is full: nothing was written. Free some space where "
                                 "the project's database lives, then try again")
        todo += [getattr(err, "orig", None), err.__cause__, err.__context__]
    return None


# ---------------------------------------------------------------------------------------------
# The one formatter for JSON Schema errors: a path (JSON pointer) and a plain-sentence reason.
# Keys starting with "x-" in a schema word the reasons (see labelloop/schemas/common.json):
#   x-what (enum: "allowed <what>"), x-choices (enum: the choices as text), x-pattern-help,
#   x-expected / x-must (type, anyOf, oneOf), x-missing (required and empty values), x-forms,
#   x-range (minimum / maximum: the allowed range in words, e.g. with the reason for a cap).

_NAME_HELP = {
    "^[A-Za-z0-9][A-Za-z0-9_-]*$":
        "use letters, digits, '_' and '-', starting with a letter or digit",
}
_TYPE_WORDS = {
    "string": "a string", "object": "an object", "array": "a list", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}
_EMPTY_KEYWORDS = ("minLength", "minItems", "minProperties")


def json_pointer(path: Iterable[Any]) -> str:
    """The JSON pointer (RFC 6901) of a path of keys and indexes: ('a', 0) -> '/a/0'."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def shown(value: Any, limit: int = 60) -> str:
    """A value as short JSON text for an error message."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    """The JSON type of a value in words ('a string', 'an integer', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, word in ((int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return word
    return type(value).__name__


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def schema_problems(errors: Iterable[ValidationError]) -> list[tuple[tuple, str]]:
    """Every jsonschema error as (path, reason) pairs: what was wrong and what is allowed."""
    out: list[tuple[tuple, str]] = []
    for error in errors:
        out.extend(_explain(error))
    return list(dict.fromkeys(out))  # a reason reached twice (via two schema paths) once


def _explain(error: ValidationError) -> list[tuple[tuple, str]]:
    path = tuple(error.absolute_path)
    kw, schema, inst, value = error.validator, error.schema, error.instance, error.validator_value
    hints = schema if isinstance(schema, dict) else {}
    if kw == "required":
        missing = error.message.removesuffix(" is a required property")
        name = missing.strip("'\"")
        prop = (hints.get("properties") or {}).get(name)
        if isinstance(prop, dict) and prop.get("x-missing"):
            return [(path + (name,), prop["x-missing"])]
        return [(path, f"{missing} is required")]
    if kw in _EMPTY_KEYWORDS and value == 1:
        return [(path, hints.get("x-missing") or "must not be empty")]
    if kw == "enum":
        if hints.get("x-choices"):
            return [(path, f"got {shown(inst)}, which is not one of the allowed values: "
                           f"{hints['x-choices']}")]
        what = hints.get("x-what")
        allowed = ", ".join(str(v) if what and isinstance(v, str) else shown(v) for v in value)
        return [(path, f"{shown(inst)} is not one of the allowed {what or 'values'} ({allowed})")]
    if kw == "const":
        return [(path, f"expected {shown(value)}, got {shown(inst)}")]
    if kw in ("type", "oneOf", "anyOf") and hints.get("x-must"):
        return [(path, f"must be {hints['x-must']}, got {shown(inst)}")]
    if kw == "type":
        types = [value] if isinstance(value, str) else list(value)
        words = _or([_TYPE_WORDS.get(t, t) for t in types])
        return [(path, f"expected {words}, got {json_type(inst)} {shown(inst)}")]
    if kw in ("minimum", "maximum"):
        return [(path, f"must be {hints.get('x-range') or _range(hints)}, got {shown(inst)}")]
    if kw == "pattern":
        if hints.get("x-pattern-help"):
            return [(path, f"{shown(inst)} is not valid: {hints['x-pattern-help']}")]
        return [(path, f"{shown(inst)} does not match the pattern {value}")]
    if kw == "additionalProperties" and isinstance(inst, dict):
        return list(_extra_keys(path, hints, inst))
    if kw in ("oneOf", "anyOf"):
        return _explain_choice(error, path)
    return [(path, error.message)]


def _range(schema: dict) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


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


def _explain_choice(error: ValidationError, path: tuple) -> list[tuple[tuple, str]]:
    schema, inst = error.schema, error.instance
    forms = schema.get("x-forms")
    if forms:
        # A discriminated oneOf (scenario steps): each branch requires its own key.
        keys = [b.get("required", [None])[0] for b in schema[error.validator]]
        if not isinstance(inst, dict):
            return [(path, f"expected an object, one of {forms}; got {json_type(inst)} {shown(inst)}")]
        present = [i for i, k in enumerate(keys) if k in inst]
        if len(present) == 1:
            sub = [c for c in error.context
                   if c.relative_schema_path and c.relative_schema_path[0] == present[0]]
            if sub:
                return schema_problems(sub)
        if len(present) > 1:
            both = _or([repr(keys[i]) for i in present]).replace(" or ", " and ")
            return [(path, f"has {both}, but a step takes exactly one of them: {forms}")]
        return [(path, f"expected one of {forms}; got keys {', '.join(map(repr, inst)) or '(none)'}")]
    if schema.get("x-expected"):
        return [(path, f"expected {schema['x-expected']}, got {json_type(inst)} {shown(inst)}")]
    from jsonschema.exceptions import best_match  # jsonschema loads only when a schema failed

    best = best_match(error.context) if error.context else None
    return _explain(best) if best is not None else [(path, error.message)]
