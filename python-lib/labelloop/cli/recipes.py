"""`labelloop recipe` and `flow`: running the recipes of the flow and building outputs."""

from __future__ import annotations

import click

from .root import State, _interrupt_on_sigterm, _print_table, cli


@cli.group()
def recipe():
    """Recipes of the flow."""


@recipe.command("run")
@click.argument("name")
@click.pass_obj
def recipe_run(state: State, name: str):
    """Run recipe instance NAME of project.json."""
    from ..flow import run_recipe

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
    from ..flow import build

    record = build(state.project, dataset_name)
    click.echo(f"built {dataset_name} with recipe {record['name']}: {record['status']}")
