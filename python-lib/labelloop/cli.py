"""The `labelloop` command line."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:  # noqa: ANN001 - signal handler
    """Ctrl-C before the command line runs (imports take a moment): one line, no traceback."""
    os.write(2, b"Error: interrupted\n")
    os._exit(130)


# Run as a program (`python -m labelloop.cli` or the `labelloop` script), not imported by a
# library user: main() puts Python's usual Ctrl-C behaviour back once the imports are done.
if __name__ == "__main__" or os.path.basename(sys.argv[0] or "") == "labelloop":
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import json  # noqa: E402 - after the handler above, on purpose
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from .errors import LabelloopError  # noqa: E402


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
            from .project import Project

            self._project = Project.open(self.project_dir, database_url=self.database_url,
                                         plugin_dirs=self.plugin_dirs)
        return self._project

    def registry(self):
        if self._project is not None or _is_project(self.project_dir):
            return self.project.registry
        if self._registry is None:
            from .plugins import PluginRegistry

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
    """Every plugin: its components, what it registers through plugin-added hooks (query
    strategies) and the hooks it implements (failed plugins shown as failed)."""
    registry = state.registry()
    extras = _plugin_added_registrations(registry)
    rows = []
    for info in sorted(registry.plugins.values(), key=lambda p: p.id):
        comps = [c for c in registry.components.values() if c.plugin == info.id]
        if info.status == "failed":
            rows.append({"plugin": info.id, "kind": "FAILED", "component": "", "label": info.error})
        for c in sorted(comps, key=lambda c: (c.kind, c.id)):
            rows.append({"plugin": info.id, "kind": c.kind, "component": c.type, "label": c.label})
        if info.status == "failed":
            continue
        for kind, name, label in extras.get(info.id, []):
            rows.append({"plugin": info.id, "kind": kind, "component": name, "label": label})
        if not comps and not extras.get(info.id):
            rows.append({"plugin": info.id, "kind": "-", "component": "", "label": "(no components)"})
        hooks = registry.hooks_of(info.id)
        if hooks:
            rows.append({"plugin": info.id, "kind": "hooks", "component": "",
                         "label": ", ".join(hooks)})
    _print_table(rows, ["plugin", "kind", "component", "label"])


def _plugin_added_registrations(registry) -> dict[str, list[tuple[str, str, str]]]:
    """What plugins register through hooks other plugins added (`register_<things>(register)`,
    e.g. the labeling plugin's query strategies): `{plugin id: [(kind, name, label)]}`."""
    from . import hookspecs
    from .plugins import call_hook_per_plugin

    out: dict[str, list[tuple[str, str, str]]] = {}
    host_hooks = {n for n in dir(hookspecs) if n.startswith("register_")}
    for hook_name in sorted(n for n in dir(registry.pm.hook) if n.startswith("register_")
                            and n not in host_hooks):
        kind = hook_name[len("register_"):].rstrip("s").replace("_", "-")
        kind = {"query-strategie": "strategy"}.get(kind, kind)

        def kwargs_for(plugin_name: str, _kind: str = kind) -> dict:
            def register(name: str, *args: Any, label: str | None = None, **kw: Any) -> None:
                out.setdefault(registry.plugin_of(plugin_name), []).append(
                    (_kind, str(name), label or ""))

            return {"register": register}

        call_hook_per_plugin(registry.pm, hook_name, kwargs_for)
    return out


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
@click.option("--format", "fmt", help="csv, parquet, jsonl, label-studio, coco... (default: "
              "from the extension).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Format option (repeatable), e.g. -o predictions=queries.")
@click.pass_obj
def dataset_import(state: State, name: str, file: str, replace: bool, fmt: str | None,
                   options: tuple[str, ...]):
    """Import FILE as dataset NAME (CSV, Parquet, JSON Lines, Label Studio JSON, COCO)."""
    from .formats import import_file, parse_options

    counts = import_file(state.project, name, file, fmt, replace, parse_options(options),
                         show_progress=True)
    for target, n in counts.items():
        click.echo(f"imported {n} rows into {target}")


@dataset.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", help="csv, parquet, jsonl, label-studio, coco... (default: "
              "from the extension).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Format option (repeatable), e.g. -o metadata=metadata.")
@click.pass_obj
def dataset_export(state: State, name: str, file: str, fmt: str | None, options: tuple[str, ...]):
    """Export dataset NAME to FILE (CSV, Parquet, JSON Lines, Label Studio JSON, COCO)."""
    from .formats import export_file, parse_options

    n = export_file(state.project, name, file, fmt, parse_options(options), show_progress=True)
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
    from .progress import progress

    total = sum(1 for p in Path(source).glob("**/*") if p.is_file())
    with progress(f"copying into {name}", total, "files") as update:
        n = project.folder(name).import_dir(source, on_file=lambda _p: update(1))
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

    _interrupt_on_sigterm()
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


_GROUP_OPTIONS = {"--project": "project", "--database-url": "database_url",
                  "--plugin-dir": "plugin_dir"}


def _group_options(args: list[str]) -> tuple[str | None, str | None, list[str]]:
    """`--project`, `--database-url` and `--plugin-dir` given before the command name.

    Why parse them ahead of click: plugin commands must exist before click looks the command
    up, and which plugins load depends on these options.
    """
    found: dict[str, list[str]] = {"project": [], "database_url": [], "plugin_dir": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            break  # the command name: what follows belongs to the command
        name, eq, value = arg.partition("=")
        if name in _GROUP_OPTIONS:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            found[_GROUP_OPTIONS[name]].append(value)
        i += 1
    project = (found["project"] or [os.environ.get("LABELLOOP_PROJECT")])[-1]
    database_url = (found["database_url"] or [os.environ.get("LABELLOOP_DATABASE_URL")])[-1]
    return project, database_url, found["plugin_dir"]


def _load_plugins(args: list[str]):
    """The registry for this command line: --plugin-dir, LABELLOOP_PLUGIN_PATH, the project's
    `plugin_dirs`; loaded once and kept for the command (see State)."""
    from .plugins import PluginRegistry

    project_dir, database_url, plugin_dirs = _group_options(args)
    project = None
    if _is_project(project_dir):
        from .project import Project

        try:
            project = Project.open(project_dir, database_url=database_url, plugin_dirs=plugin_dirs)
            registry = project.registry
        except LabelloopError:
            project = None  # the command reports the bad project itself
    if project is None:
        registry = PluginRegistry(plugin_dirs=plugin_dirs)
    _LOADED["plugins"] = ((project_dir, database_url, plugin_dirs), project, registry)
    return registry


def _register_plugin_commands(args: list[str] | None = None) -> None:
    """Commands from plugins (`register_commands(cli)`), e.g. the labeling plugin's `demo`."""
    from .plugins import call_hook_per_plugin

    try:
        registry = _load_plugins(sys.argv[1:] if args is None else list(args))
    except Exception as exc:  # a broken plugin must not take the whole CLI down
        click.echo(f"warning: plugins not loaded: {exc}", err=True)
        return
    outcome = call_hook_per_plugin(registry.pm, "register_commands", lambda _name: {"cli": cli})
    for plugin_name, exc in outcome:
        if exc is not None:
            click.echo(f"warning: plugin {plugin_name} failed to add commands: {exc}", err=True)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        _register_plugin_commands(args)
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        cli(args=args, prog_name="labelloop")
    except KeyboardInterrupt:  # Ctrl-C while starting (loading plugins): one line, no traceback
        click.echo("Error: interrupted", err=True)
        sys.exit(130)


# ---------------------------------------------------------------- scenarios
@cli.group()
def scenario():
    """Run and watch the scenarios of project.json."""


@scenario.command("list")
@click.pass_obj
def scenario_list(state: State):
    """Scenarios with their triggers, steps and last run."""
    from .scenarios import list_scenarios

    rows = []
    for s in list_scenarios(state.project):
        last = s["last_run"] or {}
        errors = [f"{t['key']}: {t['last_error']}" for t in s["triggers"] if t["last_error"]]
        rows.append({"scenario": s["id"], "active": "yes" if s["active"] else "no",
                     "triggers": len(s["triggers"]), "steps": len(s["steps"]),
                     "running": f"run {s['running']['run_id']}" if s["running"] else "",
                     "last run": f"{last.get('id', '')} {last.get('status', '')}".strip(),
                     "trigger errors": "; ".join(errors)})
    _print_table(rows, ["scenario", "active", "triggers", "steps", "running", "last run",
                        "trigger errors"])


@scenario.command("run")
@click.argument("name")
@click.option("--run-id", type=int, hidden=True, help="Continue this run record (scheduler).")
@click.option("--lock-owner", hidden=True, help="Take over this lock owner's lock (scheduler).")
@click.option("--trigger-json", hidden=True, help="What started the run, as JSON (scheduler).")
@click.pass_obj
def scenario_run(state: State, name: str, run_id: int | None, lock_owner: str | None,
                 trigger_json: str | None):
    """Run scenario NAME once: its steps in order, stopping at the first failure."""
    import getpass

    _interrupt_on_sigterm()

    from .scenarios import run_scenario

    try:
        trigger = json.loads(trigger_json) if trigger_json else \
            {"kind": "manual", "by": f"cli ({getpass.getuser()})"}
    except (json.JSONDecodeError, KeyError, OSError):
        trigger = {"kind": "manual", "by": "cli"}
    record = run_scenario(state.project, name, trigger=trigger, run_id=run_id,
                          lock_owner=lock_owner)
    for step in record["details"].get("steps", []):
        extra = f": {step['error']}" if step.get("error") else ""
        click.echo(f"  {step['status']:<8} {step['step']} ({step.get('seconds', '?')}s){extra}")
    if record["status"] != "SUCCESS":
        raise LabelloopError(f"scenario {name} (run {record['id']}) {record['status']}: "
                             f"{record['error']}")
    click.echo(f"scenario {name} (run {record['id']}): SUCCESS in "
               f"{record['details'].get('seconds', '?')}s")


@scenario.command("watch")
@click.option("--period", default=5.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between two checks of the triggers.")
@click.option("--max-runs", type=click.IntRange(min=1),
              help="Stop after this many runs have finished.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.pass_obj
def scenario_watch(state: State, period: float, max_runs: int | None, duration: float | None):
    """Check every trigger of every active scenario each PERIOD; run a scenario when one fires."""
    import signal

    from .scenarios import Scheduler

    def _term(*_):  # SIGTERM ends like Ctrl-C: runs record their end, locks are released
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    scheduler = Scheduler(state.project, period=period, plugin_dirs=state.plugin_dirs)
    try:
        n = scheduler.watch(max_runs=max_runs, duration=duration)
    except KeyboardInterrupt:
        click.echo("stopping: interrupting the running scenarios (they record their end)",
                   err=True)
        scheduler.stop(timeout=30)
        return
    click.echo(f"watched {state.project.key}: {n} run(s) finished")


@scenario.command("runs")
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, help="Runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the run records as JSON.")
@click.pass_obj
def scenario_runs_cmd(state: State, name: str, limit: int, as_json: bool):
    """Runs of scenario NAME, newest first."""
    from .scenarios import scenario_runs

    runs = scenario_runs(state.project, name, limit=limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2, default=str))
        return
    rows = []
    for r in runs:
        d = r.get("details") or {}
        trig = d.get("trigger") or {}
        rows.append({"run": r["id"], "status": r["status"], "started": (r["started"] or "")[:19],
                     "seconds": d.get("seconds", ""),
                     "trigger": trig.get("key") or trig.get("by") or trig.get("kind", ""),
                     "error": r.get("error") or ""})
    _print_table(rows, ["run", "status", "started", "seconds", "trigger", "error"])


# ---------------------------------------------------------------- serving
@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback address without API tokens (anyone who can reach it "
                   "may label and run scenarios).")
@click.option("--no-scheduler", is_flag=True, help="Don't check scenario triggers while serving.")
@click.option("--period", default=5.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between two checks of the scenario triggers.")
@click.option("--max-body", default=1024 * 1024, show_default=True, type=click.IntRange(min=1),
              help="Largest request body in bytes (larger: 413).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1),
              help="Threads that run API handlers.")
@click.option("--allow-websocket-origin", "origins", multiple=True, metavar="HOST[:PORT]",
              help="Extra host allowed to open the Bokeh websocket (behind a proxy).")
@click.pass_obj
def serve_cmd(state: State, host: str, port: int, insecure: bool, no_scheduler: bool,
              period: float, max_body: int, threads: int, origins: tuple[str, ...]):
    """Serve every webapp (/webapps/<id>) and the JSON API (/api/v1) on one port."""
    from .web.server import ServeOptions, serve

    serve(state.project, ServeOptions(host=host, port=port, insecure=insecure,
                                      scheduler=not no_scheduler, period=period,
                                      max_body=max_body, threads=threads,
                                      websocket_origins=list(origins),
                                      plugin_dirs=list(state.plugin_dirs)))


# ---------------------------------------------------------------- tokens
@cli.group()
def token():
    """API tokens: with any token configured, the server requires one on every request."""


@token.command("add")
@click.argument("user")
@click.pass_obj
def token_add(state: State, user: str):
    """Create a token for USER; it is printed once (only its hash is stored)."""
    from .web.auth import add_token

    value = add_token(state.project, user)
    click.echo(value)
    click.echo(f"token created for {user}: keep it now, it can't be shown again. Use it as "
               "'Authorization: Bearer <token>', or open a webapp with ?token=<token>", err=True)


@token.command("list")
@click.pass_obj
def token_list(state: State):
    """Users that have tokens (the tokens themselves are not stored)."""
    from .web.auth import list_tokens

    _print_table([{**t, "created": t["created"][:19]} for t in list_tokens(state.project)],
                 ["id", "user", "created"])


@token.command("remove")
@click.argument("user")
@click.option("--id", "token_id", type=int, help="Remove only this token (see `token list`).")
@click.pass_obj
def token_remove(state: State, user: str, token_id: int | None):
    """Remove the tokens of USER (or one token with --id)."""
    from .web.auth import remove_tokens

    n = remove_tokens(state.project, user, token_id)
    click.echo(f"removed {n} token(s) of {user}")
    from .web.auth import list_tokens

    if not list_tokens(state.project):
        click.echo("no token left: running servers keep requiring a token (nobody can use "
                   "them) until restarted; a server started now serves without tokens, on "
                   "loopback only unless --insecure", err=True)


# ---------------------------------------------------------------- webhooks
@cli.group()
def webhook():
    """Outgoing webhooks: receivers in project.json, deliveries from the outbox."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True,
              help="Event to send (repeatable; default: all). ANNOTATION_CREATED, "
                   "ANNOTATION_UPDATED, ANNOTATION_DELETED, SCENARIO_RUN_FINISHED, "
                   "MODEL_TRAINED, QUERIES_UPDATED.")
@click.option("--secret", help="Sign bodies with HMAC-SHA256 (X-Labelloop-Signature).")
@click.pass_obj
def webhook_add(state: State, url: str, events: tuple[str, ...], secret: str | None):
    """Send events to URL (replaces a receiver with the same URL)."""
    from .webhooks import add_hook

    hook = add_hook(state.project, url, list(events) or None, secret)
    click.echo(f"webhook {hook['url']}: events {', '.join(hook['events'])}"
               f"{' (signed)' if secret else ''}")


@webhook.command("list")
@click.pass_obj
def webhook_list(state: State):
    """Receivers of project.json and their pending deliveries."""
    from .webhooks import PENDING, hooks, outbox

    pending = [r["url"] for r in outbox(state.project, PENDING, limit=100000)]
    rows = [{"url": h["url"], "events": ",".join(h.get("events") or ["*"]),
             "signed": "yes" if h.get("secret") else "no", "pending": pending.count(h["url"])}
            for h in hooks(state.project)]
    _print_table(rows, ["url", "events", "signed", "pending"])


@webhook.command("remove")
@click.argument("url")
@click.pass_obj
def webhook_remove(state: State, url: str):
    """Stop sending to URL (its pending deliveries are dropped)."""
    from .webhooks import remove_hook

    remove_hook(state.project, url)
    click.echo(f"removed webhook {url}")


@webhook.command("test")
@click.argument("url")
@click.pass_obj
def webhook_test(state: State, url: str):
    """Send a PING to URL now and show the answer."""
    from .webhooks import send_test

    result = send_test(state.project, url)
    if not result["delivered"]:
        raise LabelloopError(f"webhook {url} failed: {result['error']}")
    click.echo(f"webhook {url}: HTTP {result['status_code']} in {result['seconds']:.3f}s")


@webhook.command("log")
@click.option("-n", "--limit", default=20, show_default=True, help="Attempts to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def webhook_log(state: State, limit: int, as_json: bool):
    """The latest delivery attempts, newest first."""
    from .webhooks import delivery_log

    rows = delivery_log(state.project, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["result"] = r["status_code"] if r["ok"] else (r["error"] or r["status_code"])
    _print_table(rows, ["at", "event", "url", "attempt", "result", "outbox_id"])


@webhook.command("send")
@click.option("--timeout", default=30.0, show_default=True, help="Give up after SECONDS.")
@click.pass_obj
def webhook_send(state: State, timeout: float):
    """Deliver the pending events that are due now (the server does this on its own)."""
    from .webhooks import Sender

    sender = Sender(state.project)
    n = sender.drain(timeout)
    sender.pool.shutdown(wait=False)
    click.echo(f"tried {n} deliveries")



# ---------------------------------------------------------------- database schema
@cli.group("db")
def db_group():
    """The database schema: its revision per migration history (the host's, each plugin's)."""


def _db_histories(state: State) -> list:
    from .migrations import histories

    return histories(state.project.registry)


@db_group.command("current")
@click.pass_obj
def db_current(state: State):
    """Show the revision of each migration history and its newest revision."""
    from .migrations import current

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
    from .migrations import upgrade
    from .project import write_transaction

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


if __name__ == "__main__":
    main()
