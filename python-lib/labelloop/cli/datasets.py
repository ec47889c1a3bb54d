"""`labelloop dataset` and `folder`: importing, exporting and inspecting datasets and
managed folders."""

from __future__ import annotations

from pathlib import Path

import click

from .root import State, _print_table, cli


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
@click.argument("file", type=click.Path())
@click.option("--replace", is_flag=True, help="Overwrite the dataset if it has data.")
@click.option("--format", "fmt", help="csv, parquet, jsonl, label-studio, coco... (default: "
              "from the extension).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Format option (repeatable), e.g. -o encoding=latin-1 -o sep=';' (csv), "
              "-o predictions=queries (label-studio); a key the format doesn't take is "
              "refused with the ones it does.")
@click.pass_obj
def dataset_import(state: State, name: str, file: str, replace: bool, fmt: str | None,
                   options: tuple[str, ...]):
    """Import FILE as dataset NAME (CSV, Parquet, JSON Lines, Label Studio JSON, COCO; YOLO
    and Pascal VOC from a directory or a .zip)."""
    from ..formats import import_file, parse_options

    counts = import_file(state.project, name, file, fmt, replace, parse_options(options),
                         show_progress=True)
    for target, n in counts.items():
        click.echo(f"imported {n} rows into {target}")


@dataset.command("export")
@click.argument("name")
@click.argument("file", type=click.Path())
@click.option("--format", "fmt", help="csv, parquet, jsonl, label-studio, coco... (default: "
              "from the extension).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Format option (repeatable), e.g. -o encoding=cp1252 (csv), "
              "-o metadata=metadata or -o media_prefix=PREFIX (label-studio); a key the "
              "format doesn't take is refused with the ones it does.")
@click.pass_obj
def dataset_export(state: State, name: str, file: str, fmt: str | None, options: tuple[str, ...]):
    """Export dataset NAME to FILE (CSV, Parquet, JSON Lines, Label Studio JSON, COCO; YOLO
    and Pascal VOC to a directory or a .zip)."""
    from ..formats import export_file, parse_options

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
    from ..progress import progress

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
