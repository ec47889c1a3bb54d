"""`labelloop demo`: a demo project for the active-learning loop (filled in by the loop issue)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    default="demo-project",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to create the demo project.",
)
@click.option("--no-browser", is_flag=True, help="Don't open a browser.")
def demo_command(directory: str, no_browser: bool):
    """Create a demo project (the full active-learning demo arrives with the loop)."""
    from labelloop.project import Project

    path = Path(directory)
    if (path / "project.json").exists():
        project = Project.open(path)
        click.echo(f"demo project {project.key} already exists in {project.dir}")
    else:
        project = Project.init(path, key="DEMO")
        click.echo(
            f"created an empty demo project in {project.dir}; the labeling loop is "
            "not wired yet, so there is nothing to serve"
        )
