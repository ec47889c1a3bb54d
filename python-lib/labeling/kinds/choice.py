"""The `choice` kind: one category per item, or a list of categories when multi-label.

The tabular, image, sound and text labeling webapps. Stored in `<label_col>` as the category,
or (multi-label) as the JSON list of the chosen categories in the webapp's order.
"""

from __future__ import annotations

import json
from typing import Any

from . import AnnotationKind, Item, KindError


class ChoiceKind(AnnotationKind):
    """One category per item (a list of categories when multi-label)."""

    name = "choice"
    field = "label"

    def answer_schema(self) -> dict:
        one = {"type": "string", "enum": list(self.types)}
        schema = {"anyOf": [one, {"type": "array", "items": one}]} \
            if self.cfg.multi_label else one
        return {**schema, "description": "a category, or a list of categories when multi-label"}

    def check(self, answer: Any, item: Item | None) -> str:
        # The route schema has checked an HTTP body; the engine is also called in-process
        # (the Label Studio webhook, scripts), where this is the only check.
        cats = self.types
        if self.cfg.multi_label:
            if isinstance(answer, str):
                answer = [answer]
            if not isinstance(answer, list) or not all(isinstance(x, str) for x in answer):
                raise KindError(f"label must be a list of categories, got {answer!r}")
            bad = [x for x in answer if x not in cats]
            if bad:
                raise KindError(f"unknown categor{'y' if len(bad) == 1 else 'ies'} "
                                f"{', '.join(map(repr, bad))}: use {', '.join(map(repr, cats))}")
            chosen = set(answer)
            return json.dumps([c for c in cats if c in chosen])
        if isinstance(answer, list):
            raise KindError(f"this webapp takes one category per item, got a list {answer!r}: "
                            f"send one of {', '.join(map(repr, cats))}")
        if not isinstance(answer, str) or answer not in cats:
            raise KindError(f"label {answer!r} is not a category: use one of "
                            f"{', '.join(map(repr, cats))}")
        return answer

    def value(self, stored: str | None) -> Any:
        if stored is None:
            return None
        return json.loads(stored) if self.cfg.multi_label else stored

    def count_keys(self, stored: str | None) -> list[str]:
        if stored is None:
            return []
        return json.loads(stored) if self.cfg.multi_label else [stored]

    def suggestion(self, prediction: str | None, confidence: float | None,
                   model_version: Any) -> dict | None:
        if prediction is None or prediction not in self.types:
            return None
        out: dict[str, Any] = {"label": prediction, "confidence": confidence}
        if model_version is not None:
            out["model_version"] = model_version
        return out
