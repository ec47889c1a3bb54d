"""The one check of what a request's JSON says: parsing (bad JSON, integers of over 4,300
digits, deep nesting) and bounds (integers beyond 64 bits, nesting beyond MAX_DEPTH, text
that is not Unicode), each refused with a 400 saying where, before any handler runs."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from ..errors import LabelloopError, json_pointer

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # what the database can store
MAX_DEPTH = 32  # nesting of arrays / objects in a payload


def parse_json_body(raw: bytes, bounds: bool = True) -> Any:
    """A request's JSON body; `{}` when empty (`bounds`: `check_payload_bounds` too)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelloopError(f"malformed JSON body: {exc}") from exc
    except ValueError:  # Python's limit on the digits of an integer (4300)
        raise LabelloopError(f"JSON body: an integer has more than "
                             f"{sys.get_int_max_str_digits()} digits: use integers from "
                             f"{INT64_MIN} to {INT64_MAX}") from None
    except RecursionError:
        raise LabelloopError(f"JSON body nested more than {MAX_DEPTH} levels deep: "
                             "flatten it") from None
    if bounds:
        check_payload_bounds(value, "JSON body")
    return value


def check_payload_bounds(value: Any, where: str = "payload") -> None:
    """Refuse integers beyond 64 bits, nesting deeper than MAX_DEPTH and text that is not
    Unicode (a lone UTF-16 surrogate, which JSON's `\\ud800` can spell): iteratively."""
    stack: list[tuple[Any, int, tuple]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                text = str(item) if abs(item) < 10 ** 30 else f"{str(item)[:30]}..."
                raise LabelloopError(f"{where}: integer {text} is out of range: "
                                     f"use integers from {INT64_MIN} to {INT64_MAX}")
        elif isinstance(item, str):
            _check_text(item, where, path)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise LabelloopError(f"{where} is nested more than {MAX_DEPTH} levels deep: "
                                     "flatten it")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, where, path)
                    stack.append((child, depth + 1, (*path, key)))
            else:
                stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(item))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: str, where: str, path: tuple) -> None:
    found = _SURROGATE.search(text)
    if found:
        raise LabelloopError(
            f"{where} at {json_pointer(path) or '/'}: the text holds a lone UTF-16 surrogate "
            f"(\\u{ord(found.group()):04x}), which is not a character: send text as UTF-8, and "
            "a character beyond U+FFFF as its two surrogates together (or as itself)")
