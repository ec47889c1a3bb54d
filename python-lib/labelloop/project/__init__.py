"""The project: a directory with project.json, its database, folders and model files."""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConflictError, LabelloopError, NotFoundError
from ..webhooks import ProjectWebhooks
from .datasets import Dataset
from .db import create_engine, create_host_tables, sqlite_url, write_transaction
from .driver import Pipeline, Rows, pipeline, run
from .folders import Folder, UnsafePathError
from .models import SavedModel, load_skops
from .runs import end_run, list_runs, start_run
from .variables import Variables
from .writer import Database

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..plugins import PluginRegistry

__all__ = ["Project", "Database", "Dataset", "Folder", "SavedModel", "Variables", "UnsafePathError",
           "load_skops", "write_transaction", "pipeline", "Pipeline", "run", "Rows", "start_run", "end_run",
           "list_runs"]

PROJECT_FILE = "project.json"
DB_FILE = "labelloop.db"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_name(kind: str, name: str) -> str:
    """Refuse names that can't be a dataset/folder/model/... name."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise LabelloopError(f"invalid {kind} name {name!r}: use letters, digits, '_' and '-', "
                             "starting with a letter or digit")
    return name


def _url_without_password(url: str) -> bool:
    try:
        return sa.engine.make_url(url).password is None
    except sa.exc.ArgumentError:
        return False  # refused with a clear message when the engine is made


class Project:
    """A Labelloop project directory (project.json + database + folders + model files)."""

    def __init__(self, directory: str | os.PathLike, database_url: str | None = None,
                 plugin_dirs: list[str | os.PathLike] | tuple = (), load_entry_points: bool = True,
                 webhooks: Callable[[Project], Any] = ProjectWebhooks):
        """`webhooks(project)` makes `project.webhooks` (outgoing webhooks: `wanted`, `emit`,
        `emit_now`); by default `labelloop.webhooks.ProjectWebhooks`."""
        self.dir = Path(directory).resolve()
        self.config_path = self.dir / PROJECT_FILE
        if not self.config_path.is_file():
            raise NotFoundError(
                f"{self.dir} is not a Labelloop project (no {PROJECT_FILE}): create one with "
                f"`labelloop init {directory}` or pass --project DIR"
            )
        self.config = self._load_config()
        self.database_url = (database_url or os.environ.get("LABELLOOP_DATABASE_URL")
                             or self.config.get("settings", {}).get("database_url")
                             or sqlite_url(self.dir / DB_FILE))
        self._plugin_dirs = [Path(p) for p in plugin_dirs]
        self._load_entry_points = load_entry_points
        self._make_webhooks = webhooks
        self._at_head: set[str] = set()  # migration histories found at their head

    def __repr__(self) -> str:
        return f"Project({self.key!r}, {str(self.dir)!r})"

    # ---- creation / opening ----
    @classmethod
    def init(cls, directory: str | os.PathLike, key: str | None = None,
             database_url: str | None = None, config: dict | None = None, **kwargs: Any) -> Project:
        """Create a project directory with project.json and its database, every migration
        history (the host's, each plugin's) at its head."""
        directory = Path(directory)
        target = directory / PROJECT_FILE
        if target.exists():
            raise ConflictError(f"{directory} is already a Labelloop project ({target} exists)")
        key = key or re.sub(r"[^A-Za-z0-9_]", "_", directory.resolve().name).upper() or "PROJECT"
        cfg = {"key": key, "datasets": {}, "folders": {}, "models": {}, "recipes": {},
               "webapps": {}, "scenarios": {}}
        cfg.update(config or {})
        if database_url and _url_without_password(database_url):
            # Remember where the data is, so later commands need no --database-url. A URL with
            # a password is never written to project.json: give it with each command instead.
            cfg.setdefault("settings", {}).setdefault("database_url", database_url)
        from ..descriptors import validate_descriptor

        validate_descriptor("project", cfg, target)
        created_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(cfg, indent=2) + "\n")
        try:
            project = cls(directory, database_url=database_url, **kwargs)
            project.upgrade_schema()  # creates the database and every table now
        except BaseException:
            # Why: a half-made project (project.json but no database) would make the next
            # `init` refuse with "already a project"; leave the directory as it was.
            target.unlink(missing_ok=True)
            if created_dir:
                directory.rmdir()
            raise
        return project

    @classmethod
    def open(cls, directory: str | os.PathLike | None = None, **kwargs: Any) -> Project:
        """Open the project in `directory`, $LABELLOOP_PROJECT or the current directory."""
        directory = directory or os.environ.get("LABELLOOP_PROJECT") or os.getcwd()
        return cls(directory, **kwargs)

    def _load_config(self) -> dict:
        from ..descriptors import load_descriptor

        return load_descriptor("project", self.config_path)

    def reload(self) -> None:
        """Re-read project.json (after another process edited it)."""
        self.config = self._load_config()

    def save_config(self) -> None:
        """Validate and write project.json atomically."""
        from ..descriptors import validate_descriptor

        validate_descriptor("project", self.config, self.config_path)
        tmp = self.config_path.with_suffix(".json.part")
        tmp.write_text(json.dumps(self.config, indent=2) + "\n")
        tmp.replace(self.config_path)

    @property
    def key(self) -> str:
        return self.config["key"]

    # ---- the database ----
    @cached_property
    def engine(self) -> sa.Engine:
        try:
            engine = create_engine(self.database_url)
            create_host_tables(engine)
            self._at_head.add("labelloop")  # labelloop.migrations.HOST
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            # One line: SQLAlchemy appends a "Background on this error" line to its messages.
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            url = sa.engine.make_url(self.database_url).render_as_string(hide_password=True) \
                if not isinstance(exc, sa.exc.ArgumentError) else repr(self.database_url)
            raise LabelloopError(f"cannot open the database {url}: {reason} (check --database-url "
                                 "or LABELLOOP_DATABASE_URL)") from exc
        return engine

    def upgrade_schema(self) -> list[tuple[str, str | None, str]]:
        """Bring every migration history (the host's, then each loaded plugin's) to its head,
        each in a write transaction of its own; `(history, before, after)` of those that
        moved. A history found at its head is not looked at again by this object."""
        from ..migrations import at_head, histories, upgrade

        moved = []
        for history in histories(self.registry):
            if history.name in self._at_head:
                continue
            with self.engine.connect() as conn:
                if at_head(conn, history):
                    self._at_head.add(history.name)
                    continue
            with write_transaction(self.engine) as conn:
                before, after = upgrade(conn, history)
            self._at_head.add(history.name)
            if before != after:
                moved.append((history.name, before, after))
        return moved

    def write_transaction(self):
        """A write transaction on the project's database (the write lock taken up front)."""
        return write_transaction(self.engine)

    @cached_property
    def db(self) -> Database:
        """The database's writer: `project.db.execute_write_fn(fn)` runs `fn(conn)` in this
        process' single write thread, inside its transaction, and returns its result."""
        return Database(self.engine)

    @cached_property
    def variables(self) -> Variables:
        return Variables(self.engine, self.config.get("variables"))

    @cached_property
    def webhooks(self) -> Any:
        """Outgoing webhooks: `project.webhooks.emit(conn, event, payload)` (made by the
        `webhooks` factory the project was given)."""
        return self._make_webhooks(self)

    # ---- plugins ----
    @cached_property
    def registry(self) -> PluginRegistry:
        from ..plugins import PluginRegistry

        dirs = list(self._plugin_dirs)
        dirs += [self.dir / p for p in self.config.get("plugin_dirs", [])]
        return PluginRegistry(plugin_dirs=dirs, load_entry_points=self._load_entry_points)

    # ---- datasets ----
    def dataset_names(self) -> list[str]:
        """Declared datasets and datasets holding data."""
        from .db import datasets_table

        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(datasets_table.c.name)).scalars().all()
        return sorted(set(self.config.get("datasets", {})) | set(stored))

    def dataset(self, name: str, create: bool = False) -> Dataset:
        """The dataset `name`; unknown names are refused unless `create`."""
        check_name("dataset", name)
        ds = Dataset(self, name)
        if create or name in self.config.get("datasets", {}) or ds.exists():
            return ds
        known = ", ".join(self.dataset_names()) or "none"
        raise NotFoundError(f"unknown dataset {name!r} (datasets: {known}): declare it in "
                            "project.json or import it with `labelloop dataset import`")

    def declare(self, section: str, name: str, value: dict | None = None) -> None:
        """Add `name` to a section of project.json (datasets, folders, models) if missing."""
        check_name(section.rstrip("s"), name)
        entries = self.config.setdefault(section, {})
        if name not in entries:
            if not value and section == "folders":
                value = {"path": name}  # a folder lives in a directory of its name by default
            entries[name] = value or {}
            try:
                self.save_config()
            except LabelloopError:
                del entries[name]  # keep the in-memory config valid for the next save
                raise

    # ---- folders ----
    def folder(self, name: str) -> Folder:
        """The managed folder `name` declared in project.json."""
        folders = self.config.get("folders", {})
        if name not in folders:
            known = ", ".join(sorted(folders)) or "none"
            raise NotFoundError(f"unknown folder {name!r} (folders: {known}): declare it in "
                                "project.json or create it with `labelloop folder import`")
        path = Path(folders[name].get("path") or name)
        return Folder(name, path if path.is_absolute() else self.dir / path)

    # ---- saved models ----
    def model_names(self) -> list[str]:
        from .db import model_versions_table as t

        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(t.c.model).distinct()).scalars().all()
        return sorted(set(self.config.get("models", {})) | set(stored))

    def model(self, name: str, create: bool = False) -> SavedModel:
        """The saved model `name`; unknown names are refused unless `create`."""
        check_name("model", name)
        if create or name in self.model_names():
            return SavedModel(self, name)
        known = ", ".join(self.model_names()) or "none"
        raise NotFoundError(f"unknown saved model {name!r} (models: {known})")

    # ---- any object by role ----
    def resolve_object(self, name: str) -> tuple[str, Dataset | Folder | SavedModel]:
        """Find `name` among datasets, folders and models: `(kind, handle)`."""
        if name in self.config.get("folders", {}):
            return "folder", self.folder(name)
        if name in self.model_names():
            return "model", SavedModel(self, name)
        return "dataset", self.dataset(name)

    # ---- runs ----
    def runs(self, kind: str | None = None, name: str | None = None, limit: int = 50) -> list[dict]:
        return list_runs(self.engine, kind, name, limit)


# Public for plugins too (docs/plugins.md lists the public host API): coercing a frame to a
# dataset schema, reading a dataset's chunk file, the model types a saved model may hold.
from .datasets import normalize, read_chunk_file  # noqa: E402
from .leases import Lease, ManualClock, SystemClock, new_owner, process_alive  # noqa: E402
from .models import trusted_types  # noqa: E402

__all__ += ["normalize", "read_chunk_file", "trusted_types", "process_alive", "Lease",
            "new_owner", "SystemClock", "ManualClock"]
