"""An annotation kind for the labeling plugin's engine: the keywords of a text.

Answer: `{"id", "keywords": ["word", ...]}`; every keyword must be a word of the item's text
(what a JSON Schema cannot check). Stored in the labels dataset as the JSON list of the
words, lower case, sorted. A queries dataset's `prediction` (comma-separated words) becomes
the suggestion `{"keywords": [...], "model_version"}`.
"""

from __future__ import annotations

import json
from typing import Any

from labeling.kinds import AnnotationKind, Item, KindError


class KeywordsKind(AnnotationKind):
    """Words of the text that sum it up."""

    name = "keywords"
    field = "keywords"  # the POST labels body's field
    types_param = None  # no types to choose from
    min_types = 0
    data_types = ("text",)
    needs_item = True  # check() reads the item's text

    def answer_schema(self) -> dict:
        return {"type": "array", "maxItems": 20,
                "items": {"type": "string", "minLength": 1, "maxLength": 100}}

    def check(self, answer: Any, item: Item | None) -> str:
        if not isinstance(answer, list) or not all(isinstance(w, str) for w in answer):
            raise KindError(f"keywords must be a list of words, got {answer!r}")
        words = set(str(item.data.get("text") or "").lower().split()) if item else set()
        for i, word in enumerate(answer):
            if word.lower() not in words:
                raise KindError(f"keyword {i} ({word!r}) is not a word of the text: "
                                "pick words it has")
        return json.dumps(sorted({w.lower() for w in answer}))

    def value(self, stored: str | None) -> Any:
        return None if stored is None else json.loads(stored)

    def count_keys(self, stored: str | None) -> list[str]:
        return []

    def suggestion(self, prediction: str | None, confidence: float | None,
                   model_version: Any) -> dict | None:
        if not prediction:
            return None
        return {"keywords": [w for w in prediction.split(",") if w],
                "model_version": self.version(model_version)}
