"""Run records: every recipe, step and scenario run with its status and error."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .db import runs_table, utc_iso, write_transaction


def start_run(engine: sa.Engine, kind: str, name: str, details: dict | None = None) -> int:
    """Record the start of a run; returns its id."""
    with write_transaction(engine) as conn:
        res = conn.execute(sa.insert(runs_table).values(
            kind=kind, name=name, started=dt.datetime.now(dt.UTC), status="RUNNING",
            details=details or {}))
        return int(res.inserted_primary_key[0])


def end_run(engine: sa.Engine, run_id: int, status: str, error: str | None = None,
            details: dict | None = None) -> None:
    """Record the end of a run (status SUCCESS or FAILED)."""
    values: dict[str, Any] = {"ended": dt.datetime.now(dt.UTC), "status": status, "error": error}
    with write_transaction(engine) as conn:
        if details:
            old = conn.execute(sa.select(runs_table.c.details)
                               .where(runs_table.c.id == run_id)).scalar() or {}
            values["details"] = {**old, **details}
        conn.execute(sa.update(runs_table).where(runs_table.c.id == run_id).values(**values))


def list_runs(engine: sa.Engine, kind: str | None = None, name: str | None = None,
              limit: int = 50) -> list[dict]:
    """Runs, newest first."""
    t = runs_table
    q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if kind:
        q = q.where(t.c.kind == kind)
    if name:
        q = q.where(t.c.name == name)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        for key in ("started", "ended"):
            if d[key] is not None:
                d[key] = utc_iso(d[key])
        out.append(d)
    return out
