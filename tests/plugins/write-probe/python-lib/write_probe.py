"""Which thread of this process sends each write to the database (tests/test_one_writer.py).

An SQLAlchemy `before_cursor_execute` listener on every engine (the host's `run` and the
writer's PostgreSQL prelude call these listeners too) records, while recording is on, the
thread of each write: the write lock of a transaction (SQLite `BEGIN IMMEDIATE`, PostgreSQL
`pg_advisory_xact_lock`) and every INSERT, UPDATE, DELETE or schema statement. Two routes:
`POST /api/v1/write-probe/start` clears the record and starts it, `GET
/api/v1/write-probe/writes` gives it.
"""

import re
import threading

import sqlalchemy as sa

from labelloop.hookspecs import hookimpl

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP|BEGIN\s+IMMEDIATE)\b"
                   r"|pg_advisory_xact_lock", re.IGNORECASE)
TABLE = re.compile(r"\b(?:INTO|UPDATE|FROM)\s+\"?([a-z_][a-z0-9_]*)", re.IGNORECASE)

_state = {"on": False, "writes": []}  # a test probe: one per server process
_lock = threading.Lock()


def _record(conn, cursor, statement, parameters, context, executemany):
    if not _state["on"] or not WRITE.search(statement or ""):
        return
    table = TABLE.search(statement)
    with _lock:
        _state["writes"].append({"thread": threading.current_thread().name,
                                 "table": table.group(1) if table else None,
                                 "sql": statement.strip()[:120]})


sa.event.listen(sa.engine.Engine, "before_cursor_execute", _record)


@hookimpl
def register_api_routes(register):
    def start(req):
        with _lock:
            _state["writes"] = []
            _state["on"] = True
        return {"recording": True}

    def writes(req):
        with _lock:
            return {"writes": list(_state["writes"])}

    register("/write-probe/start", start, methods=("POST",))
    register("/write-probe/writes", writes)
