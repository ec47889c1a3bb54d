"""The root `labelloop` group: its options (the State every command gets), the error handling
every command shares, small helpers of the command modules, and `labelloop init`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from ..errors import LabelloopError


class State:
    """Options of the group, shared by every command; the project opens on first use."""

    def __init__(self, project_dir: str | None, database_url: str | None,
                 plugin_dirs: tuple[str, ...], debug: bool):
        self.project_dir = project_dir
        self.database_url = database_url
        self.plugin_dirs = list(plugin_dirs)
        self.debug = debug
        self._project = None
        self._registry = None
        loaded = _LOADED.pop("plugins", None)
        if loaded is not None and loaded[0] == (project_dir, database_url, self.plugin_dirs):
            # main() loaded the plugins for these options already: once per CLI call.
            self._project, self._registry = loaded[1], loaded[2]

    @property
    def project(self):
        if self._project is None:
            from ..project import Project

            self._project = Project.open(self.project_dir, database_url=self.database_url,
                                         plugin_dirs=self.plugin_dirs)
        return self._project

    def registry(self):
        if self._project is not None or _is_project(self.project_dir):
            return self.project.registry
        if self._registry is None:
            from ..plugins import PluginRegistry

            self._registry = PluginRegistry(plugin_dirs=self.plugin_dirs)
        return self._registry


# What main() loaded before click parsed the command line: ((project, database url, plugin
# dirs), the Project or None, the registry); State reuses it when its options are the same.
_LOADED: dict[str, tuple] = {}


def _is_project(directory: str | None) -> bool:
    directory = directory or os.environ.get("LABELLOOP_PROJECT") or os.getcwd()
    return (Path(directory) / "project.json").is_file()


class LabelloopGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            if (state and state.debug) or os.environ.get("LABELLOOP_DEBUG"):
                raise
            raise click.ClickException("interrupted") from None
        except LabelloopError as exc:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            if (state and state.debug) or os.environ.get("LABELLOOP_DEBUG"):
                raise
            raise click.ClickException(str(exc)) from exc


pass_state = click.make_pass_decorator(State)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (e.g. the server stopping) ends a run like Ctrl-C: recorded as interrupted."""
    import signal

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)


@click.group(cls=LabelloopGroup)
@click.option("--project", "project_dir", envvar="LABELLOOP_PROJECT", metavar="DIR",
              help="Project directory (default: the current directory).")
@click.option("--database-url", envvar="LABELLOOP_DATABASE_URL", metavar="URL",
              help="SQLAlchemy URL of the database (default: SQLite file in the project).")
@click.option("--plugin-dir", "plugin_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Extra plugin directory (repeatable; also LABELLOOP_PLUGIN_PATH).")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="labelloop")
@click.pass_context
def cli(ctx: click.Context, project_dir, database_url, plugin_dirs, debug):
    """Labelloop: ML-assisted labeling with a live active-learning loop."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = State(project_dir, database_url, plugin_dirs, debug)


def _print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--key", help="Project key (default: from the directory name).")
@click.pass_obj
def init(state: State, directory: str, key: str | None):
    """Create a project in DIRECTORY (project.json + database)."""
    from ..project import Project

    project = Project.init(directory, key=key, database_url=state.database_url)
    click.echo(f"created project {project.key} in {project.dir}")
