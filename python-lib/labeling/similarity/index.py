"""The pool, embedded in the background in chunks: questions start from what is indexed.

`PoolIndex` walks the pool in its order (the labeling engine's data types give ids and rows),
fits the base embedding on the first `fit_rows` items (the same items in every process, so
every process gets the same base), then embeds the pool `chunk_rows` at a time. Readers get
a consistent snapshot (`count()`, `vectors()`) at any moment: the arrays only grow, and a
reader keeps the array it was handed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.project import normalize

from ..datatypes import canonical_id, content_ids, json_lines
from .embedding import embed

log = logging.getLogger(__name__)

FIT_ROWS = 1000
CHUNK_ROWS = 2000
READ_ROWS = 5000  # dataset rows read at once: the first question needn't wait for a big read


class PoolIndex:
    """Item ids, rows and base vectors of a pool, filled by a background thread."""

    def __init__(self, dtype: Any, make_base: Callable[[pd.DataFrame], Any],
                 fit_rows: int = FIT_ROWS, chunk_rows: int = CHUNK_ROWS,
                 total: Callable[[], int] | None = None):
        self.dtype = dtype
        self.make_base = make_base
        self.fit_rows = fit_rows
        self.chunk_rows = chunk_rows
        self._total_fn = total
        self.base: Any = None
        self.ids: list[str] = []
        self.rows: list[str] = []  # JSON of each item's row
        self.pos: dict[str, int] = {}
        self._X: np.ndarray | None = None
        self._n = 0
        self.total = 0
        self.done = False
        self.error: str | None = None
        self.started = time.monotonic()
        self.first_ready: float | None = None  # seconds from start to the first chunk
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- reading
    def count(self) -> int:
        return self._n

    def vectors(self) -> np.ndarray:
        """The base vectors indexed so far (a view; never changes under the caller)."""
        with self._lock:
            X, n = self._X, self._n
        return np.zeros((0, 0)) if X is None else X[:n]

    def position(self, item_id: str) -> int | None:
        i = self.pos.get(item_id)
        return i if i is not None and i < self._n else None

    def row(self, i: int) -> dict:
        return json.loads(self.rows[i])

    def wait(self, timeout: float | None = None, items: int = 1) -> bool:
        """Wait until at least `items` items are indexed (or indexing ended)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._n < items and not self.done and self.error is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._ready.wait(0.05 if left is None else min(0.05, left))
        return self._n >= items

    # ---------------------------------------------------------------- filling
    def start(self, name: str = "similarity-index") -> None:
        self._thread = threading.Thread(target=self._safe_run, name=name, daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Index the whole pool in this thread."""
        self._safe_run()

    def _safe_run(self) -> None:
        try:
            self._run()
        except LabelloopError as exc:
            self.error = str(exc)
            log.error("indexing the pool failed: %s", exc)
        except Exception as exc:  # reported on the page and in stats
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("indexing the pool failed")
        finally:
            self.done = True
            self._ready.set()

    def _chunks(self):
        """(ids, row JSON lines, features frame) of the pool in order, a few thousand at a time.

        Dataset rows are read here in small chunks (ids as the labeling data types give them)
        and embedded from the typed frame directly; folders go through the data type.
        """
        dtype = self.dtype
        if dtype.from_folder:
            for ids, lines in dtype.iter_items():
                yield ids, lines, pd.DataFrame({"path": ids})
            return
        ds = dtype._pool()
        schema = ds.schema
        id_column = dtype.cfg.id_column
        for chunk in ds.iter_chunks(chunksize=READ_ROWS, columns=[c["name"] for c in schema]):
            frame = normalize(chunk, schema).reset_index(drop=True)
            lines = json_lines(frame)
            ids = ([canonical_id(v) for v in frame[id_column].tolist()] if id_column
                   else content_ids(lines))
            yield ids, lines, frame

    def _run(self) -> None:
        if self._total_fn is not None:
            self.total = int(self._total_fn())
        seen: set[str] = set()
        pending: list[tuple[list[str], list[str], pd.DataFrame]] = []
        n_pending = 0
        for ids, lines, frame in self._chunks():
            keep = []
            for k, item_id in enumerate(ids):
                if item_id is not None and item_id not in seen:
                    seen.add(item_id)
                    keep.append(k)
            if len(keep) < len(ids):
                ids = [ids[k] for k in keep]
                lines = [lines[k] for k in keep]
                frame = frame.iloc[keep].reset_index(drop=True)
            pending.append((ids, lines, frame))
            n_pending += len(ids)
            need = self.fit_rows if self.base is None else self.chunk_rows
            while n_pending >= need:
                self._take(pending, need)
                n_pending -= need
                need = self.chunk_rows
        if n_pending:
            self._take(pending, n_pending)
        if self.base is None:
            raise LabelloopError("the pool is empty: add items to it, then reload the page")
        self.total = self._n

    def _take(self, pending: list, count: int) -> None:
        """Index the first `count` pending items."""
        ids: list[str] = []
        lines: list[str] = []
        frames = []
        while count > 0:
            p_ids, p_lines, p_frame = pending[0]
            take = min(count, len(p_ids))
            ids += p_ids[:take]
            lines += p_lines[:take]
            frames.append(p_frame.iloc[:take])
            if take == len(p_ids):
                pending.pop(0)
            else:
                pending[0] = (p_ids[take:], p_lines[take:], p_frame.iloc[take:])
            count -= take
        self._add(ids, lines, pd.concat(frames, ignore_index=True))

    def _add(self, ids: list[str], rows: list[str], frame: pd.DataFrame | None = None) -> None:
        if frame is None:
            frame = self._frame(rows)
        if self.base is None:
            self.base = self.make_base(frame)
        vecs = embed(self.base, frame)
        with self._lock:
            n = self._n
            if self._X is None or self._X.shape[0] < n + len(ids):
                cap = max(n + len(ids), 2 * (0 if self._X is None else self._X.shape[0]), 1024)
                grown = np.zeros((cap, vecs.shape[1]))
                if self._X is not None:
                    grown[:n] = self._X[:n]
                self._X = grown
            self._X[n:n + len(ids)] = vecs
            for k, item_id in enumerate(ids):
                self.pos[item_id] = n + k
            self.ids.extend(ids)
            self.rows.extend(rows)
            self._n = n + len(ids)
            self.total = max(self.total, self._n)
        if self.first_ready is None:
            self.first_ready = time.monotonic() - self.started
        self._ready.set()
