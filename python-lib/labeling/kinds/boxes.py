"""The `boxes` kind: typed bounding boxes drawn on an image (object detection).

Answer: `{"id", "boxes": [{"x", "y", "w", "h", "label"}]}` in pixels of the original image,
origin top-left; w > 0 and h > 0; every box inside the image (0 <= x, x + w <= width, the
same for y and the height, the size read with Pillow from the image file's header); `[]` is
an answer ("nothing to box"), not a skip. Stored in `<label_col>` as the JSON text of the list
sorted by (y, x, h, w, label); numbers are kept as given (integers stay integers, other
numbers are rounded to 2 decimals, and the bounds are checked on what is stored). A webapp's
`object_classes` are the labels a box may have; the page gets each class with a colour and a
key (`config`), and each `batch` item's image size (`data.width`, `data.height`).

Suggestion: the queries dataset's `prediction` holds the detector's boxes as JSON
(`[{"x", "y", "w", "h", "label", "score"}]`); `batch` serves them as
`{"boxes": [...], "model_version"}`. An image's queue score is its least sure box's
uncertainty (the Query Sampler writes the image's score itself).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from labelloop.errors import ConfigError, LabelloopError

from . import AnnotationKind, Item, KindError

MAX_BOXES = 10_000  # boxes of one answer (the route schema says so too)
FIELDS = ("x", "y", "w", "h")
# The page's colours for the object classes, in order (distinct on a photo and on white).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#9a6324", "#008080", "#800000", "#808000", "#000075")
KEYS = "1234567890"  # the key that picks each of the first ten classes


@lru_cache(maxsize=65_536)
def _size(path: str, mtime_ns: int, size: int) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # the header only: no pixel is decoded
            return int(img.width), int(img.height)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise LabelloopError(f"cannot read the size of image {Path(path).name!r}: {exc}") \
            from None


def image_size(path: str | Path) -> tuple[int, int]:
    """An image's (width, height) from its file header (Pillow), cached per file version;
    LabelloopError when the file is not an image Pillow reads."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise LabelloopError(f"cannot read image {Path(path).name!r}: "
                             f"{exc.strerror or exc}") from None
    return _size(str(path), st.st_mtime_ns, st.st_size)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def stored_number(v: int | float) -> int | float:
    """A coordinate as stored: an int as it is, a float rounded to 2 decimals (no -0.0)."""
    return v if isinstance(v, int) else round(float(v), 2) + 0.0


def _shown(box: Any) -> str:
    if isinstance(box, Mapping):
        return ", ".join(f"{k} {box.get(k)!r}" for k in (*FIELDS, "label"))
    return repr(box)


