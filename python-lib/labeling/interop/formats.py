"""`dataset import|export` formats of the labeling plugin: Label Studio JSON and COCO.

**label-studio** (`.json`; a list of tasks, or `{"tasks": [...]}`, as Label Studio exports
and imports them). Import: dataset NAME gets a `task_id` column (the task's id) and one column
per key of the tasks' `data`. Options (`-o KEY=VALUE`):

- `predictions=DATASET` (default `NAME_predictions`, only when tasks have predictions, as
  objects: Label Studio's quick JSON export lists prediction ids only, which are skipped): the
  tasks' data + `uncertainty`, `prediction`, `confidence`, `model_version`, most uncertain
  first: a queries dataset, so a labeling webapp shows them as suggestions with their model
  version. `score_is=confidence` (default: uncertainty = 1 - score) or `uncertainty`.
- `labels=DATASET` / `metadata=DATASET` (defaults `NAME_labels` / `NAME_metadata`, only when
  tasks have annotations): the annotations in a labeling webapp's labels / metadata shape
  (label id = the annotation's id, annotator = `label-studio:<user id>` or the user's email).
- `label_col` (default `label`).

Export (from a labels dataset): one task per row with its annotation; `-o metadata=DATASET`
adds annotators and dates; `-o from_name=` / `-o to_name=` / `-o data_key=` name the
label_config's Choices, object and data key (defaults `label`, `text`/`image`, `text`/`image`).
Ids: `task_id` and the label id round-trip. For image and sound labels (a `path` column) the
data key holds a URL Label Studio can load: the labeling webapp's media route,
`<base_url>/api/v1/webapps/<webapp>/media?id=<path>` (`-o base_url=`, default
`http://127.0.0.1:5006`, `labelloop serve`'s address; `-o webapp=`, default the labeling
webapp that writes this labels dataset), or, with `-o media_prefix=PREFIX`, `PREFIX<path>`
(e.g. `/data/local-files/?d=images/` for Label Studio's local files storage, or
`s3://bucket/images/`). The `path` column itself stays in the task's data.

**coco** (export from an image labels dataset, import back): `images` (`id`, `file_name`,
`width`, `height` read from the image files), `categories`, and one image-level
`annotations` entry per label (`image_id`, `category_id`, no box). The files are looked up in
`-o folder=FOLDER`, else in the folder of the labeling webapp that writes this labels dataset.
A labels dataset of boxes is written as COCO object detection, and a COCO file with boxes
read back as boxes (`labeling.boxes.formats`).

Boxes in Label Studio JSON are `rectanglelabels` results, percentages of the image's size
(`original_width` / `original_height`), converted to and from pixels exactly; an export
reads the sizes from the images (`-o folder=`, as for coco).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.formats import atomic_file

from ..boxes.formats import (
    box_results,
    boxes_of_results,
    has_box_results,
    has_coco_boxes,
    images_root,
    is_box_column,
    read_coco_boxes,
    write_coco_boxes,
)
from ..kinds.boxes import image_size, parse_boxes
from ..spans.formats import has_span_results, is_span_column, span_results, spans_of_results
from ..spans.tokens import dumps_spans, parse_spans
from .labelstudio import (
    annotation_labels,
    annotator_name,
    completed_by_of,
    json_safe,
    parse_label_config,
)

TASK_ID = "task_id"
DEFAULT_BASE_URL = "http://127.0.0.1:5006"  # `labelloop serve`'s default address


def _bad(path: Path, where: str, what: str) -> LabelloopError:
    return LabelloopError(f"{path.name}: {where}: {what}; nothing was imported")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LabelloopError(f"{path.name}: not valid JSON at line {exc.lineno}, column "
                             f"{exc.colno} ({exc.msg}); nothing was imported") from None
    except UnicodeDecodeError as exc:
        raise LabelloopError(f"{path.name}: not UTF-8 text ({exc}); nothing was "
                             "imported") from None


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


# ------------------------------------------------------------------ Label Studio JSON
def read_label_studio(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    doc = _load_json(path)
    tasks = doc.get("tasks") if isinstance(doc, dict) and "tasks" in doc else doc
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks:
        raise LabelloopError(f"{path.name}: expected a list of Label Studio tasks "
                             "([{\"data\": {...}}, ...]); nothing was imported")
    label_col = options.get("label_col") or "label"
    score_is = options.get("score_is") or "confidence"
    if score_is not in ("confidence", "uncertainty"):
        raise LabelloopError(f"option score_is must be confidence or uncertainty, got "
                             f"{score_is!r}")
    rows, preds, labels, meta = [], [], [], []
    seen: set[str] = set()
    # A file with `labels` (span) results holds spans: an empty result is then "no entities".
    spans_file = any(has_span_results(a) for t in tasks if isinstance(t, dict)
                     for key in ("annotations", "predictions") for a in t.get(key) or [])
    boxes_file = any(has_box_results(a) for t in tasks if isinstance(t, dict)
                     for key in ("annotations", "predictions") for a in t.get(key) or [])
    data_key = options.get("data_key") or "text"
    for k, task in enumerate(tasks):
        where = f"task {k + 1}" + (f" (id {task.get('id')})" if isinstance(task, dict)
                                   and task.get("id") is not None else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise _bad(path, where, "a task must be an object with a 'data' object")
        task_id = str(task.get("id") if task.get("id") is not None else k + 1)
        if task_id in seen:
            raise _bad(path, where, f"task id {task_id} appears twice")
        seen.add(task_id)
        if TASK_ID in task["data"]:
            raise _bad(path, where, f"the data key {TASK_ID!r} is reserved for the task id")
        row = {TASK_ID: task_id, **{str(c): _cell(v) for c, v in task["data"].items()}}
        rows.append(row)
        for p in task.get("predictions") or []:
            if isinstance(p, int):  # Label Studio's quick export lists prediction ids only
                continue
            if not isinstance(p, dict) or not isinstance(p.get("result", []), list):
                raise _bad(path, where, "a prediction must be an object with a 'result' list")
            chosen = annotation_labels(p)
            if spans_file:
                chosen = [json.dumps(spans_of_results(p, _text_of(task, data_key), where),
                                     separators=(",", ":"))]
            elif boxes_file:
                chosen = [json.dumps(boxes_of_results(p, where))]
            score = p.get("score")
            item_score = next((r.get("score") for r in p.get("result") or []
                               if isinstance(r, dict) and isinstance(r.get("score"), int | float)),
                              None) if not (spans_file or boxes_file) else None  # each
            # span or box has its own score
            if score is not None and not isinstance(score, int | float):
                raise _bad(path, where, f"prediction score {score!r} is not a number")
            unc = None
            if score is not None:
                unc = 1.0 - float(score) if score_is == "confidence" else float(score)
            preds.append({**row, "uncertainty": unc,
                          "prediction": chosen[0] if chosen else None,
                          "confidence": item_score if item_score is not None else
                          (score if score_is == "confidence" else None),
                          "model_version": None if p.get("model_version") is None
                          else str(p["model_version"])})
            break  # one suggestion per item: the first prediction
        for a in task.get("annotations") or []:
            if not isinstance(a, dict) or not isinstance(a.get("result", []), list):
                raise _bad(path, where, "an annotation must be an object with a 'result' list")
            chosen = annotation_labels(a)
            cancelled = bool(a.get("was_cancelled"))
            if spans_file and not cancelled:
                chosen = [dumps_spans(spans_of_results(a, _text_of(task, data_key), where))]
            elif boxes_file and not cancelled:
                chosen = [json.dumps([{k: b[k] for k in ("x", "y", "w", "h", "label")}
                                      for b in boxes_of_results(a, where)])]
            if not chosen and not cancelled:
                raise _bad(path, where, f"annotation {a.get('id')} has no choices result "
                                        "(Labelloop imports classification labels)")
            label = None if cancelled else (chosen[0] if len(chosen) == 1 else json.dumps(chosen))
            label_id = a.get("id")
            if label_id is not None and not isinstance(label_id, int):
                raise _bad(path, where, f"annotation id {label_id!r} is not an integer")
            label_id = label_id if label_id is not None else len(meta) + 1
            when = _date(a.get("updated_at") or a.get("created_at"))
            if not cancelled:
                labels.append({**row, label_col: label, f"{label_col}_id": label_id})
            meta.append({"date": when, "data_id": task_id, "comment": None, "session": 0,
                         "status": "SKIPPED" if cancelled else "LABELED",
                         "annotator": annotator_name(a.get("completed_by")),
                         label_col: label, f"{label_col}_id": label_id})
    out: dict[str, pd.DataFrame] = {"": pd.DataFrame.from_records(rows)}
    if preds:
        frame = pd.DataFrame.from_records(preds)
        order = np.lexsort((np.arange(len(frame)),
                            -frame["uncertainty"].astype(float).fillna(-np.inf).to_numpy()))
        out["predictions"] = frame.iloc[order].reset_index(drop=True)
    if meta:
        out["labels"] = pd.DataFrame.from_records(labels) if labels else None
        out["metadata"] = pd.DataFrame.from_records(meta)
    return out


def _text_of(task: dict, data_key: str) -> str | None:
    """The task's text span offsets point into (None when it has none to check against)."""
    text = task["data"].get(data_key)
    return text if isinstance(text, str) else None


