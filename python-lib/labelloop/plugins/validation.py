"""`labelloop plugin validate`: every problem of a plugin directory, without loading it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from ..descriptors import descriptor_errors, load_json
from ..errors import DescriptorError
from .discovery import COMPONENT_DIRS, component_dirs


def validate_plugin_dir(directory: str | os.PathLike) -> list[DescriptorError]:
    """Every problem of a plugin directory: descriptors, missing code files, missing entry points."""
    directory = Path(directory)
    errors: list[DescriptorError] = []
    manifest = directory / "plugin.json"
    if not manifest.is_file():
        return [DescriptorError(manifest, "missing: a plugin directory needs a plugin.json")]
    try:
        errors += descriptor_errors("plugin", load_json(manifest), manifest)
    except DescriptorError as exc:
        errors.append(exc)
    for kind, comp_dir, desc_path in component_dirs(directory):
        _sub, desc_file, code_file, fn = COMPONENT_DIRS[kind]
        if not desc_path.is_file():
            errors.append(DescriptorError(desc_path, f"missing: a {kind} needs {desc_file}"))
            continue
        try:
            errors += descriptor_errors(kind, load_json(desc_path), desc_path)
        except DescriptorError as exc:
            errors.append(exc)
        code = comp_dir / code_file
        if not code.is_file():
            errors.append(DescriptorError(code, f"missing: a {kind} needs {code_file} "
                                          f"defining {fn}()"))
            continue
        try:
            tree = ast.parse(code.read_text(), filename=str(code))
        except SyntaxError as exc:
            errors.append(DescriptorError(code, f"syntax error: {exc.msg}", line=exc.lineno))
            continue
        if fn not in _top_level_names(tree):
            errors.append(DescriptorError(code, f"defines no top-level {fn}() function"))
    return errors


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level: defs, classes, assignments and imports.

    Why not only defs: `create_backend = make_backend("image")` or
    `from mylib import run` are valid entry points too.
    """
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names
