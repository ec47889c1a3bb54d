"""The project's one SQLAlchemy engine, the host's own tables and write transactions.

Statements straight on the driver (`run`, `pipeline`) are in `driver.py`; the per-process
writer thread (`Database.execute_write_fn`) is in `writer.py`."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event

from .driver import PRELUDE, driver_error, run, send_prelude

metadata = sa.MetaData()

# One row per dataset: its schema (ordered columns with types) and the table holding its rows.
datasets_table = sa.Table(
    "ll_datasets",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("table_name", sa.String(250), nullable=False, unique=True),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("updated", sa.DateTime(timezone=True)),
    # rows: one SQL row per dataset row (small or row-updated datasets);
    # columns: Arrow IPC chunks in ll_dataset_chunks (large datasets written whole).
    sa.Column("storage", sa.String(10), nullable=False, default="rows"),
)

# Column-wise storage: each chunk is an Arrow IPC file of up to CHUNK_ROWS rows, keyed by the
# dataset generation's table name so a replace swaps generations atomically.
dataset_chunks_table = sa.Table(
    "ll_dataset_chunks",
    metadata,
    sa.Column("table_name", sa.String(250), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    # The chunk's Arrow IPC file, relative to the project directory. Why files and not BLOBs:
    # writing 400 MB through SQLite pages costs twice as long as plain files, and freeing a
    # replaced generation is an unlink instead of walking every overflow page.
    sa.Column("file", sa.String(500), nullable=False),
)

variables_table = sa.Table(
    "ll_variables",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON),
)

model_versions_table = sa.Table(
    "ll_model_versions",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
)

runs_table = sa.Table(
    "ll_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # recipe | scenario | step
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),  # RUNNING | SUCCESS | FAILED
    sa.Column("error", sa.Text),
    sa.Column("details", sa.JSON),
    sa.Index("ix_ll_runs_kind_name", "kind", "name", "id"),
)

# One row per scenario being checked or run: the owner keeps it alive with a heartbeat, so a
# crashed process' lock expires and another process can take over (times are epoch seconds).
scenario_locks_table = sa.Table(
    "ll_scenario_locks",
    metadata,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(20), nullable=False),  # checking | running
    sa.Column("run_id", sa.Integer),
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

# What a scenario trigger keeps between checks (`ctx.state`), and how its last checks went.
trigger_states_table = sa.Table(
    "ll_trigger_states",
    metadata,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("trigger", sa.String(250), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("checked", sa.Float),
    sa.Column("fired", sa.Float),
    sa.Column("fire_count", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False, default=0),
)

# API tokens: only the sha256 of a token is stored; the token itself is shown once.
tokens_table = sa.Table(
    "ll_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("role", sa.String(20), nullable=False, server_default="annotator"),
)

# Why FULL: a label acknowledged to an annotator must survive a crash of the machine, not only
# of the process. Override with LABELLOOP_SQLITE_SYNCHRONOUS=NORMAL when speed matters more.
SQLITE_SYNCHRONOUS = "FULL"


# SQLite's own default page size: large datasets live in chunk files, so bigger pages would only
# make each label's commit write more. LABELLOOP_SQLITE_PAGE_SIZE sets it for a new database.
SQLITE_PAGE_SIZE = ""


# The key of the transaction-scoped advisory lock that write transactions take on PostgreSQL.
PG_WRITE_LOCK = 0x4C4C4F50  # "LLOP"


def utc_iso(value: dt.datetime) -> str:
    """ISO 8601 with its offset; the naive datetimes SQLite gives back are UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def sqlite_url(path: os.PathLike | str) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{os.fspath(path)}"


def create_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and explicit BEGIN modes."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        sync = os.environ.get("LABELLOOP_SQLITE_SYNCHRONOUS", SQLITE_SYNCHRONOUS).upper()
        page_size = os.environ.get("LABELLOOP_SQLITE_PAGE_SIZE", SQLITE_PAGE_SIZE)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's begin event emit BEGIN itself, so writers can ask for IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if page_size:  # only takes effect on a new, empty database
                cur.execute(f"PRAGMA page_size={int(page_size)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)

        @event.listens_for(engine, "before_cursor_execute")
        def _on_execute(conn, _cursor, _statement, _params, _context, _many):
            if conn.info.get(PRELUDE):  # the writer's transaction starts with this statement
                raw = conn.connection.driver_connection
                try:
                    with raw.pipeline():
                        send_prelude(conn)
                except conn.dialect.loaded_dbapi.Error as exc:
                    raise driver_error(conn, exc, "(the transaction's first statements)",
                                        None) from exc

    return engine


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that takes the write lock up front (SQLite BEGIN IMMEDIATE).

    Why: a deferred SQLite transaction that reads then writes can fail with "database is
    locked" when another process wrote in between; taking the lock first makes writers queue.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            _take_write_lock(conn)
            yield conn


LOCK_SQL = sa.text(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")


def _take_write_lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # The same one-writer-at-a-time rule on PostgreSQL: read-then-write
        # transactions (counters, upserts, reservations) would otherwise race.
        run(conn, LOCK_SQL)


def create_host_tables(engine: sa.Engine) -> None:
    """Create the host's own tables if missing."""
    # Why under the write lock: processes opening a fresh project together (server, CLI,
    # scenario runner) would otherwise all see the tables missing, and SQLite refuses the
    # losers' CREATE at once ("database is locked": a read transaction can't become a writer).
    # The tables come from the host's migration history (labelloop.migrations): a new
    # database is created at its head, an older one is upgraded.
    from ..migrations import at_head, host_history, upgrade

    history = host_history()
    with engine.connect() as conn:
        if at_head(conn, history):
            return
    with write_transaction(engine) as conn:
        upgrade(conn, history)