def _date(value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC)


def labels_to_tasks(labels: pd.DataFrame, label_col: str, metadata: pd.DataFrame | None = None,
                    data_key: str = "text", text_column: str | None = None,
                    label_config: str | None = None, from_name: str | None = None,
                    to_name: str | None = None, sizes: dict | None = None) -> list[dict]:
    """Label Studio tasks with annotations from a labels dataset (+ metadata for annotators;
    `sizes`: path -> (width, height) of the images, for boxes)."""
    control = parse_label_config(label_config) if label_config else None
    from_name = from_name or (control.from_name if control else "label")
    to_name = to_name or (control.to_name if control else data_key)
    lid = f"{label_col}_id"
    if label_col not in labels.columns:
        raise LabelloopError(f"the labels dataset has no column {label_col!r} (columns: "
                             f"{', '.join(labels.columns)}): pass -o label_col=...")
    who: dict[Any, dict] = {}
    if metadata is not None and lid in metadata.columns:
        for r in metadata.to_dict("records"):
            if r.get(lid) is not None:
                who[int(r[lid])] = r
    data_cols = [c for c in labels.columns if c not in (label_col, lid, TASK_ID)]
    boxes_column = is_box_column(labels[label_col])
    spans_column = not boxes_column and is_span_column(labels[label_col])
    tasks = []
    for k, r in enumerate(labels.to_dict("records")):
        data = {c: json_safe(r[c]) for c in data_cols}
        source = text_column or (data_key if data_key in data else None)
        if source in data:
            data[data_key] = data[source]
        elif "path" in data:
            data[data_key] = data["path"]
        value = r[label_col]
        if boxes_column:
            width, height = (sizes or {})[str(r["path"])]
            result = [{**item, "origin": "manual"} for item in box_results(
                parse_boxes(value, f"row {k + 1}", width, height), width, height, from_name,
                to_name)]
        elif spans_column:
            text = str(data.get(data_key) or "")
            result = [{**item, "origin": "manual"} for item in span_results(
                parse_spans(value, text, f"row {k + 1}"), text, from_name, to_name)]
        else:
            chosen = json.loads(value) if isinstance(value, str) and value.startswith("[") \
                else [value]
            chosen = [str(c) for c in chosen if c is not None]
            result = [{"from_name": from_name, "to_name": to_name, "type": "choices",
                       "value": {"choices": chosen}, "origin": "manual"}]
        label_id = json_safe(r.get(lid))
        task_id = r.get(TASK_ID)
        m = who.get(int(label_id)) if label_id is not None else None
        annotation: dict[str, Any] = {"result": result, "was_cancelled": False,
                                      "ground_truth": False}
        if label_id is not None:
            annotation["id"] = int(label_id)
        if m is not None:
            annotation["completed_by"] = completed_by_of(str(m.get("annotator")))
            if m.get("date") is not None:
                annotation["created_at"] = annotation["updated_at"] = json_safe(m["date"])
        tasks.append({"id": int(task_id) if task_id is not None and str(task_id).isdigit()
                      else task_id if task_id is not None else k + 1,
                      "data": data, "annotations": [annotation], "predictions": []})
    return tasks


