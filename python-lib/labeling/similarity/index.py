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

from .embedding import embed

log = logging.getLogger(__name__)

FIT_ROWS = 1000
CHUNK_ROWS = 500


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

    def _run(self) -> None:
        if self._total_fn is not None:
            self.total = int(self._total_fn())
        pending_ids: list[str] = []
        pending_rows: list[str] = []
        seen: set[str] = set()
        for ids, lines in self.dtype.iter_items():
            for item_id, line in zip(ids, lines, strict=True):
                if item_id is None or item_id in seen:
                    continue
                seen.add(item_id)
                pending_ids.append(item_id)
                pending_rows.append(line)
            need = self.fit_rows if self.base is None else self.chunk_rows
            while len(pending_ids) >= need:
                self._add(pending_ids[:need], pending_rows[:need])
                del pending_ids[:need], pending_rows[:need]
                need = self.chunk_rows
        if pending_ids:
            self._add(pending_ids, pending_rows)
        if self.base is None:
            raise LabelloopError("the pool is empty: add items to it, then reload the page")
        self.total = self._n

    def _frame(self, rows: list[str]) -> pd.DataFrame:
        return self.dtype.features([json.loads(r) for r in rows])

    def _add(self, ids: list[str], rows: list[str]) -> None:
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
