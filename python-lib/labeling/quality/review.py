"""The review queue: answered items most likely wrong, most suspicious first, and the
reviewer's final label (`GET review`, `POST review`).

An item enters the queue for any of three reasons, each with a score from 0 to 1 (higher:
more suspicious); an item found by several keeps the highest score and every reason:

- **its answers disagree** (at least two answers, agreement < 1 in `lb_consensus`):
  score `1 - agreement` (two answers that differ: 0.5; three with 2 against 1: 0.33);
- **a likely label issue**: a row of the webapp's `label_issues_ds` (the find-label-issues
  recipe's output; id column named as in the consensus dataset) of an item answered now:
  score `1 - quality`, its reason the row's `reason`;
- **the model confidently contradicts the consensus** (`choice` kind): the model's prediction
  for the item in the queue being served (what `batch` suggests, from the queries dataset)
  differs from the consensus label (multi-label: is not in it) with a confidence of at least
  `CONFIDENT`: score = that confidence.

Ties: by item id. Reviewed items (consensus source `reviewed`) leave the queue. Each item
comes with its `data` (as `batch` gives it), every answer with its annotator, the
`consensus` label (with its `agreement` and `source`), the model's `suggestion` (as in
`batch`; else the label issue's suggested label), the `reason` and the `score`.

`POST review` checks the label with the webapp's annotation kind (a 400 naming what is wrong,
nothing written) and makes it the item's consensus through the engine's writer
(`labeling.quality.consensus.record_review`): source `reviewed`, the caller as reviewer.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from labelloop.errors import ConfigError, NotFoundError

from ..annotate import check_user
from ..datatypes import canonical_id
from ..queue import IndexNotReady
from ..store import LABELED, annotations_table, queue_table
from . import consensus
from .consensus import REVIEWED, consensus_table

CONFIDENT = 0.7  # a model prediction at least this confident that contradicts the consensus
ISSUE_COLUMNS = ("given_label", "suggested_label", "quality", "reason", "model_version")


class ReviewQueue:
    """The review queue of one labeling webapp over its engine (`labeling.engine`)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.ctx = engine.ctx
        # The label issues dataset, read again only when it changed (its generation and size).
        self._issues_cache: tuple[Any, dict[str, dict]] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    def _issues(self) -> dict[str, dict]:
        """The label issues dataset's rows by item id (empty without one)."""
        cfg = self.ctx.cfg
        if not cfg.label_issues_ds:
            return {}
        ds = self.ctx.project.dataset(cfg.label_issues_ds, create=True)
        if not ds.exists():
            return {}
        version = f"{ds.generation()}:{ds.count()}"
        with self._lock:
            if self._issues_cache is not None and self._issues_cache[0] == version:
                return self._issues_cache[1]
        key = consensus.item_column(cfg)
        if key not in ds.columns or "quality" not in ds.columns:
            raise ConfigError(f"dataset {cfg.label_issues_ds!r} has no column "
                              f"{key if key not in ds.columns else 'quality'!r} (it has "
                              f"{', '.join(ds.columns)}): point label_issues_ds at the "
                              "find-label-issues recipe's output")
        frame = ds.read(columns=[key, *(c for c in ISSUE_COLUMNS if c in ds.columns)])
        out: dict[str, dict] = {}
        for rec in frame.to_dict("records"):
            item_id = canonical_id(rec.pop(key))
            quality = rec.get("quality")
            if item_id is None or not isinstance(quality, int | float) or math.isnan(quality):
                continue
            out[item_id] = rec
        with self._lock:
            self._issues_cache = (version, out)
        return out

    def _candidates(self, conn: sa.Connection, app: Any) -> dict[str, list[tuple[float, str]]]:
        """Every item in the queue: item id -> [(score, reason)]."""
        ctx = self.ctx
        c = consensus_table
        found: dict[str, list[tuple[float, str]]] = {}
        for r in conn.execute(sa.select(c.c.item_id, c.c.agreement, c.c.n_answers).where(
                c.c.app == ctx.app_id, c.c.source != REVIEWED, c.c.n_answers >= 2,
                c.c.agreement < 1)):
            found.setdefault(r.item_id, []).append(
                (1 - float(r.agreement), f"{r.n_answers} answers disagree "
                                         f"(agreement {float(r.agreement):.2f})"))
        issues = self._issues()
        if issues:
            reviewed = {r[0] for r in conn.execute(sa.select(c.c.item_id).where(
                c.c.app == ctx.app_id, c.c.source == REVIEWED))}
            answered = self._answered(conn, [i for i in issues if i not in reviewed])
            for item_id, rec in issues.items():
                if item_id not in answered:  # reviewed, or no answer now: nothing to review
                    continue
                quality = float(rec["quality"])
                reason = rec.get("reason") if isinstance(rec.get("reason"), str) else None
                found.setdefault(item_id, []).append(
                    (1 - quality, reason or f"a likely label issue (label quality "
                                            f"{quality:.2f})"))
        if ctx.kind.name == "choice" and app.queue_id is not None:
            q = queue_table
            rows = conn.execute(
                sa.select(c.c.item_id, c.c.label, q.c.prediction, q.c.confidence)
                .join(q, sa.and_(q.c.qid == app.queue_id, q.c.item_id == c.c.item_id))
                .where(c.c.app == ctx.app_id, c.c.source != REVIEWED,
                       q.c.confidence >= CONFIDENT, q.c.prediction.is_not(None)))
            for r in rows:
                label = ctx.kind.value(r.label)
                chosen = label if isinstance(label, list) else [label]
                if r.prediction in ctx.kind.types and r.prediction not in chosen:
                    found.setdefault(r.item_id, []).append(
                        (float(r.confidence), f"the model predicts {r.prediction!r} "
                                              f"(confidence {float(r.confidence):.2f})"))
        return found

    def _answered(self, conn: sa.Connection, ids: list[str]) -> set[str]:
        """Those of `ids` with at least one answer now."""
        an = annotations_table
        out: set[str] = set()
        for start in range(0, len(ids), 500):
            out.update(r[0] for r in conn.execute(
                sa.select(an.c.item_id).distinct().where(
                    an.c.item_id.in_(ids[start:start + 500]), an.c.app == self.ctx.app_id,
                    an.c.status == LABELED, ~an.c.owner.startswith("~"))))
        return out

    def items(self, size: int = 20) -> dict:
        """DESIGN's `GET review` answer: the `size` most suspicious items."""
        ctx = self.ctx
        answers_of = self.engine.answers
        with ctx.engine.connect() as conn:
            app = ctx.app(conn)
            found = self._candidates(conn, app)
            ranked = sorted(found.items(), key=lambda kv: (-max(s for s, _ in kv[1]), kv[0]))
            ranked = ranked[:size]
            ids = [item_id for item_id, _ in ranked]
            states = consensus.read(ctx, conn, ids)
            answers = consensus.answers(ctx, conn, ids)
            predictions = {} if app.queue_id is None else {r.item_id: r for r in conn.execute(
                sa.select(queue_table.c.item_id, queue_table.c.prediction,
                          queue_table.c.confidence, queue_table.c.model_version)
                .where(queue_table.c.qid == app.queue_id, queue_table.c.item_id.in_(ids)))}
            rows = {}
            for item_id in ids:
                try:
                    rows[item_id] = answers_of._item_row(conn, app, item_id, None)
                except IndexNotReady:  # not indexed yet: shown without its data
                    rows[item_id] = None
        issues = self._issues()
        out = []
        for item_id, reasons in ranked:
            got = answers.get(item_id, [])
            state = states.get(item_id)
            if state is not None:
                label, agreement, source = state.label, state.agreement, state.source
            elif got:  # answered before the webapp kept a consensus
                label, agreement = consensus.combine(ctx.kind, [s for _a, s in got])
                source = consensus.MAJORITY
            else:
                label = agreement = source = None
            p = predictions.get(item_id)
            suggestion = None if p is None else ctx.kind.suggestion(
                p.prediction, p.confidence, ctx.kind.version(p.model_version))
            issue = issues.get(item_id)
            if suggestion is None and issue is not None and issue.get("suggested_label"):
                suggestion = self._issue_suggestion(issue)
            row = rows.get(item_id)
            reasons = sorted(reasons, key=lambda x: -x[0])
            out.append({
                "id": item_id,
                "data": None if row is None else ctx.dtype.render(item_id, json.loads(row)),
                "answers": [{"annotator": a, "label": ctx.kind.value(s)} for a, s in got],
                "consensus": None if label is None else ctx.kind.value(label),
                "agreement": agreement, "source": source, "suggestion": suggestion,
                "reason": "; ".join(r for _s, r in reasons),
                "score": round(reasons[0][0], 6)})
        return {"items": out, "size": len(found)}

    def _issue_suggestion(self, issue: dict) -> dict | None:
        kind = self.ctx.kind
        value = issue["suggested_label"]
        if kind.name == "choice":
            return kind.suggestion(str(value), None, issue.get("model_version"))
        return kind.suggestion(value if isinstance(value, str) else json.dumps(value), None,
                               issue.get("model_version"))

    # ------------------------------------------------------------------ writing
    def review(self, user: Any, item_id: Any, label: Any, comment: Any = None) -> dict:
        """Record a reviewer's final label for an item: it becomes the consensus (source
        `reviewed`) and the item leaves the queue. The consensus row as the API shows it."""
        ctx = self.ctx
        if not ctx.cfg.consensus_ds:
            raise ConfigError(f"webapp {ctx.cfg.webapp!r} keeps no consensus: set its "
                              "consensus_ds param to record reviews")
        user = check_user(user)
        item_id = ctx.dtype.check_id(item_id)
        answers_of = self.engine.answers

        def write(conn: sa.Connection) -> dict:
            app = ctx.app(conn)
            row = answers_of._item_row(conn, app, item_id, None)
            if row is None:
                raise NotFoundError(f"no item {item_id!r} in {ctx.cfg.unlabeled!r}: use an id "
                                    "from the review queue")
            item = answers_of._item(item_id, row) if ctx.kind.needs_item else None
            stored = ctx.kind.check(label, item)  # refused: a 400, nothing written
            return consensus.record_review(ctx, conn, item_id, stored, user, comment)

        return ctx.write(write)


__all__: Sequence[str] = ("CONFIDENT", "ReviewQueue")
