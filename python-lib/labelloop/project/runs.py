"""Run records (`ll_runs` rows): every recipe, step and scenario run, its status and error.

The one owner of run records: starting, ending, progress, reading and closing runs.
`labelloop.scenarios.runs` only adapts these to a `Project` for the scenario code. A writing
function takes the engine (a write transaction of its own: the CLI, recipes) or the project's
`Database` (through its writer thread: code running in a server process).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ..errors import NotFoundError
from .db import runs_table, utc_iso
from .writer import Database, writing

Writer = sa.Engine | Database


def start_run(engine: Writer, kind: str, name: str, details: dict | None = None) -> int:
    """Record the start of a run; returns its id."""
    def insert(conn: sa.Connection) -> int:
        res = conn.execute(sa.insert(runs_table).values(
            kind=kind, name=name, started=dt.datetime.now(dt.UTC), status="RUNNING",
            details=details or {}))
        return int(res.inserted_primary_key[0])

    return writing(engine, insert)


def end_run(engine: Writer, run_id: int, status: str, error: str | None = None,
            details: dict | None = None) -> None:
    """Record the end of a run (status SUCCESS or FAILED)."""
    values: dict[str, Any] = {"ended": dt.datetime.now(dt.UTC), "status": status, "error": error}

    def update(conn: sa.Connection) -> None:
        if details:
            values["details"] = _merged_details(conn, run_id, details)
        conn.execute(sa.update(runs_table).where(runs_table.c.id == run_id).values(**values))

    writing(engine, update)


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
    return [_record(r) for r in rows]


def count_runs(engine: sa.Engine, kind: str, name: str, up_to: int | None = None) -> int:
    """How many runs of `kind` `name` were recorded (up to run id `up_to` when given)."""
    t = runs_table
    q = sa.select(sa.func.count()).select_from(t).where(t.c.kind == kind, t.c.name == name)
    if up_to is not None:
        q = q.where(t.c.id <= up_to)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def update_run_details(engine: Writer, run_id: int, details: dict) -> None:
    """Merge `details` into a run record while it runs (so others see its progress)."""
    writing(engine, lambda conn: conn.execute(
        sa.update(runs_table).where(runs_table.c.id == run_id)
        .values(details=_merged_details(conn, run_id, details))))


def get_run(engine: sa.Engine, run_id: int) -> dict:
    """One run record by id."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"no run with id {run_id}")
    return _record(row)


def close_interrupted_runs(engine: Writer, run_id: int, message: str = "interrupted") -> int:
    """End a scenario run left RUNNING, and the recipe runs it started, as FAILED; how many."""
    reader = engine.engine if isinstance(engine, Database) else engine
    run = get_run(reader, run_id)
    closed = 0
    if run["status"] == "RUNNING":
        end_run(engine, run_id, "FAILED", message)
        closed += 1
    origin = f"scenario {run['name']} (run {run_id})"
    t = runs_table
    with reader.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.details).where(
            (t.c.kind == "recipe") & (t.c.status == "RUNNING") & (t.c.id > run_id))).all()
    for row in rows:
        if (row.details or {}).get("trigger") == origin:
            end_run(engine, row.id, "FAILED", message)
            closed += 1
    return closed


def _merged_details(conn: sa.Connection, run_id: int, details: dict) -> dict:
    """The run's stored details with `details` merged over them (read in `conn`)."""
    old = conn.execute(sa.select(runs_table.c.details)
                       .where(runs_table.c.id == run_id)).scalar() or {}
    return {**old, **details}


def _record(row: Any) -> dict:
    """A run row as JSON-able data: its times as UTC ISO strings."""
    out = dict(row)
    for key in ("started", "ended"):
        if out[key] is not None:
            out[key] = utc_iso(out[key])
    return out
