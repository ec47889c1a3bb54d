"""Where plugins come from: the built-in plugin, plugin directories, entry points, and the
layout of a directory plugin's components."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ENTRY_POINT_GROUP = "labelloop"
# The host's own components, shipped as ordinary plugins.
BUILTIN_MODULES = ("labelloop.builtin",)

# kind -> (directory in a plugin, descriptor file, code file, entry point function)
COMPONENT_DIRS: dict[str, tuple[str, str, str, str]] = {
    "recipe": ("custom-recipes", "recipe.json", "recipe.py", "run"),
    "webapp": ("webapps", "webapp.json", "backend.py", "create_backend"),
    "trigger": ("python-triggers", "trigger.json", "trigger.py", "check"),
    "step": ("python-steps", "step.json", "step.py", "run"),
}
ENTRY_FUNCTIONS = {kind: spec[3] for kind, spec in COMPONENT_DIRS.items()}


def builtin_plugin_dir() -> Path | None:
    """The directory plugin that ships with the host.

    A wheel carries it as `labelloop/builtin_plugin/` (copied there by setup.py); a checkout or
    an editable install uses the repository root itself.
    """
    env = os.environ.get("LABELLOOP_BUILTIN_PLUGIN")
    if env is not None:
        return Path(env) if env else None
    package = Path(__file__).resolve().parents[1]  # labelloop/
    for root in (package / "builtin_plugin", package.parents[1]):
        if (root / "plugin.json").is_file():
            return root
    return None


def env_plugin_dirs() -> list[Path]:
    """Extra plugin directories from LABELLOOP_PLUGIN_PATH (os.pathsep-separated)."""
    value = os.environ.get("LABELLOOP_PLUGIN_PATH", "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def component_dirs(directory: Path) -> Iterable[tuple[str, Path, Path]]:
    """`(kind, component directory, descriptor path)` of every component directory of a plugin."""
    for kind, (sub, desc_file, _code, _fn) in COMPONENT_DIRS.items():
        base = directory / sub
        if base.is_dir():
            for comp_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                yield kind, comp_dir, comp_dir / desc_file
