"""The ANNOTATION_* webhook events of a label, in Label Studio's payload shape."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from .labelstudio import completed_by_of


def emit_annotation(engine: Any, conn: sa.Connection, created: bool, label_id: int,
                    item_id: str, user: str, status: str, stored: str | None,
                    comment: str | None, row_json: str | None = None) -> None:
    """Queue ANNOTATION_CREATED / ANNOTATION_UPDATED in the label's transaction."""
    hooks = getattr(engine.project, "webhooks", None)  # a stand-in project may have none
    event = "ANNOTATION_CREATED" if created else "ANNOTATION_UPDATED"
    if hooks is None or not hooks.wanted(event):
        return
    cfg = engine.cfg
    now = dt.datetime.now(dt.UTC).isoformat()
    to_name = cfg.text_column or ("image" if cfg.data_type == "image" else
                                  "audio" if cfg.data_type == "sound" else "item")
    if cfg.kind == "spans":  # Label Studio's `labels` results: one per span, with its text
        text = str((json.loads(row_json) if row_json else {}).get(to_name) or "")
        result = [{"from_name": cfg.label_col, "to_name": to_name, "type": "labels",
                   "value": {"start": s["start"], "end": s["end"],
                             "text": text[s["start"]:s["end"]], "labels": [s["label"]]}}
                  for s in (json.loads(stored) if stored is not None else [])]
    else:
        labels: list[Any] = []
        if stored is not None:
            labels = json.loads(stored) if cfg.multi_label else [stored]
        result = [{"from_name": cfg.label_col, "to_name": to_name, "type": "choices",
                   "value": {"choices": labels}}] if labels else []
    hooks.emit(conn, event, {
        "annotation": {"id": label_id, "task": item_id, "result": result,
                       "was_cancelled": status == "SKIPPED", "completed_by": completed_by_of(user),
                       "annotator": user, "updated_at": now, "comment": comment},
        "task": {"id": item_id, "data": json.loads(row_json) if row_json else {}},
        "project": {"webapp": cfg.webapp, "title": cfg.webapp},
    })