def labeling_webapp(project: Any, labels_ds: str, webapp: str | None = None,
                    hint: str = "pass -o webapp=ID") -> tuple[str, dict]:
    """The labeling webapp that writes dataset `labels_ds` (or the one named): id, params.
    `hint` ends the error when there is not exactly one."""
    from labelloop.errors import ConfigError

    apps = {wid: app for wid, app in (project.config.get("webapps") or {}).items()
            if isinstance(app, dict) and str(app.get("type", "")).endswith("-labeling")}
    if webapp:
        if webapp not in apps:
            raise ConfigError(f"no labeling webapp {webapp!r} in project.json (labeling "
                              f"webapps: {', '.join(apps) or 'none'})")
        return webapp, dict(apps[webapp].get("params") or {})
    writers = [wid for wid, app in apps.items()
               if ((app.get("params") or {}).get("labels_ds") or "labels") == labels_ds]
    if len(writers) != 1:
        found = f"{', '.join(writers)} all write it" if writers else "none writes it"
        raise ConfigError(f"cannot tell which labeling webapp dataset {labels_ds!r} belongs to "
                          f"({found}): {hint}")
    return writers[0], dict(apps[writers[0]].get("params") or {})


def media_urls(project: Any, name: str, paths: pd.Series, options: dict) -> pd.Series:
    """URLs Label Studio can load for the files `paths` (see the module docstring)."""
    prefix = options.get("media_prefix")
    if prefix is not None:
        return prefix + paths.astype(str)
    webapp, _params = labeling_webapp(project, name, options.get("webapp") or None)
    base = (options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise LabelloopError(f"base_url {base!r} must start with http:// or https://, e.g. "
                             f"{DEFAULT_BASE_URL}")
    route = f"{base}/api/v1/webapps/{quote(webapp, safe='')}/media?id="
    return paths.astype(str).map(lambda p: route + quote(p, safe=""))


def write_label_studio(project: Any, name: str, path: Path, options: dict) -> int:
    labels = project.dataset(name).read()
    meta_name = options.get("metadata")
    metadata = project.dataset(meta_name).read() if meta_name else None
    kind = "image" if "path" in labels.columns and "text" not in labels.columns else "text"
    data_key = options.get("data_key") or kind
    if kind == "image" and not options.get("text_column") and data_key not in labels.columns:
        # Files: the data key gets a URL to the file, `path` keeps the file's name.
        labels = labels.assign(**{data_key: media_urls(project, name, labels["path"],
                                                       options)})
        labels = labels[[c for c in labels.columns if c != data_key] + [data_key]]
    label_col = options.get("label_col") or "label"
    sizes = None
    if kind == "image" and label_col in labels.columns and is_box_column(labels[label_col]):
        root = images_root(project, name, options)
        sizes = {str(p): image_size(root / str(p)) for p in labels["path"].unique()}
    tasks = labels_to_tasks(labels, label_col, metadata, data_key,
                            options.get("text_column"), options.get("label_config"),
                            options.get("from_name"), options.get("to_name"), sizes)
    with atomic_file(path) as fh:
        json.dump(tasks, fh, ensure_ascii=False, indent=1)
    return len(tasks)


# ------------------------------------------------------------------ COCO
def write_coco(project: Any, name: str, path: Path, options: dict) -> int:
    labels = project.dataset(name).read()
    label_col = options.get("label_col") or "label"
    if label_col in labels.columns and is_box_column(labels[label_col]):
        return write_coco_boxes(project, name, path, options)
    if "path" not in labels.columns or label_col not in labels.columns:
        raise LabelloopError(f"COCO export needs an image labels dataset (columns 'path' and "
                             f"{label_col!r}); {name!r} has {', '.join(labels.columns)}")
    folder = images_root(project, name, options)
    names = sorted({str(v) for v in labels[label_col].dropna()})
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    images, annotations, image_ids = [], [], {}
    lid = f"{label_col}_id"
    for r in labels.to_dict("records"):
        file_name = str(r["path"])
        if file_name not in image_ids:
            image_ids[file_name] = len(image_ids) + 1
            try:
                w, h = image_size(Path(folder) / file_name)
            except LabelloopError:
                w = h = None
            images.append({"id": image_ids[file_name], "file_name": file_name,
                           "width": w, "height": h})
        if r[label_col] is None:
            continue
        annotations.append({"id": int(r[lid]) if r.get(lid) is not None
                            else len(annotations) + 1,
                            "image_id": image_ids[file_name],
                            "category_id": cat_ids[str(r[label_col])],
                            "iscrowd": 0, "area": 0, "bbox": []})
    doc = {"info": {"description": f"Labelloop {project.key}: {name}",
                    "date_created": dt.datetime.now(dt.UTC).isoformat()},
           "images": images, "categories": [{"id": i, "name": n, "supercategory": ""}
                                            for n, i in cat_ids.items()],
           "annotations": annotations}
    with atomic_file(path) as fh:
        json.dump(doc, fh, indent=1)
    return len(annotations)


def read_coco(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    doc = _load_json(path)
    label_col = options.get("label_col") or "label"
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list)
                                            for k in ("images", "categories", "annotations")):
        raise LabelloopError(f"{path.name}: a COCO file is an object with 'images', "
                             "'categories' and 'annotations' lists; nothing was imported")
    try:
        images = {im["id"]: im["file_name"] for im in doc["images"]}
    except (KeyError, TypeError):
        raise LabelloopError(f"{path.name}: every image needs 'id' and 'file_name'; nothing "
                             "was imported") from None
    try:
        cats = {c["id"]: c["name"] for c in doc["categories"]}
    except (KeyError, TypeError):
        raise LabelloopError(f"{path.name}: every category needs 'id' and 'name'; nothing "
                             "was imported") from None
    if has_coco_boxes(doc):
        return read_coco_boxes(path, doc, options)
    rows = []
    for k, a in enumerate(doc["annotations"]):
        where = f"annotation {k + 1}" + (f" (id {a.get('id')})" if isinstance(a, dict) else "")
        if not isinstance(a, dict) or a.get("image_id") not in images:
            raise _bad(path, where, "its image_id names no image")
        if a.get("category_id") not in cats:
            raise _bad(path, where, f"its category_id {a.get('category_id')!r} names no "
                                    "category")
        rows.append({"path": images[a["image_id"]], label_col: cats[a["category_id"]],
                     f"{label_col}_id": int(a.get("id") or k + 1)})
    if not rows:
        raise LabelloopError(f"{path.name} has no annotations: nothing to import")
    return {"": pd.DataFrame.from_records(rows)}


