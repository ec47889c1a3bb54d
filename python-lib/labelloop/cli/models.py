"""`labelloop model`: the project's saved models and their versions."""

from __future__ import annotations

from typing import Any

import click

from .root import State, _print_table, cli


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
