"""Every labeling webapp as a Label Studio ML backend, at `/api/v1/ml-backends/<webapp>/`
(the routes: `labeling.interop.ml_backend_routes`).

A classification webapp (kind `choice`) speaks a `<Choices>` config; a text-spans webapp
(kind `spans`) a `<Labels>` config: its predictions are `labels` results (the tagger's spans,
each with its score) and the annotations it records are span answers; an image-boxes webapp
(kind `boxes`) a `<RectangleLabels>` config: its predictions are the queries dataset's boxes
as `rectanglelabels` results (`labeling.boxes.ml_backend`), the annotations it records box
answers.

| route | Label Studio sends | answer |
|---|---|---|
| `GET health` | | `{"status": "UP", "model_class": "Labelloop", "model_version"}` |
| `POST setup` | `{"project", "schema" (label_config), ...}` | `{"model_version"}` (the saved model's newest version) |
| `POST predict` | `{"tasks", "label_config", "project", "params"}` | `{"results": [{"model_version", "score", "result": [choices or labels]}]}`, one per task |
| `POST webhook` | `{"action", "annotation", "task", "project"}` | ANNOTATION_CREATED / UPDATED record the label with Label Studio's annotator, ANNOTATION_DELETED records a skip, START_TRAINING runs the retraining scenario; other events: 200 `{"status": "ignored"}` |
| `GET metrics` | | the webapp's stats |

`score` is the item's uncertainty under the webapp's query strategy (higher = the model learns
more from it), so sorting Label Studio's data manager by prediction score, descending, gives
the active-learning order.

Settings (project.json, all optional): `"settings": {"ml_backend": {"<webapp>": {...}}}`:

- `data_key`: the task data key naming the item: a pool column (the id column, the text...)
  or, for image / sound webapps, the key of the file URL (matched by file name). Default:
  the webapp's id column, else its text column, else the label_config's object (`$image`...).
- `model`: the saved model to predict with (default: the Query Sampler's input model of the
  webapp's queries dataset, else the project's only model);
- `strategy`: the uncertainty measure (default: that Query Sampler's, else `margin`);
- `scenario`: what START_TRAINING runs (default: the scenario whose trigger watches the
  webapp's metadata, else the only scenario).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from labelloop.errors import ConfigError, LabelloopError, NotFoundError

from .labelstudio import LabelsControl, annotation_labels, annotator_name, parse_label_config

log = logging.getLogger(__name__)

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "START_TRAINING")
MODEL_CLASS = "Labelloop"


def _names(binding: Any) -> list[str]:
    if binding is None:
        return []
    return [binding] if isinstance(binding, str) else list(binding)


class MlBackend:
    """The ML-backend side of one labeling webapp (its engine, its model, its item index)."""

    def __init__(self, project: Any, backend: Any):
        self.project = project
        self.backend = backend
        self.engine = backend.engine
        self.cfg = backend.cfg
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._model: tuple[str, int, Any] | None = None
        self._pool_key: str | None = None
        self._indexes: dict[str, dict[str, str]] = {}  # data key -> (value -> item id)
        self._rows: dict[str, str] = {}  # item id -> row JSON

    # ---------------------------------------------------------------- settings
    @property
    def kind(self) -> str:
        """The webapp's annotation kind: `choice` (a `<Choices>` config) or `spans`
        (`<Labels>`)."""
        return self.engine.kind.name

    def control(self, label_config: str | None) -> Any:
        """The label_config's control for this webapp's kind (None without a config)."""
        return parse_label_config(label_config, self.kind) if label_config else None

    @property
    def settings(self) -> dict:
        all_ = (self.project.config.get("settings") or {}).get("ml_backend") or {}
        return dict(all_.get(self.cfg.webapp) or {})

    def _sampler(self) -> dict | None:
        queries = self.cfg.queries_ds
        for r in (self.project.config.get("recipes") or {}).values():
            if str(r.get("type", "")).endswith("/query-sampler") and \
                    queries in _names((r.get("outputs") or {}).get("queries")):
                return r
        return None

    def model_name(self) -> str:
        name = self.settings.get("model")
        if name:
            return name
        sampler = self._sampler()
        if sampler is not None:
            names = _names((sampler.get("inputs") or {}).get("saved_model"))
            if names:
                return names[0]
        models = self.project.model_names()
        if len(models) == 1:
            return models[0]
        raise ConfigError(f"webapp {self.cfg.webapp!r}: cannot tell which saved model predicts "
                          f"(models: {', '.join(models) or 'none'}); set settings.ml_backend."
                          f"{self.cfg.webapp}.model in project.json")

    def strategy(self) -> str:
        sampler = self._sampler() or {}
        return self.settings.get("strategy") or (sampler.get("params") or {}).get("strategy") \
            or "margin"

    def scenario(self) -> str:
        name = self.settings.get("scenario")
        scenarios = self.project.config.get("scenarios") or {}
        if name:
            return name
        for sname, sc in scenarios.items():
            for trig in sc.get("triggers") or []:
                if (trig.get("params") or {}).get("ds_metadata") == self.cfg.metadata_ds:
                    return sname
        if len(scenarios) == 1:
            return next(iter(scenarios))
        raise ConfigError(f"webapp {self.cfg.webapp!r}: which scenario retrains the model? set "
                          f"settings.ml_backend.{self.cfg.webapp}.scenario in project.json")

    # ---------------------------------------------------------------- the model
    def model_version(self) -> str | None:
        """The newest saved version as a string, None before the first training."""
        try:
            meta = self.project.model(self.model_name()).latest()
        except (NotFoundError, ConfigError):
            return None
        return None if meta is None else str(meta["version"])

    def _pipeline(self) -> tuple[int, Any] | None:
        from labeling.training import TRUSTED_TYPES, set_folder_root

        name = self.model_name()
        try:
            model = self.project.model(name)
        except NotFoundError:
            return None
        meta = model.latest()
        if meta is None:
            return None
        with self._model_lock:
            if self._model is not None and self._model[:2] == (name, meta["version"]):
                return self._model[1], self._model[2]
            pipeline = model.load(meta["version"], trusted=TRUSTED_TYPES)
            if self.cfg.from_folder:
                set_folder_root(pipeline, str(self.project.folder(self.cfg.unlabeled).root))
            self._model = (name, meta["version"], pipeline)
            return meta["version"], pipeline

    # ---------------------------------------------------------------- tasks -> items
    def data_keys(self, label_config: str | None) -> list[str]:
        """The task data keys tried, in order, to find a task's item."""
        key = self.settings.get("data_key")
        if key:
            return [key]
        keys = [self.cfg.id_column, self.cfg.text_column if self.cfg.data_type == "text"
                else None]
        try:
            control = self.control(label_config)
        except LabelloopError:
            control = None
        if control is not None:
            keys.append(control.data_key)
        keys += {"image": ["image"], "sound": ["audio"]}.get(self.cfg.data_type, ["text"])
        return list(dict.fromkeys(k for k in keys if k))

    def _item_index(self, key: str) -> dict[str, str]:
        """`value of data key -> item id` over the pool (rebuilt when the pool changes)."""
        import json

        dtype = self.engine.dtype
        pool_key = dtype.pool_key()
        with self._lock:
            if self._pool_key != pool_key:
                self._indexes, self._rows, self._pool_key = {}, {}, pool_key
            if key in self._indexes:
                return self._indexes[key]
            index: dict[str, str] = {}
            rows: dict[str, str] = {}
            for ids, lines in dtype.iter_items():
                for item_id, line in zip(ids, lines, strict=True):
                    if self.cfg.from_folder:
                        index.setdefault(PurePosixPath(item_id).name, item_id)
                        index.setdefault(item_id, item_id)
                    else:
                        rows.setdefault(item_id, line)
                        value = json.loads(line).get(key)
                        if value is not None:
                            index.setdefault(_text(value), item_id)
            self._indexes[key] = index
            self._rows = rows
            return index

    def item_of(self, task: Any, keys: list[str]) -> str | None:
        """The item id a Label Studio task stands for (first data key present), or None."""
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            return None
        key = next((k for k in keys if data.get(k) is not None), None)
        if key is None:
            return None
        value = data[key]
        index = self._item_index(key)
        if self.cfg.from_folder:
            path = unquote(urlsplit(str(value)).path)
            if "?d=" in str(value):  # Label Studio's local-files URLs: /data/local-files/?d=...
                path = unquote(str(value).split("?d=", 1)[1])
            name = PurePosixPath(path).name
            hit = index.get(path.lstrip("/")) or index.get(name)
            if hit is None and len(name) > 9 and name[8] == "-":  # uploads get an 8-hex prefix
                hit = index.get(name[9:])
            return hit
        return index.get(_text(value))

    # ---------------------------------------------------------------- routes
    def health(self) -> dict:
        return {"status": "UP", "model_class": MODEL_CLASS, "webapp": self.cfg.webapp,
                "model_version": self.model_version()}

    def setup(self, body: dict) -> dict:
        schema = body.get("schema") if isinstance(body, dict) else None
        if schema:
            self._check_config(schema)
        return {"model_version": self.model_version() or "untrained"}

    def _check_config(self, label_config: str) -> None:
        control = self.control(label_config)
        if control is None:
            return
        unknown = [c for c in control.values if c not in self.cfg.categories]
        if unknown:
            what = {"spans": ("labels", "entity types"), "boxes": ("labels", "object classes")
                    }.get(self.kind, ("choices", "categories"))
            raise LabelloopError(
                f"the label_config's {what[0]} {', '.join(map(repr, unknown))} are not "
                f"{what[1]} of webapp {self.cfg.webapp!r} ({', '.join(self.cfg.categories)}): "
                f"use the same names in both")

    def predict(self, body: Any) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
            raise LabelloopError("predict expects a JSON object with a 'tasks' list (Label "
                                 "Studio's ML-backend protocol)")
        tasks = body["tasks"]
        label_config = body.get("label_config")
        control = self.control(label_config)
        if self.kind == "boxes":  # the Query Sampler's boxes, already in the queries
            from labeling.boxes.ml_backend import predict_boxes

            return {"results": predict_boxes(self, tasks, self.data_keys(label_config),
                                             control)}
        loaded = self._pipeline()
        if loaded is None or not tasks:
            return {"results": []}  # no model yet: Label Studio stores no prediction
        version, pipeline = loaded
        keys = self.data_keys(label_config)
        key = keys[0]
        if self.kind == "spans":
            return {"results": self._predict_spans(tasks, keys, control, version, pipeline)}
        rows, known = [], []
        for k, task in enumerate(tasks):
            item_id = self.item_of(task, keys)
            row = self._row(item_id) if item_id is not None else None
            if row is None and not self.cfg.from_folder and isinstance(task.get("data"), dict):
                row = task["data"]  # not in the pool: score the task's own data
            if row is not None:
                rows.append(row)
                known.append(k)
        results: list[dict] = [{"model_version": str(version), "score": None, "result": []}
                               for _ in tasks]
        if rows:
            scored = self._score(pipeline, rows)
            for k, (uncertainty, label, confidence) in zip(known, scored, strict=True):
                result = []
                if control is not None and label in control.choices:
                    result = control.result([label], confidence)
                elif control is None:
                    result = [{"from_name": "label", "to_name": key, "type": "choices",
                               "value": {"choices": [label]}, "score": confidence}]
                results[k] = {"model_version": str(version), "score": uncertainty,
                              "result": result}
        return {"results": results}

    def _predict_spans(self, tasks: list, keys: list[str], control: LabelsControl | None,
                       version: int, pipeline: Any) -> list[dict]:
        """Per task: the tagger's spans as `labels` results (each with its score) and the
        text's uncertainty under the Query Sampler's span strategy as the task's `score`."""
        from labeling.spans.sampling import score_texts

        if control is None:
            key = self.cfg.text_column or keys[0]
            control = LabelsControl("label", key, list(self.cfg.categories), key)
        results: list[dict] = [{"model_version": str(version), "score": None, "result": []}
                               for _ in tasks]
        texts, known = [], []
        for k, task in enumerate(tasks):
            text = self._task_text(task, keys, control)
            if text is not None:
                texts.append(text)
                known.append(k)
        if not texts:
            return results
        scored = score_texts(pipeline, texts, self.span_strategy())
        for k, text, uncertainty, prediction in zip(known, texts, scored["uncertainty"],
                                                    scored["prediction"], strict=True):
            spans = [{**s, "score": round(float(s["score"]), 6)}
                     for s in json.loads(prediction) if s["label"] in control.labels]
            results[k] = {"model_version": str(version),
                          "score": round(float(np.nan_to_num(uncertainty)), 6),
                          "result": control.result(spans, text)}
        return results

    def span_strategy(self) -> str:
        """The span strategy of the webapp's Query Sampler (a span model's own names)."""
        from labeling.spans.sampling import span_strategies

        name = self.strategy()
        registry = span_strategies()
        registry.get(name)  # a classification-only strategy: a clear error, not a 500
        return name

    def _task_text(self, task: Any, keys: list[str], control: LabelsControl) -> str | None:
        """The text Label Studio shows for a task (its offsets are the spans'): the task's
        own text under the control's data key, else the pool item's text."""
        data = task.get("data") if isinstance(task, dict) else None
        if isinstance(data, dict) and isinstance(data.get(control.data_key), str):
            return data[control.data_key]
        item_id = self.item_of(task, keys)
        row = self._row(item_id) if item_id is not None else None
        text = (row or {}).get(self.cfg.text_column or "text")
        return text if isinstance(text, str) else None

    def _row(self, item_id: str) -> dict | None:
        import json

        if self.cfg.from_folder:
            return {"path": item_id}
        line = self._rows.get(item_id)
        return None if line is None else json.loads(line)

    def _score(self, pipeline: Any, rows: list[dict]) -> list[tuple[float, str, float]]:
        from labeling.strategies import collect_strategies
        from labeling.training import model_classes, score_rows

        frame = self.engine.dtype.features(rows)
        registry = collect_strategies(self.project.registry.pm)
        scored = score_rows(pipeline, frame, self.strategy(), registry, seed=0)
        classes = model_classes(pipeline)
        unc = np.nan_to_num(np.asarray(scored["uncertainty"], dtype=float), nan=0.0)
        return [(round(float(u), 6), str(classes[int(p)]), round(float(c), 6))
                for u, p, c in zip(unc, scored["prediction"], scored["confidence"], strict=True)]

    def webhook(self, body: Any, launch: Any) -> tuple[int, dict]:
        if not isinstance(body, dict):
            raise LabelloopError("webhook expects a JSON object with an 'action'")
        action = body.get("action")
        if action not in TRAIN_EVENTS:
            return 200, {"status": "ignored", "action": action}
        if action == "START_TRAINING":
            run_id = launch(self.scenario(), {"kind": "label-studio", "action": action})
            return 201, {"status": "ok", "run_id": run_id}
        annotation = body.get("annotation") or {}
        task = body.get("task") or {}
        if not isinstance(task, dict) or not task.get("data"):
            task = annotation.get("task") if isinstance(annotation.get("task"), dict) else task
        project = body.get("project") or {}
        keys = self.data_keys(project.get("label_config") if isinstance(project, dict)
                              else None)
        item_id = self.item_of(task, keys)
        if item_id is None:
            raise NotFoundError(f"{action}: task {task.get('id') if isinstance(task, dict) else '?'}"
                                f" matches no item of webapp {self.cfg.webapp!r} by data key "
                                f"{' / '.join(map(repr, keys))}: set settings.ml_backend.{self.cfg.webapp}.data_key "
                                "in project.json to the task data key that names the item")
        user = annotator_name(annotation.get("completed_by"))
        comment = f"label-studio annotation {annotation.get('id')}"
        if action == "ANNOTATION_DELETED":
            out = self.engine.skip(user, item_id, f"{comment} deleted in Label Studio")
            self.project.webhooks.emit_now("ANNOTATION_DELETED", {
                "annotation": {"id": out["label_id"], "completed_by": user},
                "task": {"id": item_id}})
        elif annotation.get("was_cancelled"):
            out = self.engine.skip(user, item_id, f"{comment} (skipped)")
        elif self.kind == "spans":
            spans = self._answer_spans(action, annotation, item_id)
            out = self.engine.label(user, item_id, spans, comment)
        elif self.kind == "boxes":
            from labeling.boxes.ml_backend import answer_boxes

            out = self.engine.label(user, item_id, answer_boxes(self, action, annotation,
                                                                item_id), comment)
        else:
            labels = annotation_labels(annotation)
            if not labels:
                raise LabelloopError(f"{action}: annotation {annotation.get('id')} has no "
                                     "choices result (Labelloop records classification labels)")
            label: Any = labels if self.cfg.multi_label else labels[0]
            out = self.engine.label(user, item_id, label, comment)
        return 201, {"status": "ok", "label_id": out["label_id"], "item": item_id}

    def _answer_spans(self, action: str, annotation: dict, item_id: str) -> list[dict]:
        """The spans of a Label Studio annotation (its `labels` results) at the pool item's
        character offsets; no result at all is an answer ("no entities")."""
        from labeling.spans.formats import has_span_results, spans_of_results

        results = annotation.get("result") or []
        if results and not has_span_results(annotation):
            raise LabelloopError(f"{action}: annotation {annotation.get('id')} has no labels "
                                 "result (this webapp records spans: a <Labels> config)")
        self._item_index(self.cfg.id_column or self.cfg.text_column or "text")
        row = self._row(item_id) or {}
        text = row.get(self.cfg.text_column or "text")
        spans = spans_of_results(annotation, text if isinstance(text, str) else None,
                                 f"{action}: annotation {annotation.get('id')}")
        return [{k: s[k] for k in ("start", "end", "label")} for s in spans]

    def metrics(self) -> dict:
        return {"webapp": self.cfg.webapp, "model_version": self.model_version(),
                "stats": self.engine.stats()}


def _text(value: Any) -> str:
    from labeling.datatypes import canonical_id

    return canonical_id(value) or ""
