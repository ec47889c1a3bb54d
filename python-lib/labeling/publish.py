"""Publishing a ranking: the queries dataset, its session and the key a queue is built for.

A ranking is published in one call (`publish_ranking`): the queries dataset is replaced, the
project variable `"<queries dataset name>_session"` (`session_variable`) is incremented and a
`QUERIES_UPDATED` webhook event is recorded, all in one write transaction, so a webapp never
sees the new rows without their session number. Every writer of queries uses it: the Query
Sampler and the `ml-backend-predict` recipe.

The engine follows sessions by a `SessionKey`: the pool, the queries dataset, its generation
and the session number a queue was built from.

This module imports neither scikit-learn nor the engine: a server's first batch should not
wait for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelloop.project import Dataset, Project

# Rows above which the queries are stored column-wise (chunk files written before the lock).
WRITE_ROWS = 100_000


def session_variable(queries_dataset: str) -> str:
    """The project variable counting the rankings published to a queries dataset."""
    return f"{queries_dataset}_session"


@dataclass(frozen=True)
class SessionKey:
    """What a labeling queue is built from: the pool, and the queries dataset's generation and
    session (`dataset` None: no queries dataset, the pool's own order)."""

    pool: str
    dataset: str | None = None
    generation: int = 0
    session: int = 0

    @property
    def text(self) -> str:
        """The stored form (`lb_apps.session_key`): `pool|dataset:generation:session`."""
        if self.dataset is None:
            return f"{self.pool}|-"
        return f"{self.pool}|{self.dataset}:{self.generation}:{self.session}"

    @classmethod
    def parse(cls, text: str) -> SessionKey:
        """The key a stored `text` stands for."""
        pool, _, rest = text.partition("|")
        if rest == "-":
            return cls(pool)
        dataset, generation, session = rest.rsplit(":", 2)
        return cls(pool, dataset, int(generation), int(session))

    def __str__(self) -> str:
        return self.text


def publish_ranking(project: Project, queries: Dataset, ranking: pd.DataFrame,
                    model_version: Any = None) -> int:
    """Publish `ranking` (rows in serving order, best first) as `queries`; its session number.

    The rows are written whatever their columns (the pool's, `uncertainty`, `prediction`,
    ...); a `query_rank` column (0, 1, ...) is added when missing. The rows are staged
    before the write lock (chunk files for a large ranking), then swapped in, the session
    incremented and `QUERIES_UPDATED` (dataset, session, rows, `model_version`) recorded in
    one transaction.
    """
    if "query_rank" not in ranking.columns:
        ranking = ranking.assign(query_rank=np.arange(len(ranking), dtype=np.int64))
    storage = "columns" if len(ranking) > WRITE_ROWS else None
    with queries.prepare(ranking, storage=storage) as prepared:
        with project.write_transaction() as conn:
            prepared.commit(conn)
            session = int(project.variables.incr(session_variable(queries.name), conn=conn))
            project.webhooks.emit(conn, "QUERIES_UPDATED", {"queries": {
                "dataset": queries.name, "session": session, "rows": len(ranking),
                "model_version": model_version}})
    return session
