"""`labelloop plugin list|validate`: what the loaded plugins provide, and checking one."""

from __future__ import annotations

import sys
from typing import Any

import click

from .root import State, _print_table, cli


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
    from .. import hookspecs
    from ..plugins import call_hook_per_plugin

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
    from ..plugins import validate_plugin_dir

    errors = validate_plugin_dir(path)
    for err in errors:
        click.echo(f"error: {err}", err=True)
    if errors:
        click.echo(f"{len(errors)} error(s) in {path}", err=True)
        sys.exit(1)
    click.echo(f"{path}: plugin is valid")
