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

**yolo**: a directory (or a `.zip`) holding ``classes.txt`` (one class name per line, the
class index is the line number from 0) and one ``.txt`` per image, named like the image
(``sub/a.png`` -> ``sub/a.txt``), one box per line: ``class cx cy w h``, normalised by the
image's width and height. YOLO keeps no image size, so an import needs the images:
``-o images=DIR``, the directory holding them (a managed folder's directory).

**voc**: Pascal VOC XML, one ``.xml`` per image (named like the image) in a directory (or a
`.zip`): `filename`, `size` and one `object` (`name`, `bndbox` `xmin ymin xmax ymax`, pixels,
0-based) per box; the import reads the sizes from the files.

Numbers: COCO and VOC keep them as written; YOLO and Label Studio store fractions of the
image, converted back to pixels rounded to 2 decimals (an integer when within 1e-6 of one),
so a round trip keeps every box to within 0.01 pixel. A box beyond the image by half a pixel
or less is fitted to it; further out it is refused by name.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from ..kinds.boxes import image_size, parse_boxes, sort_boxes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
CLASSES_FILE = "classes.txt"


def _columns(options: dict) -> str:
    return options.get("label_col") or "label"


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
    label_col = _columns(options)
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


# ------------------------------------------------------------------ directories and zips
def read_entries(path: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    """The files of a directory or a .zip whose name ends with one of `suffixes`:
    relative POSIX path -> content."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file() and p.name.lower().endswith(suffixes)}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in sorted(zf.namelist())
                    if not n.endswith("/") and n.lower().endswith(suffixes)}
    raise LabelloopError(f"{path.name} is neither a directory nor a .zip archive")


def write_entries(path: Path, entries: dict[str, bytes]) -> None:
    """Write files into a .zip (`path` ends with .zip) or a directory, made beside the
    target first: an export that fails leaves the target as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for rel, content in entries.items():
                    zf.writestr(rel, content)
            os.replace(tmp, path)
            return
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, content in entries.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
        if not path.exists():
            tmp.mkdir(exist_ok=True)
            os.replace(tmp, path)
            return
        if not path.is_dir():
            raise LabelloopError(f"{path} is a file: export to a directory or a .zip")
        for rel in entries:  # into an existing directory: each file replaced
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, path / rel)
    except OSError as exc:
        raise LabelloopError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _stem(rel: str) -> str:
    return str(PurePosixPath(rel).with_suffix(""))


# ------------------------------------------------------------------ COCO (detection)
def has_coco_boxes(doc: dict) -> bool:
    """Whether a COCO file's annotations hold boxes (object detection)."""
    return any(isinstance(a, dict) and isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4
               for a in doc.get("annotations") or [])


def write_coco_boxes(project: Any, name: str, path: Path, options: dict) -> int:
    from .scenes import coco_dict

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
    label_col = _columns(options)
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


# ------------------------------------------------------------------ YOLO
def write_yolo(project: Any, name: str, path: Path, options: dict) -> int:
    scenes = labeled_scenes(project, name, options)
    classes = class_names(project, name, options,
                          (b["label"] for s in scenes for b in s["boxes"]))
    index = {c: i for i, c in enumerate(classes)}
    entries = {CLASSES_FILE: "".join(f"{c}\n" for c in classes).encode()}
    for s in scenes:
        W, H = s["width"], s["height"]  # noqa: N806 - the image's size
        entries[_stem(s["path"]) + ".txt"] = "".join(
            f"{index[b['label']]} {(b['x'] + b['w'] / 2) / W:.8f} "
            f"{(b['y'] + b['h'] / 2) / H:.8f} {b['w'] / W:.8f} {b['h'] / H:.8f}\n"
            for b in s["boxes"]).encode()
    write_entries(path, entries)
    return len(scenes)


def read_yolo(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    label_col = _columns(options)
    images = options.get("images")
    if not images or not Path(images).is_dir():
        raise LabelloopError("a YOLO import needs the images' sizes: pass -o images=DIR, the "
                             "directory holding the images" + (f" ({images} is not a "
                                                               "directory)" if images else ""))
    root = Path(images)
    by_stem: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(_stem(p.relative_to(root).as_posix()), p.relative_to(root)
                               .as_posix())
    entries = read_entries(path, (".txt",))
    listed = [k for k in entries if PurePosixPath(k).name == CLASSES_FILE]
    if not listed:
        raise LabelloopError(f"{path.name} has no {CLASSES_FILE} (one class name per line): "
                             "nothing was imported")
    prefix = str(PurePosixPath(min(listed, key=len)).parent)
    prefix = "" if prefix == "." else prefix + "/"
    classes = [c.strip() for c in entries.pop(min(listed, key=len)).decode().splitlines()
               if c.strip()]
    rows = []
    for rel, content in entries.items():
        stem = _stem(rel.removeprefix(prefix))
        if stem not in by_stem:
            raise LabelloopError(f"{path.name}: {rel}: no image {stem}.* in {root}; nothing was "
                                 "imported")
        W, H = image_size(root / by_stem[stem])  # noqa: N806 - the image's size
        boxes = []
        for n, line in enumerate(content.decode().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name}: {rel}: line {n}"
            try:
                c, cx, cy, w, h = line.split()
                c, cx, cy, w, h = int(c), float(cx), float(cy), float(w), float(h)
            except ValueError:
                raise LabelloopError(f"{where}: expected 'class cx cy w h', got {line!r}; "
                                     "nothing was imported") from None
            if not 0 <= c < len(classes):
                raise LabelloopError(f"{where}: class {c} is not in {CLASSES_FILE} (0 to "
                                     f"{len(classes) - 1}); nothing was imported")
            boxes.append(fit({"x": pixels((cx - w / 2) * W), "y": pixels((cy - h / 2) * H),
                              "w": pixels(w * W), "h": pixels(h * H), "label": classes[c]},
                             W, H))
        try:
            rows.append((by_stem[stem], parse_boxes(boxes, f"{path.name}: {rel}", W, H)))
        except LabelloopError as exc:
            raise LabelloopError(f"{exc}; nothing was imported") from None
    return {"": boxes_frame(rows, label_col)}


# ------------------------------------------------------------------ Pascal VOC
def write_voc(project: Any, name: str, path: Path, options: dict) -> int:
    from PIL import Image

    root = images_root(project, name, options)
    entries = {}
    for s in labeled_scenes(project, name, options):
        with Image.open(root / s["path"]) as img:
            depth = len(img.getbands())
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = str(PurePosixPath(s["path"]).parent)
        ET.SubElement(ann, "filename").text = PurePosixPath(s["path"]).name
        ET.SubElement(ann, "path").text = s["path"]
        ET.SubElement(ET.SubElement(ann, "source"), "database").text = "Labelloop"
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", s["width"]), ("height", s["height"]), ("depth", depth)):
            ET.SubElement(size, tag).text = str(v)
        ET.SubElement(ann, "segmented").text = "0"
        for b in s["boxes"]:
            obj = ET.SubElement(ann, "object")
            for tag, v in (("name", b["label"]), ("pose", "Unspecified"), ("truncated", "0"),
                           ("difficult", "0")):
                ET.SubElement(obj, tag).text = v
            bnd = ET.SubElement(obj, "bndbox")
            for tag, v in (("xmin", b["x"]), ("ymin", b["y"]),
                           ("xmax", pixels(b["x"] + b["w"])), ("ymax", pixels(b["y"] + b["h"]))):
                ET.SubElement(bnd, tag).text = str(v)
        ET.indent(ann)
        buf = io.BytesIO()
        ET.ElementTree(ann).write(buf, encoding="utf-8", xml_declaration=True)
        entries[_stem(s["path"]) + ".xml"] = buf.getvalue()
    write_entries(path, entries)
    return len(entries)


def _voc_number(el: ET.Element | None, tag: str, where: str) -> int | float:
    text = None if el is None else el.findtext(tag)
    try:
        v = float(text or "")
    except ValueError:
        raise LabelloopError(f"{where}: <{tag}> must be a number, got {text!r}; nothing was "
                             "imported") from None
    return int(v) if v.is_integer() else v


def read_voc(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    label_col = _columns(options)
    rows = []
    for rel, content in read_entries(path, (".xml",)).items():
        where = f"{path.name}: {rel}"
        try:
            ann = ET.fromstring(content)
        except ET.ParseError as exc:
            raise LabelloopError(f"{where}: not valid XML ({exc}); nothing was imported") \
                from None
        filename = ann.findtext("filename")
        if ann.tag != "annotation" or not filename:
            raise LabelloopError(f"{where}: a VOC file is an <annotation> with a <filename>; "
                                 "nothing was imported")
        size = ann.find("size")
        W, H = _voc_number(size, "width", where), _voc_number(size, "height", where)  # noqa: N806
        boxes = []
        for k, obj in enumerate(ann.iter("object")):
            bnd = obj.find("bndbox")
            at = f"{where}: object {k + 1}"
            x0, y0 = _voc_number(bnd, "xmin", at), _voc_number(bnd, "ymin", at)
            x1, y1 = _voc_number(bnd, "xmax", at), _voc_number(bnd, "ymax", at)
            boxes.append(fit({"x": x0, "y": y0, "w": pixels(x1 - x0), "h": pixels(y1 - y0),
                              "label": obj.findtext("name") or ""}, W, H))
        parent = PurePosixPath(rel).parent
        image = str(parent / filename) if str(parent) != "." else filename
        try:
            rows.append((image, parse_boxes(boxes, where, W, H)))
        except LabelloopError as exc:
            raise LabelloopError(f"{exc}; nothing was imported") from None
    return {"": boxes_frame(rows, label_col)}


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


def register_box_formats(register: Any) -> None:
    """YOLO and Pascal VOC (see the module docstring; COCO is `coco`)."""
    label_col = "the column of the boxes, as JSON (default label)"
    out = {"label_col": label_col,
           "folder": "the managed folder of the images (default the labeling webapp's)",
           "webapp": "the labeling webapp whose object classes give the class order"}
    register("yolo", read_yolo, write_yolo, (),
             "YOLO boxes: a directory or .zip of classes.txt and one 'class cx cy w h' .txt "
             "per image", read_options={"label_col": label_col,
                                        "images": "the directory holding the images (their "
                                                  "sizes)"},
             write_options=out)
    register("voc", read_voc, write_voc, (),
             "Pascal VOC XML boxes: a directory or .zip of one .xml per image",
             read_options={"label_col": label_col},
             write_options={k: v for k, v in out.items() if k != "webapp"})
