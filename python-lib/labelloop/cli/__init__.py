"""The `labelloop` command line: `main()`, the root group `cli` and the plugins' commands.

The root group, its options and `init` live in `root`; each command group in a module of its
own (`datasets`, `recipes`, `scenarios`, `serve`, `tokens`, `webhooks`, `db`, `plugins`,
`models`, `variables`). Plugin commands (`register_commands(cli)`) are added by `main()` once per call.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:  # noqa: ANN001 - signal handler
    """Ctrl-C before the command line runs (imports take a moment): one line, no traceback."""
    os.write(2, b"Error: interrupted\n")
    os._exit(130)


def _run_as_program() -> bool:
    """Whether this process is the command line (the `labelloop` script or `python -m
    labelloop.cli`), not a library user importing it."""
    if os.path.basename(sys.argv[0] or "") == "labelloop":
        return True
    # `python -m labelloop.cli` imports this package before it runs `__main__`, while
    # sys.argv[0] is still "-m"; sys.orig_argv holds the interpreter's own arguments.
    argv = getattr(sys, "orig_argv", [])
    return sys.argv[0] == "-m" and (f"-m{__name__}" in argv or any(
        a == "-m" and b == __name__ for a, b in zip(argv, argv[1:], strict=False)))


# Run as a program, not imported by a library user: main() puts Python's usual Ctrl-C
# behaviour back once the imports are done.
if _run_as_program():
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import click  # noqa: E402 - after the handler above, on purpose

from ..errors import LabelloopError  # noqa: E402

# The command groups register themselves on `cli` when imported.
from . import (  # noqa: E402, F401
    datasets,
    db,
    models,
    plugins,
    recipes,
    scenarios,
    serve,
    tokens,
    variables,
    webhooks,
)
from .root import _LOADED, LabelloopGroup, State, _is_project, cli, pass_state  # noqa: E402

__all__ = ["cli", "main", "State", "LabelloopGroup", "pass_state"]

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
    from ..plugins import PluginRegistry

    project_dir, database_url, plugin_dirs = _group_options(args)
    project = None
    if _is_project(project_dir):
        from ..project import Project

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
    from ..plugins import call_hook_per_plugin

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
