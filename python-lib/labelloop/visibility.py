"""A param's ``visibilityCondition``: a tiny, safe evaluator for the common DSS forms.

DSS writes conditions as JavaScript over the config (``model.mode == 'a' && !model.flag``).
This understands comparisons, ``!``, ``&&``, ``||``, parentheses, ``model.x.y`` references and
literals; anything else (a call, ``.length``...) leaves the param visible. Nothing is executed.
"""

from __future__ import annotations

import re
from typing import Any


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


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def truthy(v: Any) -> bool:
    """JavaScript truthiness: an empty list or object is true."""
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
            left = left if truthy(left) else right
        return left

    def conj(self) -> Any:
        left = self.unary()
        while self.peek() == "&&":
            self.take()
            right = self.unary()
            left = right if truthy(left) else left
        return left

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not truthy(self.unary())
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


def visible(param: dict, model: dict) -> bool:
    """Whether a param is shown for this config; a condition we cannot evaluate shows it."""
    cond = param.get("visibilityCondition")
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
        return True
    return truthy(value)
