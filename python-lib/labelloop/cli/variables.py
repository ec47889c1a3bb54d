"""`labelloop variables`: the project's variables (JSON values)."""

from __future__ import annotations

import json

import click

from .root import State, cli


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
