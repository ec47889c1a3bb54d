"""Tokens with character offsets, span lists as stored, and spans <-> BIO tags.

A span is ``{"start", "end", "label"}``: character offsets into the item's text, end
exclusive. The labels dataset stores an answer's spans as JSON text of the list sorted by
``(start, end, label)`` (see DESIGN.md, annotation kinds).
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any

from labelloop.errors import LabelloopError

# A word (letters, digits, underscore) or any other single non-space character.
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
TOKENIZER = "regex-word-or-symbol"
OUTSIDE = "O"


@dataclass(frozen=True)
class Tokens:
    """A text's tokens: their strings and character offsets (end exclusive)."""

    words: list[str]
    starts: list[int]
    ends: list[int]

    def __len__(self) -> int:
        return len(self.words)


def tokenize(text: str) -> Tokens:
    """Split ``text`` into word / symbol tokens, keeping their character offsets."""
    matches = list(TOKEN_PATTERN.finditer(text or ""))
    return Tokens([m.group() for m in matches], [m.start() for m in matches],
                  [m.end() for m in matches])


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
        first = bisect.bisect_right(tokens.ends, s["start"])
        last = bisect.bisect_left(tokens.starts, s["end"])
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
    values = None if scores is None else [float(v) for v in scores]
    first, label = -1, ""  # the open span: its first token and type

    def close(last: int) -> None:
        span = {"start": tokens.starts[first], "end": tokens.ends[last], "label": label}
        if values is not None:
            span["score"] = round(sum(values[first:last + 1]) / (last + 1 - first), 4)
        spans.append(span)

    for i, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if first >= 0 and (tag == OUTSIDE or not kind or prefix != "I" or kind != label):
            close(i - 1)
            first = -1
        if first < 0 and tag != OUTSIDE and kind:
            first, label = i, kind
    if first >= 0:
        close(len(tags) - 1)
    return spans
