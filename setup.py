"""Packaging step that pyproject.toml cannot express: ship the built-in plugin's tree.

The repository root is the labeling plugin (plugin.json, custom-recipes/, webapps/, ...). A
wheel has no repository root, so the build copies that tree into the `labelloop` package as
`labelloop/builtin_plugin/`, where `labelloop.plugins.builtin_plugin_dir()` finds it. Editable
installs need no copy: they use the checkout itself.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What makes the directory plugin; python-lib/ is installed as ordinary packages instead.
PLUGIN_PARTS = ("plugin.json", "custom-recipes", "webapps", "python-triggers", "python-steps",
                "resource")
SKIP = {"__pycache__", ".pytest_cache"}


def plugin_files():
    """Every file of the built-in plugin, relative to the repository root."""
    for part in PLUGIN_PARTS:
        path = ROOT / part
        if path.is_file():
            yield Path(part)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and not SKIP.intersection(f.relative_to(ROOT).parts) \
                        and f.suffix not in (".pyc", ".pyo"):
                    yield f.relative_to(ROOT)


class BuildPyWithPlugin(build_py):
    """build_py that also copies the plugin tree into labelloop/builtin_plugin/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "labelloop" / "builtin_plugin"
        for rel in plugin_files():
            dest = target / rel
            self.mkpath(str(dest.parent))
            self.copy_file(str(ROOT / rel), str(dest))


setup(cmdclass={"build_py": BuildPyWithPlugin})
