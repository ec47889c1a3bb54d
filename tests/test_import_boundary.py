"""The plugin meets the host only through its public modules (the list in docs/plugins.md).

`labeling`, the components (custom-recipes, webapps, python-triggers, python-steps), the
sample plugins and the guide's examples may import these `labelloop` modules and no other.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PUBLIC_MODULES = {
    "labelloop",
    "labelloop.errors",
    "labelloop.hookspecs",
    "labelloop.project",
    "labelloop.web",
    "labelloop.formats",
    "labelloop.flow",
    "labelloop.descriptors",
    "labelloop.plugins",
}

# Imports of host internals that are allowed for now (none: keep it that way).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

PLUGIN_CODE = ["python-lib/labeling", "custom-recipes", "webapps", "python-triggers",
               "python-steps", "tests/plugins", "docs/examples"]


def plugin_files() -> list[Path]:
    return sorted(p for d in PLUGIN_CODE if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py"))


def host_imports(path: Path) -> set[str]:
    """The `labelloop` modules a file imports (`from labelloop import flow` is labelloop.flow)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "labelloop")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "labelloop":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                # A name that is a module of its own counts as that module.
                is_module = (REPO / "python-lib" / Path(*sub.split("."))).with_suffix(".py").is_file() \
                    or (REPO / "python-lib" / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else node.module)
    return found


def violations() -> list[tuple[str, str]]:
    out = []
    for path in plugin_files():
        rel = path.relative_to(REPO).as_posix()
        for module in sorted(host_imports(path)):
            if module not in PUBLIC_MODULES and (rel, module) not in KNOWN_EXCEPTIONS:
                out.append((rel, module))
    return out


def test_plugin_code_imports_only_public_host_modules():
    bad = violations()
    assert not bad, ("plugin code imports host internals; use a public module (docs/plugins.md, "
                     "'The public host API') or make what you need public there:\n"
                     + "\n".join(f"  {f}: {m}" for f, m in bad))


def test_the_check_catches_an_internal_import(tmp_path, monkeypatch):
    lib = tmp_path / "python-lib" / "labeling"
    lib.mkdir(parents=True)
    (lib / "sneaky.py").write_text("from labelloop.web.auth import tokens_configured\n"
                                   "from labelloop import errors\n"
                                   "import labelloop.project.db as db\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert host_imports(lib / "sneaky.py") == {"labelloop.web.auth", "labelloop",
                                               "labelloop.project.db"}
    assert violations() == [("python-lib/labeling/sneaky.py", "labelloop.project.db"),
                            ("python-lib/labeling/sneaky.py", "labelloop.web.auth")]


def test_the_public_modules_are_the_documented_ones():
    guide = (REPO / "docs" / "plugins.md").read_text()
    section = guide.split("## The public host API", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(labelloop[\w.]*)`", section, re.M))
    assert documented == PUBLIC_MODULES
