"""Tokens with character offsets, span lists as stored, and spans <-> BIO tags.

A span is ``{"start", "end", "label"}``: character offsets into the item's text, end
exclusive. The labels dataset stores an answer's spans as JSON text of the list sorted by
``(start, end, label)`` (see DESIGN.md, annotation kinds).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelloop.errors import LabelloopError

# A word (letters, digits, underscore) or any other single non-space character.
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
TOKENIZER = "regex-word-or-symbol"
OUTSIDE = "O"


@dataclass(frozen=True)
class Tokens:
    """A text's tokens: their strings and character offsets (end exclusive)."""

    words: list[str]
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.words)


def tokenize(text: str) -> Tokens:
    """Split ``text`` into word / symbol tokens, keeping their character offsets."""
    words, starts, ends = [], [], []
    for m in TOKEN_PATTERN.finditer(text or ""):
        words.append(m.group())
        starts.append(m.start())
        ends.append(m.end())
    return Tokens(words, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))


def sort_spans(spans: list[dict]) -> list[dict]:
    """Spans as stored: ``{"start", "end", "label"}`` (plus ``score`` when given), sorted."""
    out = []
    for s in spans:
        item = {"start": int(s["start"]), "end": int(s["end"]), "label": str(s["label"])}
        if s.get("score") is not None:
            item["score"] = float(s["score"])
        out.append(item)
    return sorted(out, key=lambda s: (s["start"], s["end"], s["label"]))


def dumps_spans(spans: list[dict]) -> str:
    """The JSON text a label column holds for a list of spans."""
    return json.dumps(sort_spans(spans), separators=(",", ":"))


def parse_spans(value: Any, text: str | None = None, where: str = "") -> list[dict]:
    """A label cell (JSON text or a list) as a list of spans; a clear error when it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise LabelloopError(f"{where}: {value[:60]!r} is not a JSON list of spans "
                                 '([{"start", "end", "label"}])') from None
    if not isinstance(value, list):
        raise LabelloopError(f"{where}: expected a list of spans, got {type(value).__name__}")
    spans = []
    for k, s in enumerate(value):
        if not isinstance(s, dict) or not {"start", "end", "label"} <= set(s):
            raise LabelloopError(f"{where}: span {k + 1} needs start, end and label, got {s!r}")
        start, end = s["start"], s["end"]
        if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) \
                or not 0 <= start < end or (text is not None and end > len(text)):
            size = "" if text is None else f" (the text has {len(text)} characters)"
            raise LabelloopError(f"{where}: span {k + 1} has bad offsets start={start!r}, "
                                 f"end={end!r}{size}")
        spans.append(s)
    return sort_spans(spans)


def tag_names(types: list[str]) -> list[str]:
    """The BIO tag set of entity ``types``: O, then B- and I- of each type."""
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def spans_to_tags(tokens: Tokens, spans: list[dict]) -> tuple[list[str], int]:
    """BIO tags of ``tokens`` for ``spans``; and how many spans could not be placed.

    A span covers the tokens it overlaps (so it snaps out to token boundaries). Spans that
    overlap an earlier one (allowed in some webapps) cannot be written in BIO: they are
    left out and counted.
    """
    tags = [OUTSIDE] * len(tokens)
    dropped = 0
    for s in sort_spans(spans):
        first = int(np.searchsorted(tokens.ends, s["start"], side="right"))
        last = int(np.searchsorted(tokens.starts, s["end"], side="left"))
        if first >= last or any(t != OUTSIDE for t in tags[first:last]):
            dropped += 1
            continue
        tags[first] = f"B-{s['label']}"
        for i in range(first + 1, last):
            tags[i] = f"I-{s['label']}"
    return tags, dropped


def tags_to_spans(tokens: Tokens, tags: list[str], scores: Any = None) -> list[dict]:
    """Spans of BIO ``tags`` (an I- that does not continue its type starts a span, as in
    seqeval's default mode); with ``scores`` (one per token) each span gets their mean."""
    spans: list[dict] = []
    open_: tuple[int, int, str] | None = None  # first token, last token, type

    def close() -> None:
        if open_ is not None:
            first, last, label = open_
            span = {"start": int(tokens.starts[first]), "end": int(tokens.ends[last]),
                    "label": label}
            if scores is not None:
                span["score"] = round(float(np.mean(scores[first:last + 1])), 4)
            spans.append(span)

    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if tag == OUTSIDE or not label:
            close()
            open_ = None
        elif prefix == "I" and open_ is not None and open_[2] == label:
            open_ = (open_[0], i, label)
        else:
            close()
            open_ = (i, i, label)
    close()
    return spans
