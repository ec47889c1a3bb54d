"""The `labelloop` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from .errors import LabelloopError


class State:
    """Options of the group, shared by every command; the project opens on first use."""

    def __init__(self, project_dir: str | None, database_url: str | None,
                 plugin_dirs: tuple[str, ...], debug: bool):
        self.project_dir = project_dir
        self.database_url = database_url
        self.plugin_dirs = list(plugin_dirs)
        self.debug = debug
        self._project = None

    @property
    def project(self):
        if self._project is None:
            from .project import Project

            self._project = Project.open(self.project_dir, database_url=self.database_url,
                                         plugin_dirs=self.plugin_dirs)
        return self._project

    def registry(self):
        if self._project is not None or _is_project(self.project_dir):
            return self.project.registry
        from .plugins import PluginRegistry

        return PluginRegistry(plugin_dirs=self.plugin_dirs)


def _is_project(directory: str | None) -> bool:
    directory = directory or os.environ.get("LABELLOOP_PROJECT") or os.getcwd()
    return (Path(directory) / "project.json").is_file()


class LabelloopGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabelloopError as exc:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            if (state and state.debug) or os.environ.get("LABELLOOP_DEBUG"):
                raise
            raise click.ClickException(str(exc)) from exc


pass_state = click.make_pass_decorator(State)


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


# ---------------------------------------------------------------- init
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--key", help="Project key (default: from the directory name).")
@click.pass_obj
def init(state: State, directory: str, key: str | None):
    """Create a project in DIRECTORY (project.json + database)."""
    from .project import Project

    project = Project.init(directory, key=key, database_url=state.database_url)
    click.echo(f"created project {project.key} in {project.dir}")


# ---------------------------------------------------------------- plugins
@cli.group()
def plugin():
    """List and validate plugins."""


@plugin.command("list")
@click.pass_obj
def plugin_list(state: State):
    """Every plugin and component (failed plugins shown as failed)."""
    registry = state.registry()
    rows = []
    for info in sorted(registry.plugins.values(), key=lambda p: p.id):
        comps = [c for c in registry.components.values() if c.plugin == info.id]
        if info.status == "failed":
            rows.append({"plugin": info.id, "kind": "FAILED", "component": "", "label": info.error})
        for c in sorted(comps, key=lambda c: (c.kind, c.id)):
            rows.append({"plugin": info.id, "kind": c.kind, "component": c.type, "label": c.label})
        if not comps and info.status != "failed":
            rows.append({"plugin": info.id, "kind": "-", "component": "", "label": "(no components)"})
    _print_table(rows, ["plugin", "kind", "component", "label"])


@plugin.command("validate")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
def plugin_validate(path: str):
    """Check a plugin directory's descriptors and code files; exit 1 listing every error."""
    from .plugins import validate_plugin_dir

    errors = validate_plugin_dir(path)
    for err in errors:
        click.echo(f"error: {err}", err=True)
    if errors:
        click.echo(f"{len(errors)} error(s) in {path}", err=True)
        sys.exit(1)
    click.echo(f"{path}: plugin is valid")


# ---------------------------------------------------------------- datasets
@cli.group()
def dataset():
    """Import, export and inspect datasets."""


@dataset.command("list")
@click.pass_obj
def dataset_list(state: State):
    """Datasets of the project with their row counts."""
    project = state.project
    rows = []
    for name in project.dataset_names():
        ds = project.dataset(name)
        rows.append({"dataset": name, "rows": ds.count() if ds.exists() else "(no data)",
                     "columns": len(ds.schema)})
    _print_table(rows, ["dataset", "rows", "columns"])


@dataset.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--replace", is_flag=True, help="Overwrite the dataset if it has data.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), help="File format.")
@click.pass_obj
def dataset_import(state: State, name: str, file: str, replace: bool, fmt: str | None):
    """Import FILE (CSV or Parquet) as dataset NAME."""
    project = state.project
    ds = project.dataset(name, create=True)
    n = ds.import_file(file, replace=replace, fmt=fmt)
    project.declare("datasets", name)
    click.echo(f"imported {n} rows into {name}")


@dataset.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), help="File format.")
@click.pass_obj
def dataset_export(state: State, name: str, file: str, fmt: str | None):
    """Export dataset NAME to FILE (CSV or Parquet)."""
    n = state.project.dataset(name).export_file(file, fmt=fmt)
    click.echo(f"exported {n} rows of {name} to {file}")


