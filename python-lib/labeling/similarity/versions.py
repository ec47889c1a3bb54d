"""The tuned versions of one similarity webapp, as stored in `sim_versions`.

Each version is a projection matrix fitted on the first `n_questions` answered questions
(`labeling.similarity.tuning`) with its distance threshold. Versions are read from the
database, so every server process uses the newest one; `current()` reads it at most every
`VERSION_CHECK_SECONDS`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from .store import versions_table

VERSION_CHECK_SECONDS = 0.5


class TunedVersions:
    """Reading and adding the tuned versions of the webapp `app`."""

    def __init__(self, engine: sa.Engine, app: str):
        self.engine = engine
        self.app = app
        self._cache: tuple[float, int, np.ndarray | None, float | None] | None = None

    def latest(self, conn: sa.Connection | None = None) -> dict | None:
        """The newest version's row, None before the first."""
        t = versions_table
        q = sa.select(t).where(t.c.app == self.app).order_by(t.c.version.desc()).limit(1)
        if conn is None:
            with self.engine.connect() as c:
                row = c.execute(q).mappings().first()
        else:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def current(self) -> tuple[int, np.ndarray | None, float | None]:
        """(version, matrix or None for the base, distance threshold) of the newest version."""
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < VERSION_CHECK_SECONDS:
            return cached[1], cached[2], cached[3]
        row = self.latest()
        if row is None:
            out = (0, None, None)
        elif cached is not None and cached[1] == row["version"]:
            out = (cached[1], cached[2], cached[3])
        else:
            rows = int(row["dim"])  # the tuned size; the base size is the column count
            out = (int(row["version"]), np.frombuffer(row["matrix"], dtype=np.float64)
                   .reshape(rows, -1).copy(), row["threshold"])
        self._cache = (time.monotonic(), *out)
        return out

    def add(self, conn: sa.Connection, n_questions: int, fit: Any, seconds: float) -> int | None:
        """Store `fit` (a `tuning.FitResult`) as the next version, in the writer's
        transaction `conn`; None if a version on as many questions exists already."""
        now_latest = self.latest(conn)
        if now_latest is not None and now_latest["n_questions"] >= n_questions:
            return None  # another process trained on as much already
        version = (now_latest["version"] if now_latest else 0) + 1
        matrix = np.ascontiguousarray(fit.matrix, dtype=np.float64).tobytes()
        conn.execute(sa.insert(versions_table).values(
            app=self.app, version=version, created=time.time(),
            n_questions=n_questions, n_pairs=fit.pairs, dim=fit.matrix.shape[0],
            matrix=matrix, threshold=fit.threshold, seconds=seconds))
        return version

    def forget(self) -> None:
        """Read the newest version again at the next `current()` (a version was added)."""
        self._cache = None