def register_formats(register: Any) -> None:
    """The plugin's dataset formats (see the module docstring)."""
    label_col = "the label column (default label)"
    register("label-studio", read_label_studio, write_label_studio, (".json",),
             "Label Studio tasks JSON (data, annotations, predictions)",
             read_options={"predictions": "dataset of the predictions (default NAME_predictions)",
                           "labels": "dataset of the annotations (default NAME_labels)",
                           "metadata": "dataset of the annotations' metadata (default "
                                       "NAME_metadata)",
                           "score_is": "confidence (default) or uncertainty",
                           "label_col": label_col},
             write_options={"metadata": "metadata dataset: annotators and dates",
                            "label_col": label_col,
                            "data_key": "the task data key of the item (default text / image)",
                            "text_column": "the column holding the item's text",
                            "label_config": "a Label Studio labeling config (XML) to name "
                                            "from_name / to_name",
                            "from_name": "the Choices control's name (default label)",
                            "to_name": "the object's name (default text / image)",
                            "media_prefix": "files: data key = PREFIX + path",
                            "base_url": "files: the server of the media route (default "
                                        f"{DEFAULT_BASE_URL})",
                            "webapp": "files: the labeling webapp of the media route",
                            "folder": "boxes: the managed folder of the images (their sizes; "
                                      "default the labeling webapp's)"})
    register("coco", read_coco, write_coco, (), "COCO JSON: object detection boxes, or "
             "image-level labels",
             read_options={"label_col": label_col},
             write_options={"label_col": label_col,
                            "folder": "the managed folder of the images (default the "
                                      "labeling webapp's)",
                            "webapp": "boxes: the labeling webapp whose object classes give "
                                      "the category order"})
