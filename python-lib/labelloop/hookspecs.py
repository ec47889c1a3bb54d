"""The hook contract between the host and its plugins."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("labelloop")
hookimpl = pluggy.HookimplMarker("labelloop")


@hookspec
def register_components(register):
    """Register components: call `register(descriptor)` with a dict holding `kind`, `id`, the
    DSS descriptor keys and the entry point callable (`run`, `check` or `create_backend`)."""


@hookspec
def register_commands(cli):
    """Add commands to the `labelloop` click group."""


@hookspec
def register_api_routes(register):
    """Mount JSON routes under `/api/v1`: call `register(path, handler, methods=("GET",),
    auth=True)`; `path` is relative to /api/v1 with `{name}` parts (e.g.
    "/ml-backends/{webapp}/predict"), `handler(request)` gets a `labelloop.web.routes.ApiRequest`
    and returns JSON-able data or a `(status, data)` tuple (see labelloop.web.routes)."""


@hookspec
def register_dataset_formats(register):
    """Add `dataset import|export` formats: call `register(name, read=None, write=None,
    extensions=(), description="")` (see labelloop.formats)."""


@hookspec
def register_migrations(register):
    """Ship the migration history of the plugin's own tables: call `register(name,
    directory, head=None)` with the plugin's id and an Alembic versions directory (revision files; the first one's
    `down_revision` is None); `head`, the newest revision, lets the host find a database at it
    without Alembic. See labelloop.migrations."""


@hookspec
def register_run_imports(register):
    """Name the third-party modules the plugin's recipes and steps import: call
    `register(module)` for each (e.g. "sklearn.linear_model"). Scenario runs are forked from a
    process that has imported them once (labelloop.scenarios.launcher). Name libraries only,
    never the plugin's own modules: those are imported by each run, so that it sees their
    current code."""
