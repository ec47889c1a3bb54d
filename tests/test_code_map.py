"""The README's code map is the one true map of modules: every module and package at the top
of `labelloop` and `labeling` is in it, and every module file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"labelloop": "The host, `python-lib/labelloop/`:",
            "labeling": "The labeling plugin, `python-lib/labeling/`:"}


def map_table(package: str) -> str:
    """The rows of the code map's table of `package`."""
    text = (REPO / "README.md").read_text().split("### Code map", 1)[1]
    after = text.split(PACKAGES[package], 1)[1].lstrip("\n")
    rows = []
    for line in after.splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return "\n".join(rows)


def first_cells(table: str) -> str:
    return "\n".join(line.split("|")[1] for line in table.splitlines())


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_top_level_module_is_in_the_map(package):
    root = REPO / "python-lib" / package
    cells = first_cells(map_table(package))
    missing = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(("_", ".")) or child.name == "__pycache__":
            continue
        name = f"`{child.name}/`" if child.is_dir() else f"`{child.name}`"
        if child.suffix == ".py" or child.is_dir():
            if name not in cells and f"`{child.name}/__init__.py`" not in cells:
                missing.append(child.name)
    assert not missing, f"README code map of {package} lacks {missing}: add a row"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_module_the_map_names_exists(package):
    root = REPO / "python-lib" / package
    files = {p.name for p in root.rglob("*.py")}
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", map_table(package)))
    assert named, package
    stale = sorted(named - files)
    assert not stale, f"README code map of {package} names modules that don't exist: {stale}"
