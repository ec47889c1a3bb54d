"""YOLO and Pascal VOC boxes for `dataset import|export`: a directory or a `.zip` of one
file per image (the boxes dataset and its options: `labeling.boxes.formats`).

**yolo**: a directory (or a `.zip`) holding ``classes.txt`` (one class name per line, the
class index is the line number from 0) and one ``.txt`` per image, named like the image
(``sub/a.png`` -> ``sub/a.txt``), one box per line: ``class cx cy w h``, normalised by the
image's width and height. YOLO keeps no image size, so an import needs the images:
``-o images=DIR``, the directory holding them (a managed folder's directory).

**voc**: Pascal VOC XML, one ``.xml`` per image (named like the image) in a directory (or a
`.zip`): `filename`, `size` and one `object` (`name`, `bndbox` `xmin ymin xmax ymax`, pixels,
0-based) per box; the import reads the sizes from the files.

Both read a directory or a `.zip`, and write a directory (made beside the target first,
then moved in; into an existing directory each file is replaced) or, for a target ending
with `.zip`, a zip archive.
"""

from __future__ import annotations

import io
import os
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from labelloop.errors import LabelloopError

from ..kinds.boxes import image_size, parse_boxes
from .formats import (
    boxes_frame,
    class_names,
    file_stem,
    fit,
    images_root,
    label_column,
    labeled_scenes,
    pixels,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
CLASSES_FILE = "classes.txt"


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


# ------------------------------------------------------------------ YOLO
def write_yolo(project: Any, name: str, path: Path, options: dict) -> int:
    scenes = labeled_scenes(project, name, options)
    classes = class_names(project, name, options,
                          (b["label"] for s in scenes for b in s["boxes"]))
    index = {c: i for i, c in enumerate(classes)}
    entries = {CLASSES_FILE: "".join(f"{c}\n" for c in classes).encode()}
    for s in scenes:
        W, H = s["width"], s["height"]  # noqa: N806 - the image's size
        entries[file_stem(s["path"]) + ".txt"] = "".join(
            f"{index[b['label']]} {(b['x'] + b['w'] / 2) / W:.8f} "
            f"{(b['y'] + b['h'] / 2) / H:.8f} {b['w'] / W:.8f} {b['h'] / H:.8f}\n"
            for b in s["boxes"]).encode()
    write_entries(path, entries)
    return len(scenes)


def read_yolo(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    label_col = label_column(options)
    images = options.get("images")
    if not images or not Path(images).is_dir():
        raise LabelloopError("a YOLO import needs the images' sizes: pass -o images=DIR, the "
                             "directory holding the images" + (f" ({images} is not a "
                                                               "directory)" if images else ""))
    root = Path(images)
    by_stem: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(file_stem(p.relative_to(root).as_posix()), p.relative_to(root)
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
        stem = file_stem(rel.removeprefix(prefix))
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
        entries[file_stem(s["path"]) + ".xml"] = buf.getvalue()
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
    label_col = label_column(options)
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
