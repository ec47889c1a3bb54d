"""Box file formats of `dataset import|export`: COCO detection, YOLO, Pascal VOC, and the
`rectanglelabels` results of Label Studio JSON (used by ``labeling.interop.formats``).

A boxes dataset is an image-boxes webapp's labels dataset: `path` (the image's path in its
managed folder), the label column holding the image's boxes as JSON (``[{"x", "y", "w", "h",
"label"}]``, pixels of the original image, origin top-left; ``[]``: nothing to box) and its
label id. Exports read the images' sizes from `-o folder=FOLDER` (a managed folder), else the
folder of the labeling webapp that writes the dataset; an image that cannot be read is named.
With several answers for an image (labels per annotator) the newest is written.

**coco** (`labeling.interop.formats`): a labels dataset of boxes is written as COCO object
detection (`images` with `width`/`height`, `categories` in the webapp's class order,
`annotations` with `bbox` ``[x, y, w, h]`` in pixels and `area`); a COCO file whose
annotations have boxes is read back as one row per image (an image without annotations:
``[]``).

**yolo** and **voc** (a directory or a `.zip`): `labeling.boxes.archives`.

Numbers: COCO and VOC keep them as written; YOLO and Label Studio store fractions of the
image, converted back to pixels rounded to 2 decimals (an integer when within 1e-6 of one),
so a round trip keeps every box to within 0.01 pixel. A box beyond the image by half a pixel
or less is fitted to it; further out it is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from ..kinds.boxes import image_size, parse_boxes, sort_boxes


def label_column(options: dict) -> str:
    """The label column an option names (default `label`)."""
    return options.get("label_col") or "label"


def file_stem(rel: str) -> str:
    """A relative path without its extension (`sub/a.png` -> `sub/a`)."""
    return str(PurePosixPath(rel).with_suffix(""))


def pixels(v: float) -> int | float:
    """A converted coordinate: 2 decimals, an integer when within 1e-6 of one."""
    r = round(float(v))
    return int(r) if abs(float(v) - r) < 1e-6 else round(float(v), 2) + 0.0


def fit(box: dict, width: float, height: float) -> dict:
    """A box beyond the image by half a pixel or less (float error) fitted to it."""
    b = dict(box)
    for start, extent, size in (("x", "w", width), ("y", "h", height)):
        if -0.5 <= b[start] < 0:
            b[extent], b[start] = pixels(b[extent] + b[start]), 0
        if 0 < b[start] + b[extent] - size <= 0.5:
            b[extent] = pixels(size - b[start])
    return b


def is_box_column(values: pd.Series) -> bool:
    """Whether a label column holds box lists (JSON lists of {x, y, w, h, label})."""
    seen = False
    for v in values.dropna().head(1000):
        try:
            parsed = json.loads(v) if isinstance(v, str) else None
        except ValueError:
            return False
        if not isinstance(parsed, list) or any(
                not isinstance(b, dict) or not {"x", "y", "w", "h"} <= set(b) for b in parsed):
            return False
        seen = seen or bool(parsed)
    return seen


# ------------------------------------------------------------------ the dataset side
def images_root(project: Any, name: str, options: dict) -> Path:
    """The directory of the images of labels dataset `name` (`-o folder=`, else the
    labeling webapp's managed folder)."""
    from ..interop.formats import labeling_webapp

    if options.get("folder"):
        return Path(project.folder(options["folder"]).root)
    webapp, params = labeling_webapp(project, name, hint="pass -o folder=FOLDER, the "
                                     "managed folder of the images")
    pool = params.get("unlabeled")
    if not pool or pool not in (project.config.get("folders") or {}):
        raise LabelloopError(f"the labeling webapp {webapp!r} reads no managed folder: "
                             "pass -o folder=FOLDER, the managed folder of the images")
    return Path(project.folder(pool).root)


def class_names(project: Any, name: str, options: dict, seen: Iterable[str]) -> list[str]:
    """The classes in the webapp's order (its `object_classes`), then any other seen."""
    from ..interop.formats import labeling_webapp

    try:
        _webapp, params = labeling_webapp(project, name, options.get("webapp") or None)
        declared = list(params.get("object_classes") or [])
    except LabelloopError:
        declared = []
    return declared + sorted(set(seen) - set(declared))


def labeled_scenes(project: Any, name: str, options: dict) -> list[dict]:
    """The dataset's images with their size and boxes: ``[{"path", "width", "height",
    "boxes"}]`` (the newest answer of an image)."""
    label_col = label_column(options)
    df = project.dataset(name).read()
    if "path" not in df.columns or label_col not in df.columns:
        raise LabelloopError(f"dataset {name!r} is not an image boxes labels dataset: it needs "
                             f"columns 'path' and {label_col!r} (columns: "
                             f"{', '.join(map(str, df.columns))}); pass -o label_col=...")
    df = df[df[label_col].notna()]
    lid = f"{label_col}_id"
    if lid in df.columns:
        df = df.sort_values(lid, kind="stable")
    df = df.drop_duplicates("path", keep="last")
    root = images_root(project, name, options)
    scenes = []
    for k, (path, value) in enumerate(zip(df["path"], df[label_col], strict=True)):
        where = f"row {k + 1} of {name!r} ({path})"
        width, height = image_size(root / str(path))
        scenes.append({"path": str(path), "width": width, "height": height,
                       "boxes": parse_boxes(value, where, width, height)})
    return scenes


def boxes_frame(rows: list[tuple[str, list[dict]]], label_col: str,
                ids: list[int] | None = None) -> pd.DataFrame:
    """A boxes labels dataset from ``(path, boxes)`` pairs."""
    if not rows:
        raise LabelloopError("the file holds no image: nothing was imported")
    return pd.DataFrame({
        "path": [p for p, _ in rows],
        label_col: [json.dumps(sort_boxes(b), ensure_ascii=False) for _, b in rows],
        f"{label_col}_id": np.asarray(ids or range(1, len(rows) + 1), dtype=np.int64)})


# ------------------------------------------------------------------ COCO (detection)
def has_coco_boxes(doc: dict) -> bool:
    """Whether a COCO file's annotations hold boxes (object detection)."""
    return any(isinstance(a, dict) and isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4
               for a in doc.get("annotations") or [])


def write_coco_boxes(project: Any, name: str, path: Path, options: dict) -> int:
    from .evaluate import coco_dict

    scenes = labeled_scenes(project, name, options)
    classes = class_names(project, name, options,
                          (b["label"] for s in scenes for b in s["boxes"]))
    doc = {"info": {"description": f"Labelloop {project.key}: {name}"},
           **coco_dict(scenes, classes)}
    from labelloop.formats import atomic_file

    with atomic_file(path) as fh:
        json.dump(doc, fh, indent=1)
    return len(doc["annotations"])


def read_coco_boxes(path: Path, doc: dict, options: dict) -> dict[str, pd.DataFrame]:
    label_col = label_column(options)
    cats = {c["id"]: str(c["name"]) for c in doc["categories"]}
    boxes: dict[Any, list[dict]] = {im["id"]: [] for im in doc["images"]}
    for k, a in enumerate(doc["annotations"]):
        where = f"{path.name}: annotation {k + 1} (id {a.get('id')})"
        if a.get("image_id") not in boxes:
            raise LabelloopError(f"{where}: its image_id names no image; nothing was imported")
        if a.get("category_id") not in cats:
            raise LabelloopError(f"{where}: its category_id {a.get('category_id')!r} names no "
                                 "category; nothing was imported")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise LabelloopError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}; nothing "
                                 "was imported")
        boxes[a["image_id"]].append(dict(zip("xywh", bbox, strict=True),
                                         label=cats[a["category_id"]]))
    rows, ids = [], []
    for im in doc["images"]:
        w, h = im.get("width"), im.get("height")
        where = f"{path.name}: image {im['id']} ({im['file_name']})"
        found = [fit(b, w, h) if w and h else b for b in boxes[im["id"]]]
        try:
            rows.append((str(im["file_name"]), parse_boxes(found, where, w, h)))
        except LabelloopError as exc:
            raise LabelloopError(f"{exc}; nothing was imported") from None
        ids.append(im["id"] if isinstance(im["id"], int) else len(ids) + 1)
    ids = ids if len(set(ids)) == len(ids) else None
    return {"": boxes_frame(rows, label_col, ids)}


