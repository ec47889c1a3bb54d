"""The import system of directory plugins: each plugin's `python-lib` is its own package."""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType

NAMESPACE_PACKAGE = "labelloop_plugins"


def _package_name(plugin_id: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in plugin_id)
    return f"{NAMESPACE_PACKAGE}.{safe}"


class PluginNamespace(importlib.abc.MetaPathFinder):
    """A directory plugin's `python-lib`, importable as `labelloop_plugins.<plugin id>`.

    Why not `sys.path`: two plugins shipping a `util.py` would share one `util` module. Here
    each plugin's modules live under its own package, and the plugin's code (components and
    the modules of its `python-lib`) still writes `import util`: an `__import__` of its own
    maps the top-level names of the plugin's `python-lib` to the plugin's package.
    """

    def __init__(self, plugin_id: str, lib: Path):
        self.plugin_id = plugin_id
        self.lib = lib
        self.package = _package_name(plugin_id)
        self.names = {p.stem for p in lib.glob("*.py")} | {
            p.name for p in lib.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
        self.builtins = dict(vars(builtins))
        self.builtins["__import__"] = self._import
        for finder in [f for f in sys.meta_path if isinstance(f, PluginNamespace)
                       and f.package == self.package]:
            finder.close()  # the same plugin id loaded again (another registry): start anew
        root = sys.modules.get(NAMESPACE_PACKAGE)
        if root is None:
            root = ModuleType(NAMESPACE_PACKAGE, "Directory plugins' python-lib packages")
            root.__path__ = []
            sys.modules[NAMESPACE_PACKAGE] = root
        pkg = ModuleType(self.package, f"python-lib of plugin {plugin_id}")
        pkg.__path__ = [str(lib)]
        pkg.__file__ = None
        pkg.__package__ = self.package
        sys.modules[self.package] = pkg
        setattr(root, self.package.rpartition(".")[2], pkg)
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def close(self) -> None:
        """Forget the plugin's modules (a registry loading the same plugin again starts anew)."""
        for name in [n for n in sys.modules if n == self.package or
                     n.startswith(self.package + ".")]:
            del sys.modules[name]
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def module_name(self, name: str) -> str:
        """The importable name of `name` (a top-level module of the plugin's python-lib)."""
        top = name.partition(".")[0]
        return f"{self.package}.{name}" if top in self.names else name

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if level == 0 and name.partition(".")[0] in self.names:
            module = importlib.import_module(f"{self.package}.{name}")
            if fromlist:
                return module
            return sys.modules[f"{self.package}.{name.partition('.')[0]}"]
        return builtins.__import__(name, globals, locals, fromlist, level)

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if not fullname.startswith(self.package + "."):
            return None
        parent = sys.modules.get(fullname.rpartition(".")[0])
        search = list(getattr(parent, "__path__", None) or [str(self.lib)])
        spec = importlib.machinery.PathFinder.find_spec(fullname, search)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _NamespacedLoader(spec.loader.name, spec.loader.path, self.builtins)
        return spec


class _NamespacedLoader(importlib.machinery.SourceFileLoader):
    """Runs a plugin module with its plugin's `__import__`."""

    def __init__(self, fullname: str, path: str, builtins_: dict):
        super().__init__(fullname, path)
        self._builtins = builtins_

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self._builtins
        super().exec_module(module)
