"""`labelloop db`: the database schema's revision per migration history, and upgrading it."""

from __future__ import annotations

import click

from .root import State, _print_table, cli


@cli.group("db")
def db_group():
    """The database schema: its revision per migration history (the host's, each plugin's)."""


def _db_histories(state: State) -> list:
    from ..migrations import histories

    return histories(state.project.registry)


@db_group.command("current")
@click.pass_obj
def db_current(state: State):
    """Show the revision of each migration history and its newest revision."""
    from ..migrations import current

    rows = []
    with state.project.engine.connect() as conn:
        for h in _db_histories(state):
            rev, head = current(conn, h), h.head()
            rows.append({"history": h.name, "current": rev or "-", "head": head,
                         "state": "up to date" if rev == head else "needs `labelloop db upgrade`"})
    _print_table(rows, ["history", "current", "head", "state"])


@db_group.command("upgrade")
@click.option("--history", "only", help="Only this history (labelloop or a plugin id).")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_obj
def db_upgrade(state: State, only: str | None, revision: str):
    """Upgrade the database to the newest revision of every migration history."""
    from ..migrations import upgrade
    from ..project import write_transaction

    chosen = [h for h in _db_histories(state) if only in (None, h.name)]
    if not chosen:
        raise click.ClickException(f"no migration history {only!r} (see `labelloop db current`)")
    if revision != "head" and len(chosen) > 1:
        raise click.ClickException("--revision needs --history (revisions belong to one history)")
    for h in chosen:
        with write_transaction(state.project.engine) as conn:
            before, after = upgrade(conn, h, revision)
        click.echo(f"{h.name}: {before or '-'} -> {after}" if before != after
                   else f"{h.name}: {after} (up to date)")