# ------------------------------------------------------------------ Label Studio
def has_box_results(annotation: Any) -> bool:
    """Whether an annotation or prediction holds Label Studio `rectanglelabels` results."""
    return isinstance(annotation, dict) and any(
        isinstance(r, dict) and r.get("type") == "rectanglelabels"
        for r in annotation.get("result") or [])


def boxes_of_results(annotation: dict, where: str, size: tuple[Any, Any] | None = None
                     ) -> list[dict]:
    """The boxes (pixels, scores kept) of `rectanglelabels` results: percentages of the
    image times its size (each result's `original_width`/`original_height`, else `size`)."""
    boxes = []
    for r in annotation.get("result") or []:
        if not isinstance(r, dict) or r.get("type") != "rectanglelabels":
            continue
        v = r.get("value") or {}
        W = r.get("original_width") or (size or (None, None))[0]  # noqa: N806
        H = r.get("original_height") or (size or (None, None))[1]  # noqa: N806
        if not W or not H:
            raise LabelloopError(f"{where}: a rectanglelabels result needs original_width and "
                                 "original_height (its percentages are of the image's size)")
        labels = v.get("rectanglelabels") or []
        try:
            box = {"x": pixels(v["x"] * W / 100), "y": pixels(v["y"] * H / 100),
                   "w": pixels(v["width"] * W / 100), "h": pixels(v["height"] * H / 100)}
        except (KeyError, TypeError):
            raise LabelloopError(f"{where}: a rectanglelabels result needs value.x, y, width "
                                 f"and height, got {v!r}") from None
        for label in labels:
            b = fit({**box, "label": str(label)}, W, H)
            if isinstance(r.get("score"), int | float):
                b["score"] = r["score"]
            boxes.append(parse_boxes([b], where, W, H, keep_score=True)[0])
    return sort_boxes(boxes)


def box_results(boxes: list[dict], width: Any, height: Any, from_name: str,
                to_name: str) -> list[dict]:
    """Label Studio `rectanglelabels` results for boxes (percentages; `score` kept)."""
    out = []
    for k, b in enumerate(sort_boxes(boxes)):
        item: dict[str, Any] = {
            "id": f"b{k + 1}", "from_name": from_name, "to_name": to_name,
            "type": "rectanglelabels", "original_width": width, "original_height": height,
            "image_rotation": 0,
            "value": {"x": b["x"] * 100 / width, "y": b["y"] * 100 / height,
                      "width": b["w"] * 100 / width, "height": b["h"] * 100 / height,
                      "rotation": 0, "rectanglelabels": [b["label"]]}}
        if b.get("score") is not None:
            item["score"] = b["score"]
        out.append(item)
    return out