def sort_boxes(boxes: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Boxes in the stored order, (y, x, h, w, label); other keys (score) kept."""
    return sorted((dict(b) for b in boxes),
                  key=lambda b: (b["y"], b["x"], b["h"], b["w"], str(b["label"])))


def dumps(boxes: Sequence[Mapping[str, Any]]) -> str:
    """Boxes as stored: JSON of `{"x", "y", "w", "h", "label"}`, sorted, numbers as stored."""
    out = [{**{k: stored_number(b[k]) for k in FIELDS}, "label": str(b["label"])}
           for b in boxes]
    return json.dumps(sort_boxes(out), ensure_ascii=False)


def box_problem(box: Any, width: int | float | None, height: int | float | None,
                types: Any = None) -> str | None:
    """What is wrong with one box (None: nothing): its shape, its class (when `types` is
    given), its area, its place in a `width` x `height` image (when known)."""
    if not isinstance(box, Mapping) or not all(_number(box.get(k)) for k in FIELDS) \
            or not isinstance(box.get("label"), str):
        return "a box is an object with numbers x, y, w, h (pixels) and a string label"
    if types is not None and box["label"] not in types:
        return f"unknown class {box['label']!r}: use one of {', '.join(map(repr, types))}"
    x, y, w, h = (stored_number(box[k]) for k in FIELDS)
    if w <= 0 or h <= 0:
        return f"it has no area ({'w' if w <= 0 else 'h'} = {w if w <= 0 else h}): w and h " \
               "must be > 0"
    for start, extent, size, what in ((x, w, width, "wide"), (y, h, height, "high")):
        axis, length = ("x", "w") if what == "wide" else ("y", "h")
        if start < 0:
            return f"{axis} = {start} is outside the image ({axis} must be >= 0)"
        if size is not None and start + extent > size:
            end = stored_number(start + extent)
            return f"{axis}+{length} = {end} is outside the image ({size} px {what})"
    return None


def parse_boxes(value: Any, where: str, width: Any = None, height: Any = None,
                types: Any = None, keep_score: bool = False) -> list[dict]:
    """Boxes from a stored value or a list (formats, ML backends), checked; LabelloopError
    naming `where` and the box on a bad one. `keep_score` keeps each box's `score`."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise LabelloopError(f"{where}: {value[:80]!r} is not a JSON list of boxes") \
                from None
    if value is None:
        value = []
    if not isinstance(value, list):
        raise LabelloopError(f"{where}: expected a list of boxes, got {value!r}")
    out = []
    for i, box in enumerate(value):
        problem = box_problem(box, width, height, types)
        if problem:
            raise LabelloopError(f"{where}: box {i} ({_shown(box)}): {problem}")
        b = {**{k: stored_number(box[k]) for k in FIELDS}, "label": box["label"]}
        if keep_score and _number(box.get("score")):
            b["score"] = float(box["score"])
        out.append(b)
    return sort_boxes(out)


class BoxesKind(AnnotationKind):
    """Typed bounding boxes on an image (object detection); `[]` = nothing to box."""

    name = "boxes"
    field = "boxes"
    types_param = "object_classes"
    min_types = 1
    data_types = ("image",)
    needs_item = True

    @classmethod
    def settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        if config.get("multi_label"):
            raise ConfigError("multi_label does not apply to boxes (an image takes any number "
                              "of boxes): clear it")
        return {}

    def answer_schema(self) -> dict:
        number = {"type": "number"}
        return {
            "type": "array", "maxItems": MAX_BOXES,
            "description": "the image's boxes in pixels of the original image, origin "
                           "top-left; [] when there is nothing to box",
            "items": {"type": "object", "required": ["x", "y", "w", "h", "label"],
                      "additionalProperties": False, "properties": {
                          # Bounds and classes are the kind's check: its 400 names the whole
                          # box (a schema error would name one field of it).
                          **{k: number for k in FIELDS},
                          "label": {"type": "string", "description": "one of "
                                    + ", ".join(self.types)}}},
        }

    def check(self, answer: Any, item: Item | None) -> str:
        # The route schema has checked the shape of an HTTP body; this checks what it cannot
        # (the image's bounds, the classes), plus the shape for in-process callers.
        if not isinstance(answer, list):
            raise KindError(f"boxes must be a list of {{x, y, w, h, label}} objects ([] for "
                            f"nothing to box), got {answer!r}")
        width = height = None
        if answer:
            if item is None or item.path is None:
                raise KindError("boxes need the item's image to check them against")
            try:
                width, height = image_size(item.path)
            except LabelloopError as exc:
                raise KindError(str(exc)) from None
        for i, box in enumerate(answer):
            problem = box_problem(box, width, height, self.types)
            if problem:
                raise KindError(f"boxes/{i} ({_shown(box)}): {problem}")
        return dumps(answer)

    def value(self, stored: str | None) -> Any:
        return None if stored is None else json.loads(stored)

    def count_keys(self, stored: str | None) -> list[str]:
        return [] if stored is None else [b["label"] for b in json.loads(stored)]

    def suggestion(self, prediction: str | None, confidence: float | None,
                   model_version: Any) -> dict | None:
        if prediction is None:
            return None
        try:
            boxes = json.loads(prediction)
        except (TypeError, ValueError):
            return None
        if not isinstance(boxes, list):
            return None
        out = []
        for b in boxes:
            if box_problem(b, None, None, self.types) is None:
                score = b.get("score")
                out.append({**{k: stored_number(b[k]) for k in FIELDS}, "label": b["label"],
                            "score": float(score) if _number(score) else None})
        return {"boxes": sort_boxes(out), "model_version": self.version(model_version)}

    def render(self, data: dict, file: Callable[[], Path] | None) -> dict:
        if file is None:
            return data
        try:
            width, height = image_size(file())
        except (LabelloopError, OSError):
            return data  # the page reads the size from the image it loads
        return {**data, "width": width, "height": height}

    def config(self) -> dict:
        return {"object_classes": [
            {"name": name, "description": description, "colour": PALETTE[i % len(PALETTE)],
             "key": KEYS[i] if i < len(KEYS) else None}
            for i, (name, description) in enumerate(self.types.items())]}
