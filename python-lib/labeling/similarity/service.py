"""The similarity labeler of one webapp instance: questions, answers, tuning, saving.

The routes (`labeling.similarity.api`) call this small facade:

- `questions(user, size)`: the next queries, each with its top-K candidates from a random
  match pool of the indexed items under the newest tuned version, chosen actively
  (`labeling.similarity.questions`) and recorded in the database.
- `answer(user, body)`: checks the answer against the stored question, marks it answered and
  appends its pairs to the pairs dataset in one transaction, then wakes the trainer.
- the trainer (a background thread) fits a new projection on every answered question and
  stores it as the next version; questions use it as soon as it exists.
- `save_model(user)`: the base + the newest projection as a new saved-model version (skops).
- `neighbors(item_id, k)`, `stats()`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.neighbors import NearestNeighbors

from labelloop.errors import ConfigError, ConflictError, LabelloopError

from ..datatypes import BadItemId, data_type
from ..training import TRUSTED_TYPES, set_folder_root
from .embedding import base_pipeline, tuned_pipeline
from .index import PoolIndex
from .questions import check_answer, choose_questions
from .settings import SimilarityConfig
from .store import questions_table, saves_table
from .tuning import Answer, fit_projection
from .versions import TunedVersions

log = logging.getLogger(__name__)

REISSUE_SECONDS = 600.0  # an unanswered question keeps its query from others this long
MAX_QUESTIONS = 20
MAX_K = 100
ANSWERED, IGNORED = "ANSWERED", "IGNORED"


def pairs_schema() -> list[dict]:
    return [{"name": "query_id", "type": "string"}, {"name": "candidate_id", "type": "string"},
            {"name": "relation", "type": "bigint"}, {"name": "annotator", "type": "string"},
            {"name": "date", "type": "date"}, {"name": "session", "type": "bigint"},
            {"name": "model_version", "type": "bigint"},
            {"name": "question_id", "type": "string"}]


class SimilarityService:
    """State in the database; the pool's vectors and the trainer in this process."""

    def __init__(self, project: Any, cfg: SimilarityConfig, background: bool = True,
                 fit_rows: int | None = None, chunk_rows: int | None = None):
        self.project = project
        self.cfg = cfg
        self.engine = project.engine
        self.dtype = data_type(cfg.engine_config(), project)
        self._check_pairs_schema()
        self._embedding_model = self._load_embedding_model()
        kwargs: dict[str, Any] = {}
        if fit_rows:
            kwargs["fit_rows"] = fit_rows
        if chunk_rows:
            kwargs["chunk_rows"] = chunk_rows
        self.index = PoolIndex(self.dtype, self._make_base, total=self._pool_size, **kwargs)
        self._lock = threading.Lock()
        self.versions = TunedVersions(self.engine, cfg.webapp)
        self._z_cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._nn_cache: tuple[tuple[int, int], NearestNeighbors] | None = None
        self._train_wanted = threading.Event()
        self._trainer: threading.Thread | None = None
        self._train_lock = threading.Lock()
        self.train_seconds: list[float] = []
        self.background = background
        if background:
            self.index.start(f"similarity-index-{cfg.webapp}")
            self.request_training()  # answers left untrained by a stopped server

    def _write(self, fn: Any, background: bool = False) -> Any:
        """Run `fn(conn)` in the project's writer thread (one writer per server process)."""
        return self.project.db.execute_write_fn(fn, background=background)

    # ------------------------------------------------------------------ setup
    def _check_pairs_schema(self) -> None:
        ds = self.project.dataset(self.cfg.pairs_ds, create=True)
        if ds.exists():
            have = {c["name"] for c in ds.schema}
            missing = [c["name"] for c in pairs_schema() if c["name"] not in have]
            if missing:
                raise ConfigError(
                    f"dataset {self.cfg.pairs_ds!r} exists without the pairs column(s) "
                    f"{', '.join(missing)}: choose another pairs dataset (pairs_ds) or drop it")

    def _load_embedding_model(self) -> Any:
        name = self.cfg.embedding_model
        if not name:
            return None
        model = self.project.model(name)
        pipeline = model.load(trusted=TRUSTED_TYPES)
        if not hasattr(pipeline, "transform"):
            raise ConfigError(f"saved model {name!r} has no transform(): give an embedding "
                              "model (e.g. one saved by a similarity webapp), not a classifier")
        return pipeline

    def _folder_root(self) -> str | None:
        if self.dtype.from_folder:
            return str(self.project.folder(self.cfg.unlabeled).root)
        return None

    def _make_base(self, sample: pd.DataFrame) -> Any:
        if self._embedding_model is not None:
            set_folder_root(self._embedding_model, self._folder_root())
            return self._embedding_model
        exclude = {self.cfg.id_column} if self.cfg.id_column else set()
        text = self.cfg.engine_config().text_column or self.cfg.text_column
        return base_pipeline(self.cfg.data_type, sample, text_column=text, exclude=exclude,
                             root=self._folder_root(), seed=self.cfg.seed)

    def _pool_size(self) -> int:
        if self.dtype.from_folder:
            return len(self.dtype._files())
        return self.project.dataset(self.cfg.unlabeled).count()

    # ------------------------------------------------------------------ versions
    def current(self) -> tuple[int, np.ndarray | None, float | None]:
        """(version, matrix or None for the base, distance threshold) of the newest version."""
        return self.versions.current()

    def _embedded(self) -> tuple[int, np.ndarray]:
        """(version, tuned vectors of every indexed item)."""
        version, A, _ = self.current()
        X = self.index.vectors()
        key = (version, X.shape[0])
        cached = self._z_cache
        if cached is not None and cached[0] == key:
            return version, cached[1]
        Z = X if A is None or X.shape[0] == 0 else X @ A.T
        self._z_cache = (key, Z)
        return version, Z

    # ------------------------------------------------------------------ questions
    def _require_items(self, n: int = 2) -> None:
        if self.index.error:
            raise LabelloopError(f"the pool could not be indexed: {self.index.error}")
        if not self.background and self.index.count() < n and not self.index.done:
            self.index.run()

    def _taken_queries(self) -> tuple[set[str], int]:
        """Queries not to ask now (answered, or issued lately), and how many were issued."""
        t = questions_table
        since = time.time() - REISSUE_SECONDS
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.query_id).where(
                t.c.app == self.cfg.webapp,
                sa.or_(t.c.answered.is_not(None), t.c.issued > since))).scalars().all()
            issued = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.app == self.cfg.webapp)).scalar_one()
        return set(rows), int(issued)

    def questions(self, user: str, size: int | None = None) -> dict:
        """Issue up to `size` new questions to `user` (recorded in the database); `size` from 1
        to MAX_QUESTIONS (the `GET questions` route's schema)."""
        size = self.cfg.examples_per_view if size is None else size
        self._require_items()
        version, Z = self._embedded()
        n = Z.shape[0]
        out: list[dict] = []
        if n >= 2:
            out = self._choose(user, size, version, Z)
        return {"questions": out, "model_version": version, "stats": self.stats()}

    def _choose(self, user: str, size: int, version: int, Z: np.ndarray) -> list[dict]:
        n = Z.shape[0]
        taken, issued = self._taken_queries()
        # Seeded by the number of questions issued: the same choices in every process and run.
        rng = np.random.default_rng([self.cfg.seed, issued])
        free = np.array([i for i in range(n) if self.index.ids[i] not in taken], dtype=np.int64) \
            if len(taken) else np.arange(n)
        if free.size == 0:
            return []
        _, _, threshold = self.current()
        chosen = choose_questions(Z, free, min(self.cfg.top_k, n - 1), size,
                                  self.cfg.match_pool, threshold, rng)
        now = time.time()
        questions, rows = [], []
        for choice in chosen:
            q, cands = choice.query, choice.candidates
            qid = uuid.uuid4().hex
            cand_ids = [self.index.ids[c] for c, _ in cands]
            rows.append({"id": qid, "app": self.cfg.webapp, "annotator": user,
                         "query_id": self.index.ids[q], "candidates": cand_ids,
                         "scores": [round(s, 6) for _, s in cands], "model_version": version,
                         "issued": now, "n_pos": 0, "n_neg": 0})
            questions.append({
                "question_id": qid, "uncertainty": round(choice.uncertainty, 6),
                "query": {"id": self.index.ids[q], "data": self._render(q)},
                "candidates": [{"id": self.index.ids[c], "data": self._render(c),
                                "score": round(s, 6)} for c, s in cands]})
        if rows:
            self._write(lambda conn: conn.execute(sa.insert(questions_table), rows))
        return questions

    def _render(self, i: int) -> dict:
        return self.dtype.render(self.index.ids[i], self.index.row(i))

    # ------------------------------------------------------------------ answers
    def answer(self, user: str, body: Any) -> dict:
        """Record an answer: its pairs appended, the question closed, the trainer woken."""
        qid, ignored, pos, neg = check_answer(body)
        t = questions_table
        with self.engine.connect() as conn:
            q = conn.execute(sa.select(t).where(t.c.id == qid, t.c.app == self.cfg.webapp)
                             ).mappings().first()
        if q is None:
            raise LabelloopError(f"unknown question_id {qid!r}: answer a question of this "
                                 "webapp's GET questions")
        if q["answered"] is not None:
            raise ConflictError(f"question {qid!r} was already answered ({q['status']}): "
                                "fetch new questions")
        allowed = set(q["candidates"])
        stray = [c for c in pos + neg if c not in allowed]
        if stray:
            raise LabelloopError(f"candidate(s) {', '.join(map(repr, stray))} are not in question "
                                 f"{qid!r} (its candidates: {', '.join(q['candidates'])})")
        now = time.time()
        status = IGNORED if ignored else ANSWERED
        date = dt.datetime.now(dt.UTC)

        def record(conn: sa.Connection) -> list[dict]:
            done = conn.execute(sa.update(t).where(t.c.id == qid, t.c.answered.is_(None)).values(
                answered=now, status=status, positives=pos, negatives=neg, n_pos=len(pos),
                n_neg=len(neg), annotator=user))
            if done.rowcount != 1:
                raise ConflictError(f"question {qid!r} was already answered: fetch new questions")
            session = self._session(conn)
            rows = [{"query_id": q["query_id"], "candidate_id": c, "relation": rel,
                     "annotator": user, "date": date, "session": session,
                     "model_version": int(q["model_version"]), "question_id": qid}
                    for cands, rel in ((pos, self.cfg.positive_value),
                                       (neg, self.cfg.negative_value)) for c in cands]
            if rows:
                ds = self.project.dataset(self.cfg.pairs_ds, create=True)
                frame = pd.DataFrame(rows, columns=[c["name"] for c in pairs_schema()])
                ds.append(frame, conn=conn)
            return rows

        rows = self._write(record)
        if rows:
            self.request_training()
        return {"pairs": len(rows), "stats": self.stats()}

    def _session(self, conn: sa.Connection) -> int:
        """The pairs' session: how many times this webapp's model was saved before."""
        t = saves_table
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.app == self.cfg.webapp)).scalar_one())

    # ------------------------------------------------------------------ training
    def request_training(self) -> None:
        """Wake the trainer (a background thread) or, without background, train now."""
        if not self.background:
            self.train_once()
            return
        self._train_wanted.set()
        with self._train_lock:
            if self._trainer is None or not self._trainer.is_alive():
                self._trainer = threading.Thread(target=self._train_loop, daemon=True,
                                                 name=f"similarity-train-{self.cfg.webapp}")
                self._trainer.start()

    def _train_loop(self) -> None:
        while self._train_wanted.is_set():
            self._train_wanted.clear()
            try:
                if not self.index.wait(timeout=600):
                    return
                self.train_once()
            except Exception:
                log.exception("tuning the embedding of %s failed", self.cfg.webapp)

    def _answered(self) -> list[dict]:
        t = questions_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.query_id, t.c.positives, t.c.negatives).where(
                t.c.app == self.cfg.webapp, t.c.status == ANSWERED).order_by(t.c.answered)
            ).mappings().all()
        return [dict(r) for r in rows]

    def pending(self) -> bool:
        """Whether answers exist that the newest version was not trained on (the spinner)."""
        t = questions_table
        with self.engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.app == self.cfg.webapp, t.c.status == ANSWERED)).scalar_one()
            latest = self.versions.latest(conn)
        return int(n) > (latest["n_questions"] if latest else 0)

    def train_once(self) -> int | None:
        """Fit a new version on every answered question if one is due; its number or None."""
        started = time.monotonic()
        self._require_items()
        if self.index.count() < 2:
            return None  # nothing indexed yet: the trainer is woken again later
        answered = self._answered()
        latest = self.versions.latest()
        if len(answered) <= (latest["n_questions"] if latest else 0):
            return None
        X = self.index.vectors()
        answers = []
        for a in answered:
            qi = self.index.position(a["query_id"])
            if qi is None:
                continue
            pos = [p for p in (self.index.position(c) for c in a["positives"] or []) if p is not None]
            neg = [p for p in (self.index.position(c) for c in a["negatives"] or []) if p is not None]
            answers.append(Answer(qi, pos, neg))
        fit = fit_projection(X, answers, self.cfg.epochs)
        seconds = time.monotonic() - started
        version = self._write(lambda conn: self.versions.add(conn, len(answered), fit, seconds),
                              background=True)
        if version is None:
            return None
        self.versions.forget()
        self.train_seconds.append(seconds)
        log.info("%s: tuned version %d on %d questions (%d pairs) in %.2f s", self.cfg.webapp,
                 version, len(answered), fit.pairs, seconds)
        return version

    # ------------------------------------------------------------------ model, neighbours
    def save_model(self, user: str) -> dict:
        """Write the base + the newest projection as a new version of the saved model."""
        self._require_items()
        if not self.index.wait(timeout=60):
            raise LabelloopError("the pool is not indexed yet: save again in a moment")
        version, A, _ = self.current()
        dim = self.index.vectors().shape[1]
        pipeline = tuned_pipeline(self.index.base, A if A is not None else np.eye(dim))
        out_dim = int(pipeline.steps[-1][1].n_components_)
        with self.engine.connect() as conn:
            n_pairs = conn.execute(sa.select(sa.func.coalesce(
                sa.func.sum(questions_table.c.n_pos + questions_table.c.n_neg), 0)).where(
                questions_table.c.app == self.cfg.webapp)).scalar_one()
        model = self.project.model(self.cfg.model_name, create=True)
        meta = {"kind": "embedding", "data_type": self.cfg.data_type, "webapp": self.cfg.webapp,
                "pool": self.cfg.unlabeled, "tuned_version": version, "rows": int(n_pairs),
                "dim": out_dim,
                "base": self.cfg.embedding_model or "built-in"}

        def record(conn: sa.Connection) -> None:
            conn.execute(sa.insert(saves_table).values(
                app=self.cfg.webapp, model=self.cfg.model_name, model_version=saved,
                tuned_version=version, annotator=user, created=time.time()))

        saved = model.save(pipeline, meta, db=self.project.db)
        self._write(record)
        return {"model": self.cfg.model_name, "version": saved, "tuned_version": version}

    def neighbors(self, item_id: Any, k: int = 10) -> dict:
        """The item's k nearest indexed items under the newest version (k from 1 to MAX_K:
        the `GET neighbors` route's schema)."""
        try:
            item_id = self.dtype.check_id(item_id)
        except BadItemId as exc:
            raise LabelloopError(str(exc)) from None
        self._require_items()
        i = self.index.position(item_id)
        if i is None:
            where = "" if self.index.done else " (the pool is still being indexed: " \
                f"{self.index.count()} of {self.index.total} items so far)"
            raise LabelloopError(f"unknown item id {item_id!r}{where}")
        version, Z = self._embedded()
        key = (version, Z.shape[0])
        cached = self._nn_cache
        if cached is None or cached[0] != key:
            nn = NearestNeighbors(algorithm="brute").fit(Z)
            self._nn_cache = (key, nn)
        else:
            nn = cached[1]
        kk = min(k + 1, Z.shape[0])
        dist, idx = nn.kneighbors(Z[i:i + 1], kk)
        out = [{"id": self.index.ids[j], "score": round(float(1.0 - d * d / 2.0), 6)}
               for d, j in zip(dist[0], idx[0], strict=True) if j != i][:k]
        return {"id": item_id, "neighbors": out, "model_version": version}

    def stats(self, user: str | None = None) -> dict:
        """Answered questions, pairs, saves, the model version and how much is indexed."""
        t = questions_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(
                sa.func.count().filter(t.c.status == ANSWERED),
                sa.func.count().filter(t.c.status == IGNORED),
                sa.func.coalesce(sa.func.sum(t.c.n_pos), 0),
                sa.func.coalesce(sa.func.sum(t.c.n_neg), 0),
            ).where(t.c.app == self.cfg.webapp)).one()
            saved = conn.execute(sa.select(sa.func.count()).select_from(saves_table).where(
                saves_table.c.app == self.cfg.webapp)).scalar_one()
            latest = self.versions.latest(conn)
        answered, ignored, positives, negatives = (int(v) for v in row)
        trained_on = latest["n_questions"] if latest else 0
        return {"questions": answered + ignored, "answered": answered, "ignored": ignored,
                "positives": positives, "negatives": negatives, "saved": int(saved),
                "model_version": latest["version"] if latest else 0,
                "training": answered > trained_on, "indexed": self.index.count(),
                "total": max(self.index.total, self.index.count()),
                "indexing_done": self.index.done, "index_error": self.index.error}

    def config(self) -> dict:
        c = self.cfg
        return {"data_type": c.data_type, "content_type": c.content_type,
                "field": c.field or c.text_column or ("path" if self.dtype.from_folder else
                                                       "all columns"),
                "examples_per_view": c.examples_per_view, "top_k": c.top_k,
                "positive_value": c.positive_value, "negative_value": c.negative_value,
                "epochs": c.epochs, "match_pool": c.match_pool, "model_name": c.model_name,
                "pairs_ds": c.pairs_ds, "embedding_model": c.embedding_model}
