"""Schema migrations: one Alembic history for the host's tables, one per plugin that ships one.

Each history keeps its revision in a version table of its own (`alembic_version` for the host,
`alembic_version_<plugin>` for a plugin), so the host upgrades its tables without knowing any
plugin, and a plugin's history moves on at its own pace. A plugin ships its history by
implementing `register_migrations(register)` and calling `register(plugin_id, versions_dir)`.

A database made before migrations existed has the tables but no version table: the first
revision of each history creates only the tables that are missing, which stamps such a database
at that revision; later revisions then apply as usual.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import LabelloopError

log = logging.getLogger(__name__)
# Alembic says "setup plugin ...", "Context impl SQLiteImpl" and each step at INFO: every
# command opening a project would print them. Quiet unless the application configured that
# logger itself (set before alembic is imported: it logs while being imported).
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

HOST = "labelloop"
HOST_VERSIONS = Path(__file__).resolve().parent / "versions"
# The host history's head, declared so that opening a project at its head reads one row and
# imports no Alembic (its import, with Mako's, costs a command ~0.2 s of CPU).
# `tests/test_migrations.py` checks it against Alembic's own head: bump it with each revision.
HOST_HEAD = "ll0002"

@dataclass(frozen=True)
class History:
    """One migration history: whose tables (`labelloop` or a plugin id) and where its files are."""

    name: str
    directory: Path
    declared_head: str | None = None  # what the history says its head is (see `at_head`)

    @property
    def version_table(self) -> str:
        if self.name == HOST:
            return "alembic_version"
        return "alembic_version_" + re.sub(r"[^A-Za-z0-9]+", "_", self.name).lower()

    @property
    def script(self) -> Any:
        """Alembic's ScriptDirectory of the history (imports Alembic)."""
        return _script(str(self.directory))

    def head(self) -> str:
        """The newest revision of this history."""
        heads = self.script.get_heads()
        if len(heads) != 1:
            raise LabelloopError(f"the migration history of {self.name} ({self.directory}) has "
                                 f"{len(heads)} heads {heads}: it must have exactly one")
        return heads[0]


@functools.cache
def _script(directory: str) -> Any:
    from alembic.script import ScriptDirectory

    if not Path(directory).is_dir():
        raise LabelloopError(f"migration directory {directory} does not exist")
    return ScriptDirectory(directory, version_locations=[directory])


def host_history() -> History:
    return History(HOST, HOST_VERSIONS, HOST_HEAD)


def plugin_histories(registry: Any) -> list[History]:
    """The histories the registry's plugins ship through `register_migrations`."""
    pm = registry.pm
    out: list[History] = []

    def register(name: str, directory: str | Path, head: str | None = None) -> None:
        if not isinstance(name, str) or not name or name == HOST:
            raise LabelloopError(f"register_migrations: a history needs the plugin's id as its "
                                 f"name, not {name!r}")
        if any(h.name == name for h in out):
            raise LabelloopError(f"register_migrations: {name!r} registered two histories; "
                                 "a plugin ships one")
        out.append(History(name, Path(directory).resolve(), head))

    pm.hook.register_migrations(register=register)
    return sorted(out, key=lambda h: h.name)


def histories(registry: Any | None = None) -> list[History]:
    """The host's history, then every plugin's."""
    return [host_history()] + (plugin_histories(registry) if registry is not None else [])


def at_head(conn: sa.Connection, history: History) -> bool:
    """True when the database is at the head `history` declares (one read, no Alembic);
    False when it declares none, or the database is elsewhere: then `upgrade` looks."""
    if history.declared_head is None or not sa.inspect(conn).has_table(history.version_table):
        return False
    table = sa.table(history.version_table, sa.column("version_num"))
    versions = conn.execute(sa.select(table.c.version_num)).scalars().all()
    return versions == [history.declared_head]


def _context(conn: sa.Connection, history: History, fn: Any = None) -> Any:
    from alembic.migration import MigrationContext

    opts: dict[str, Any] = {"version_table": history.version_table, "script": history.script}
    if fn is not None:
        opts["fn"] = fn
    return MigrationContext.configure(conn, opts=opts)


def current(conn: sa.Connection, history: History) -> str | None:
    """The revision the database is at for `history` (None: not under this history yet)."""
    return _context(conn, history).get_current_revision()


def upgrade(conn: sa.Connection, history: History,
            revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade `history`'s tables to `revision` inside the caller's write transaction.

    Returns (revision before, revision after); nothing runs when already there.
    """
    script = history.script

    def fn(rev, _context):
        return script._upgrade_revs(target, rev)

    ctx = _context(conn, history, fn)
    before = ctx.get_current_revision()
    target = history.head() if revision == "head" else revision
    if before == target:
        return before, before
    try:
        script.get_revision(target)
    except Exception as exc:  # noqa: BLE001 - Alembic's several lookup errors, one message
        raise LabelloopError(f"unknown revision {revision!r} for {history.name}: "
                             f"{str(exc).splitlines()[0]}") from exc
    if before is None and history.name == HOST and sa.inspect(conn).has_table("ll_datasets"):
        log.info("stamping a database made before migrations existed")
    from alembic.operations import Operations

    with Operations.context(ctx):
        ctx.run_migrations()
    return before, ctx.get_current_revision()


def create_missing(tables: sa.MetaData) -> None:
    """For a first revision: create the tables (and their indexes) that do not exist yet."""
    from alembic import op

    tables.create_all(op.get_bind(), checkfirst=True)


def drop_existing(tables: sa.MetaData) -> None:
    """For a first revision's downgrade: drop its tables."""
    from alembic import op

    tables.drop_all(op.get_bind(), checkfirst=True)
