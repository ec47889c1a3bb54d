"""The `spans` kind: typed character spans of a text (named entities).

Answer: `{"id", "spans": [{"start", "end", "label"}]}`, character offsets (Python string
indices: code points) into the item's text, end exclusive; `[]` is an answer ("no entities
here"), not a skip. Stored in `<label_col>` as the JSON text of the list sorted by
(start, end, label). A webapp's `entity_types` are the labels a span may have;
`overlapping_spans` (default off) lets spans overlap. A span repeated exactly is refused.

Suggestion: the queries dataset's `prediction` holds the model's spans as JSON
(`[{"start", "end", "label", "score"}]`); `batch` serves them as
`{"spans": [...], "model_version"}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from labelloop.errors import ConfigError

from . import AnnotationKind, Item, KindError

MAX_SPANS = 10_000  # parts of one answer (the route schema says so too)


def _shown(span: Any) -> str:
    if isinstance(span, Mapping):
        return (f"start {span.get('start')!r}, end {span.get('end')!r}, "
                f"label {span.get('label')!r}")
    return repr(span)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def dumps(spans: Sequence[Mapping[str, Any]]) -> str:
    """Spans as stored: JSON of `{"start", "end", "label"}` sorted by (start, end, label)."""
    ordered = sorted((int(s["start"]), int(s["end"]), str(s["label"])) for s in spans)
    return json.dumps([{"start": a, "end": b, "label": t} for a, b, t in ordered],
                      ensure_ascii=False)


class SpansKind(AnnotationKind):
    """Typed character spans of a text (named entities); `[]` = no entities."""

    name = "spans"
    field = "spans"
    types_param = "entity_types"
    min_types = 1
    data_types = ("text",)
    needs_item = True

    @classmethod
    def settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        overlapping = config.get("overlapping_spans", False)
        if overlapping in (None, ""):
            overlapping = False
        if not isinstance(overlapping, bool):
            raise ConfigError(f"overlapping_spans must be true or false, got {overlapping!r}")
        if config.get("multi_label"):
            raise ConfigError("multi_label does not apply to spans (a text takes any number "
                              "of spans): clear it")
        return {"overlapping_spans": overlapping}

    @property
    def overlapping(self) -> bool:
        return bool(self.cfg.extra.get("overlapping_spans", False))

    def answer_schema(self) -> dict:
        return {
            "type": "array", "maxItems": MAX_SPANS,
            "description": "the item's entities: character offsets into its text, end "
                           "exclusive; [] when it has none",
            "items": {"type": "object", "required": ["start", "end", "label"],
                      "additionalProperties": False, "properties": {
                          # Offsets and types are the kind's check: its 400 names the
                          # whole span (a schema error would name one field of it).
                          "start": {"type": "integer"},
                          "end": {"type": "integer"},
                          "label": {"type": "string", "description": "one of "
                                    + ", ".join(self.types)}}},
        }

    def check(self, answer: Any, item: Item | None) -> str:
        # The route schema has checked the shape of an HTTP body; this checks what it cannot
        # (offsets against the text, overlaps), plus the shape for in-process callers.
        if not isinstance(answer, list):
            raise KindError(f"spans must be a list of {{start, end, label}} objects ([] for "
                            f"no entities), got {answer!r}")
        text = self._text(item)
        types = self.types
        seen: list[tuple[int, int, str, int]] = []
        for i, span in enumerate(answer):
            if not isinstance(span, Mapping) or not _int(span.get("start")) \
                    or not _int(span.get("end")) or not isinstance(span.get("label"), str):
                raise KindError(f"span {i} ({_shown(span)}) must be an object with integer "
                                "start and end and a string label")
            start, end, label = span["start"], span["end"], span["label"]
            if label not in types:
                raise KindError(f"span {i} ({_shown(span)}): unknown entity type {label!r}: "
                                f"use one of {', '.join(map(repr, types))}")
            if not 0 <= start < end <= len(text):
                raise KindError(f"span {i} ({_shown(span)}): offsets must satisfy 0 <= start < "
                                f"end <= {len(text)} (the length of the item's text, end "
                                "exclusive)")
            seen.append((start, end, label, i))
        seen.sort()
        for (a0, a1, al, ai), (b0, b1, bl, bi) in zip(seen, seen[1:], strict=False):
            if (a0, a1, al) == (b0, b1, bl):
                raise KindError(f"span {bi} ({_shown(answer[bi])}) repeats span {ai}: "
                                "send it once")
        if not self.overlapping:
            reach = None  # the span reaching furthest so far
            for s in seen:
                if reach is not None and s[0] < reach[1]:
                    first, second = sorted((reach, s), key=lambda x: x[3])
                    raise KindError(
                        f"span {second[3]} ({_shown(answer[second[3]])}) overlaps span "
                        f"{first[3]} ({_shown(answer[first[3]])}): this webapp does not allow "
                        "overlapping spans; shorten or remove one")
                if reach is None or s[1] > reach[1]:
                    reach = s
        return dumps(answer)

    def _text(self, item: Item | None) -> str:
        if item is None:
            return ""
        text = item.data.get("text") if isinstance(item.data, Mapping) else None
        return "" if text is None else str(text)

    def value(self, stored: str | None) -> Any:
        return None if stored is None else json.loads(stored)

    def count_keys(self, stored: str | None) -> list[str]:
        return [] if stored is None else [s["label"] for s in json.loads(stored)]

    def suggestion(self, prediction: str | None, confidence: float | None,
                   model_version: Any) -> dict | None:
        if prediction is None:
            return None
        try:
            spans = json.loads(prediction)
        except (TypeError, ValueError):
            return None
        if not isinstance(spans, list):
            return None
        out = []
        for s in spans:
            if isinstance(s, Mapping) and _int(s.get("start")) and _int(s.get("end")) \
                    and s.get("label") in self.types and 0 <= s["start"] < s["end"]:
                score = s.get("score")
                out.append({"start": s["start"], "end": s["end"], "label": s["label"],
                            "score": float(score) if isinstance(score, int | float)
                            and not isinstance(score, bool) else None})
        out.sort(key=lambda s: (s["start"], s["end"], s["label"]))
        return {"spans": out, "model_version": self.version(model_version)}

    def config(self) -> dict:
        return {"overlapping_spans": self.overlapping}
