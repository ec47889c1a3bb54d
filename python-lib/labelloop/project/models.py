"""Saved models: numbered versions, each a skops file plus metadata in the database."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import LabelloopError, NotFoundError, UntrustedModelError
from .db import model_versions_table, utc_iso, write_transaction

if TYPE_CHECKING:
    from . import Project


def trusted_types() -> list[str]:
    """Types a saved model may hold besides skops' defaults (from LABELLOOP_TRUSTED_TYPES and plugins)."""
    extra = os.environ.get("LABELLOOP_TRUSTED_TYPES", "")
    return [t.strip() for t in extra.split(",") if t.strip()]


class SavedModel:
    """A named saved model with numbered versions."""

    def __init__(self, project: Project, name: str):
        self.project = project
        self.name = name

    def __repr__(self) -> str:
        return f"SavedModel({self.name!r})"

    @property
    def directory(self) -> Path:
        return self.project.dir / "models" / self.name

    def versions(self) -> list[dict]:
        """Every version's metadata, oldest first."""
        t = model_versions_table
        with self.project.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.model == self.name)
                                .order_by(t.c.version)).mappings().all()
        return [self._meta(r) for r in rows]

    @staticmethod
    def _meta(row: Any) -> dict:
        meta = dict(row["meta"] or {})
        meta.update(version=row["version"], created=utc_iso(row["created"])
                    if hasattr(row["created"], "isoformat") else str(row["created"]),
                    file=row["file"])
        return meta

    def latest(self) -> dict | None:
        """The newest version's metadata, or None when the model has no version yet."""
        versions = self.versions()
        return versions[-1] if versions else None

    def metadata(self, version: int | None = None) -> dict:
        versions = self.versions()
        if not versions:
            raise NotFoundError(f"saved model {self.name!r} has no version yet: train it first")
        if version is None:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        raise NotFoundError(f"saved model {self.name!r} has no version {version} "
                            f"(versions: {[v['version'] for v in versions]})")

    def save(self, estimator: Any, meta: dict | None = None, db: Any = None) -> int:
        """Write `estimator` as a new version (skops format); returns the version number.

        The file is written first; the version is then recorded in a write transaction of
        its own, or through `db` (the project's `Database`: a server process's writer
        thread) when given.
        """
        import skops.io as sio

        self.directory.mkdir(parents=True, exist_ok=True)
        t = model_versions_table
        staged = self.directory / f".v-{uuid.uuid4().hex}.part"
        sio.dump(estimator, staged)
        meta = _jsonable(meta or {})

        def record(conn: sa.Connection) -> int:
            last = conn.execute(sa.select(sa.func.max(t.c.version))
                                .where(t.c.model == self.name)).scalar()
            version = (last or 0) + 1
            rel = f"models/{self.name}/v{version}.skops"
            staged.replace(self.project.dir / rel)
            conn.execute(sa.insert(t).values(
                model=self.name, version=version, created=dt.datetime.now(dt.UTC),
                file=rel, meta=meta))
            self.project.webhooks.emit(conn, "MODEL_TRAINED", {"model": {
                "name": self.name, "version": version, "meta": meta}})
            return version

        try:
            if db is not None:
                return db.execute_write_fn(record)
            with write_transaction(self.project.engine) as conn:
                return record(conn)
        finally:
            staged.unlink(missing_ok=True)

    def load(self, version: int | None = None, trusted: list[str] | None = None) -> Any:
        """Load a version (default: the newest), refusing types that are not trusted."""
        meta = self.metadata(version)
        return load_skops(self.project.dir / meta["file"], trusted)


def load_skops(path: Path, trusted: list[str] | None = None) -> Any:
    """Load a skops file, trusting skops' defaults plus `trusted` and the configured types."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"model file {path} is missing")
    allowed = set(trusted or []) | set(trusted_types())
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises various errors on a non-skops file
        raise UntrustedModelError(
            f"{path} is not a skops model file ({type(exc).__name__}: {exc}); "
            "save models with SavedModel.save()"
        ) from exc
    refused = sorted(set(untrusted) - allowed)
    if refused:
        raise UntrustedModelError(
            f"{path} holds types that are not trusted: {', '.join(refused)}. If you trust them, "
            "list them in LABELLOOP_TRUSTED_TYPES (comma-separated) or have their plugin declare them"
        )
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:
        raise LabelloopError(f"cannot load model file {path}: {exc}") from exc


def _jsonable(value: Any) -> Any:
    """Metadata as plain JSON values (numpy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
