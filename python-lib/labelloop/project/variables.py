"""Project variables: JSON values in the database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import LabelloopError
from .db import variables_table, write_transaction

_GET_SQL = sa.select(variables_table.c.value).where(
    variables_table.c.name == sa.bindparam("name"))


class Variables:
    """Get, set and atomically increment the project's variables."""

    def __init__(self, engine: sa.Engine, initial: dict | None = None):
        self.engine = engine
        self.initial = dict(initial or {})

    def all(self) -> dict[str, Any]:
        t = variables_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.name, t.c.value)).all()
        values = dict(self.initial)
        values.update({name: value for name, value in rows})
        return values

    def get(self, name: str, default: Any = None, conn: sa.Connection | None = None) -> Any:
        """A variable's value (project.json's initial value, else `default`, when unset);
        read in `conn` (e.g. inside the caller's transaction) when given."""
        if conn is None:
            with self.engine.connect() as c:
                return self.get(name, default, c)
        row = conn.execute(_GET_SQL, {"name": name}).first()
        if row is None:
            return self.initial.get(name, default)
        return row[0]

    def set(self, name: str, value: Any, conn: sa.Connection | None = None) -> None:
        if conn is None:
            with write_transaction(self.engine) as c:
                self._set(c, name, value)
        else:
            self._set(conn, name, value)

    @staticmethod
    def _set(conn: sa.Connection, name: str, value: Any) -> None:
        t = variables_table
        done = conn.execute(sa.update(t).where(t.c.name == name).values(value=value)).rowcount
        if not done:
            conn.execute(sa.insert(t).values(name=name, value=value))

    def incr(self, name: str, by: int = 1, conn: sa.Connection | None = None) -> int:
        """Add `by` to an integer variable (missing counts as 0) and return the new value."""
        if conn is None:
            with write_transaction(self.engine) as c:
                return self._incr(c, name, by)
        return self._incr(conn, name, by)

    def _incr(self, conn: sa.Connection, name: str, by: int) -> int:
        t = variables_table
        row = conn.execute(sa.select(t.c.value).where(t.c.name == name)).first()
        current = row[0] if row is not None else self.initial.get(name, 0)
        if isinstance(current, float) and current.is_integer():
            current = int(current)
        if current is not None and (isinstance(current, bool) or not isinstance(current, int)):
            raise LabelloopError(f"cannot increment variable {name!r}: its value {current!r} is "
                                 "not an integer; set it to a number first")
        new = (current or 0) + by
        self._set(conn, name, new)
        return new