@dataset.command("head")
@click.argument("name")
@click.option("-n", "--rows", default=10, show_default=True, help="Rows to show.")
@click.pass_obj
def dataset_head(state: State, name: str, rows: int):
    """Show the first rows of dataset NAME."""
    import pandas as pd

    df = state.project.dataset(name).head(rows)
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        click.echo(df.to_string(index=False))


# ---------------------------------------------------------------- folders
@cli.group()
def folder():
    """Managed folders."""


@folder.command("import")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--path", "rel_path", help="Folder location inside the project (default: NAME).")
@click.pass_obj
def folder_import(state: State, name: str, source: str, rel_path: str | None):
    """Copy the files of SOURCE into managed folder NAME (created if missing)."""
    project = state.project
    if name not in project.config.get("folders", {}):
        project.declare("folders", name, {"path": rel_path or name})
    n = project.folder(name).import_dir(source)
    click.echo(f"imported {n} files into folder {name}")


@folder.command("list")
@click.argument("name")
@click.pass_obj
def folder_list(state: State, name: str):
    """List the files of managed folder NAME."""
    for rel in state.project.folder(name).list():
        click.echo(rel)


# ---------------------------------------------------------------- flow
@cli.group()
def recipe():
    """Recipes of the flow."""


@recipe.command("run")
@click.argument("name")
@click.pass_obj
def recipe_run(state: State, name: str):
    """Run recipe instance NAME of project.json."""
    from .flow import run_recipe

    record = run_recipe(state.project, name)
    click.echo(f"recipe {name}: {record['status']} in {record['details'].get('seconds', '?')}s")


@recipe.command("list")
@click.pass_obj
def recipe_list(state: State):
    """Recipe instances of the project."""
    rows = [{"recipe": n, "type": c.get("type"),
             "outputs": ", ".join(o for v in c.get("outputs", {}).values()
                                  for o in ([v] if isinstance(v, str) else v))}
            for n, c in sorted(state.project.config.get("recipes", {}).items())]
    _print_table(rows, ["recipe", "type", "outputs"])


@cli.group()
def flow():
    """Build outputs of the flow."""


@flow.command("build")
@click.argument("dataset_name", metavar="DATASET")
@click.pass_obj
def flow_build(state: State, dataset_name: str):
    """Run the recipe that outputs DATASET (or folder / saved model)."""
    from .flow import build

    record = build(state.project, dataset_name)
    click.echo(f"built {dataset_name} with recipe {record['name']}: {record['status']}")


# ---------------------------------------------------------------- models
@cli.group()
def model():
    """Saved models."""


@model.command("list")
@click.pass_obj
def model_list(state: State):
    """Saved models and their versions."""
    project = state.project
    rows = []
    for name in project.model_names():
        for v in project.model(name).versions():
            metrics = v.get("metrics") or {}
            rows.append({"model": name, "version": v["version"], "created": v["created"][:19],
                         "rows": v.get("rows", ""), "classes": len(v.get("classes") or []),
                         "accuracy": _fmt(metrics.get("accuracy")), "auc": _fmt(metrics.get("auc"))})
        if not project.model(name).versions():
            rows.append({"model": name, "version": "(none)"})
    _print_table(rows, ["model", "version", "created", "rows", "classes", "accuracy", "auc"])


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else ""


# ---------------------------------------------------------------- variables
@cli.group()
def variables():
    """Project variables (JSON values)."""


@variables.command("get")
@click.argument("name", required=False)
@click.pass_obj
def variables_get(state: State, name: str | None):
    """Print variable NAME (or every variable) as JSON."""
    values = state.project.variables
    click.echo(json.dumps(values.all() if name is None else values.get(name), indent=2))


@variables.command("set")
@click.argument("name")
@click.argument("value")
@click.pass_obj
def variables_set(state: State, name: str, value: str):
    """Set variable NAME to VALUE (JSON; a bare word is a string)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    state.project.variables.set(name, parsed)
    click.echo(f"{name} = {json.dumps(parsed)}")


def _register_plugin_commands() -> None:
    """Commands from plugins (`register_commands(cli)`), e.g. the labeling plugin's `demo`."""
    from .plugins import PluginRegistry

    try:
        registry = PluginRegistry()
    except Exception as exc:  # a broken plugin must not take the whole CLI down
        click.echo(f"warning: plugins not loaded: {exc}", err=True)
        return
    for impl in registry.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            click.echo(f"warning: plugin {impl.plugin_name} failed to add commands: {exc}", err=True)


def main() -> None:
    """Console-script entry point."""
    _register_plugin_commands()
    cli(prog_name="labelloop")


if __name__ == "__main__":
    main()
