"""Plugins: one pluggy PluginManager fed by directory plugins, entry points and built-ins."""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .descriptors import descriptor_errors, load_json, validate_descriptor
from .errors import DescriptorError, LabelloopError, NotFoundError

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
    here = Path(__file__).resolve()
    for root in (here.parent / "builtin_plugin", here.parents[2]):
        if (root / "plugin.json").is_file():
            return root
    return None


def env_plugin_dirs() -> list[Path]:
    """Extra plugin directories from LABELLOOP_PLUGIN_PATH (os.pathsep-separated)."""
    value = os.environ.get("LABELLOOP_PLUGIN_PATH", "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


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


def call_hook_per_plugin(pm: pluggy.PluginManager, name: str, kwargs_for: Callable[[str], dict],
                         wanted: Callable[[str], bool] | None = None,
                         ) -> list[tuple[str, Exception | None]]:
    """Call hook `name` through pluggy once per implementing plugin, attributing what it does.

    `kwargs_for(plugin_name)` builds the hook's arguments (a `register` closure that knows the
    plugin). Each call is `pm.subset_hook_caller` keeping that plugin and every hookwrapper, so
    `tryfirst`/`trylast` order, wrappers and tracing apply as for `pm.hook.<name>(...)`.
    `wanted(plugin_name)` limits which plugins are called. Returns `(plugin name, exception or
    None)` per plugin, in call order.
    """
    caller = getattr(pm.hook, name, None)
    if caller is None:
        return []
    impls = caller.get_hookimpls()
    wrappers = {i.plugin_name for i in impls if i.hookwrapper or getattr(i, "wrapper", False)}
    plain = [i.plugin_name for i in reversed(impls) if i.plugin_name not in wrappers]
    called = [n for n in plain if wanted is None or wanted(n)]
    outcome: list[tuple[str, Exception | None]] = []
    for plugin_name in called:
        others = [pm.get_plugin(n) for n in plain if n != plugin_name]
        sub = pm.subset_hook_caller(name, remove_plugins=others)
        try:
            sub(**kwargs_for(plugin_name))
        except Exception as exc:
            outcome.append((plugin_name, exc))
        else:
            outcome.append((plugin_name, None))
    return outcome


@dataclass
class Component:
    """A recipe, webapp, trigger or step of a plugin."""

    plugin: str
    kind: str
    id: str
    descriptor: dict
    path: Path | None = None  # the component's directory (directory plugins)
    callables: dict[str, Callable] = field(default_factory=dict)
    _module: ModuleType | None = field(default=None, repr=False)
    namespace: PluginNamespace | None = field(default=None, repr=False)

    @property
    def type(self) -> str:
        return f"{self.plugin}/{self.id}"

    @property
    def label(self) -> str:
        return self.descriptor.get("meta", {}).get("label") or self.id

    @property
    def params(self) -> list[dict]:
        return self.descriptor.get("params", [])

    def module(self) -> ModuleType:
        """The component's code module, imported on first use."""
        if self._module is None:
            code = self.path / COMPONENT_DIRS[self.kind][2]
            name = f"labelloop_components.{self.plugin}.{self.kind}.{self.id}".replace("-", "_")
            spec = importlib.util.spec_from_file_location(name, code)
            module = importlib.util.module_from_spec(spec)
            if self.namespace is not None:  # `import util` finds this plugin's own util.py
                module.__dict__["__builtins__"] = self.namespace.builtins
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise LabelloopError(f"component {self.type}: cannot import {code}: "
                                     f"{type(exc).__name__}: {exc}") from exc
            self._module = module
        return self._module

    def entry(self, name: str | None = None) -> Callable:
        """The component's entry point (`run`, `check` or `create_backend`)."""
        name = name or ENTRY_FUNCTIONS[self.kind]
        if name in self.callables:
            return self.callables[name]
        if self.path is None:
            raise LabelloopError(f"component {self.type} registered no {name}() callable")
        func = getattr(self.module(), name, None)
        if not callable(func):
            raise LabelloopError(f"component {self.type}: {self.path / COMPONENT_DIRS[self.kind][2]}"
                                 f" defines no {name}() function")
        return func


@dataclass
class PluginInfo:
    id: str
    source: str  # builtin | directory | entrypoint
    path: Path | None = None
    descriptor: dict = field(default_factory=dict)
    status: str = "loaded"
    error: str | None = None


class PluginRegistry:
    """The plugin manager and every component its plugins provide."""

    def __init__(self, plugin_dirs: Iterable[str | os.PathLike] = (), load_entry_points: bool = True,
                 builtin_dir: Path | None | bool = True):
        self.pm = pluggy.PluginManager("labelloop")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, Component] = {}
        allowed = os.environ.get("LABELLOOP_LOAD_PLUGINS")
        self._allowed = None if allowed is None else {p.strip() for p in allowed.split(",") if p.strip()}

        for modname in BUILTIN_MODULES:
            self._register_module("labelloop", modname, "builtin")
        self.namespaces: dict[str, PluginNamespace] = {}
        dirs: list[Path] = []
        self._builtin_dir: Path | None = None
        if builtin_dir is True:
            builtin = builtin_plugin_dir()
            if builtin:
                dirs.append(builtin)
                self._builtin_dir = builtin
        elif builtin_dir:
            dirs.append(Path(builtin_dir))
            self._builtin_dir = Path(builtin_dir)
        dirs += [Path(p) for p in plugin_dirs] + env_plugin_dirs()
        seen: set[Path] = set()
        for d in dirs:
            if d.resolve() not in seen:
                seen.add(d.resolve())
                self._load_directory(d)
        if load_entry_points:
            self._load_entry_points()
        self._collect_components()

    # ---- loading ----
    def _fail(self, plugin_id: str, source: str, path: Path | None, reason: str) -> None:
        info = self.plugins.get(plugin_id) or PluginInfo(plugin_id, source, path)
        info.status, info.error = "failed", reason
        self.plugins[plugin_id] = info

    def _skip(self, plugin_id: str) -> bool:
        return self._allowed is not None and plugin_id not in self._allowed and plugin_id != "labelloop"

    def _register_module(self, plugin_id: str, modname: str, source: str,
                         path: Path | None = None) -> ModuleType | None:
        try:
            module = importlib.import_module(modname)
            specs = getattr(module, "hookspecs", None)
            if specs is not None:
                self.pm.add_hookspecs(specs)
            self.pm.register(module, name=f"{plugin_id}:{modname}")
        except Exception as exc:
            self._fail(plugin_id, source, path, f"cannot load hooks module {modname!r}: "
                       f"{type(exc).__name__}: {exc}")
            return None
        self.plugins.setdefault(plugin_id, PluginInfo(plugin_id, source, path))
        return module

    def _load_directory(self, directory: Path) -> None:
        manifest = directory / "plugin.json"
        plugin_id = directory.name
        try:
            if not manifest.is_file():
                raise LabelloopError(f"{directory} is not a plugin directory (no plugin.json)")
            descriptor = validate_descriptor("plugin", load_json(manifest), manifest)
            plugin_id = descriptor["id"]
            if self._skip(plugin_id):
                return
            if plugin_id in self.plugins and self.plugins[plugin_id].status == "loaded":
                raise LabelloopError(f"a plugin with id {plugin_id!r} is already loaded from "
                                     f"{self.plugins[plugin_id].path}")
            components = list(self._scan_components(plugin_id, directory))
        except LabelloopError as exc:
            self._fail(plugin_id, "directory", directory, str(exc))
            return
        lib = directory / "python-lib"
        namespace = None
        if lib.is_dir():
            if self._is_builtin(directory):
                # The built-in plugin's packages (`labeling`) are installed with the host.
                if str(lib) not in sys.path:
                    sys.path.append(str(lib))
            else:
                namespace = PluginNamespace(plugin_id, lib)
                self.namespaces[plugin_id] = namespace
        self.plugins[plugin_id] = PluginInfo(plugin_id, "directory", directory, descriptor)
        for modname in descriptor.get("hooks", []):
            importable = namespace.module_name(modname) if namespace else modname
            if self._register_module(plugin_id, importable, "directory", directory) is None:
                return
        for comp in components:
            comp.namespace = namespace
            self.components[comp.type] = comp

    def _is_builtin(self, directory: Path) -> bool:
        return self._builtin_dir is not None and directory.resolve() == self._builtin_dir.resolve()

    @staticmethod
    def _scan_components(plugin_id: str, directory: Path):
        for kind, comp_dir, desc_path in component_dirs(directory):
            if desc_path.is_file():
                descriptor = validate_descriptor(kind, load_json(desc_path), desc_path)
                yield Component(plugin_id, kind, comp_dir.name, descriptor, comp_dir)

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self._skip(ep.name):
                continue
            if ep.name in self.plugins:
                other = self.plugins[ep.name]
                if other.status == "loaded":
                    self._fail(f"{ep.name} (entry point {ep.value})", "entrypoint", None,
                               f"a plugin with id {ep.name!r} is already loaded from "
                               f"{other.path or other.source}: rename one of them")
                continue
            try:
                module = ep.load()
                specs = getattr(module, "hookspecs", None)  # a plugin may add hooks of its own
                if specs is not None:
                    self.pm.add_hookspecs(specs)
                self.pm.register(module, name=f"{ep.name}:entrypoint")
            except Exception as exc:
                self._fail(ep.name, "entrypoint", None, f"{type(exc).__name__}: {exc}")
                continue
            self.plugins[ep.name] = PluginInfo(ep.name, "entrypoint")

    def register_plugin(self, plugin_id: str, obj: Any) -> None:
        """Register a Python object implementing hooks (tests, embedding) and its components."""
        name = f"{plugin_id}:object"
        self.pm.register(obj, name=name)
        self.plugins.setdefault(plugin_id, PluginInfo(plugin_id, "python"))
        specs = getattr(obj, "hookspecs", None)
        if specs is not None:
            self.pm.add_hookspecs(specs)
        self._collect_components(only={name})

    @staticmethod
    def plugin_of(plugin_name: str) -> str:
        """The plugin id of a pluggy plugin name (`<plugin id>:<module>`)."""
        return plugin_name.split(":", 1)[0]

    def _collect_components(self, only: set[str] | None = None) -> None:
        found: dict[str, list[Component]] = {}

        def kwargs_for(plugin_name: str) -> dict:
            plugin_id = self.plugin_of(plugin_name)
            comps = found.setdefault(plugin_id, [])
            return {"register": lambda descriptor: comps.append(
                self._python_component(plugin_id, descriptor))}

        def wanted(plugin_name: str) -> bool:
            plugin_id = self.plugin_of(plugin_name)
            if only is not None and plugin_name not in only:
                return False
            return self.plugins.get(plugin_id, PluginInfo(plugin_id, "?")).status != "failed"

        for plugin_name, exc in call_hook_per_plugin(self.pm, "register_components", kwargs_for,
                                                     wanted):
            plugin_id = self.plugin_of(plugin_name)
            comps = found.pop(plugin_id, [])
            if exc is not None:
                self._fail(plugin_id, self.plugins.get(plugin_id, PluginInfo(plugin_id, "?")).source,
                           None, f"register_components failed: {type(exc).__name__}: {exc}")
                continue
            for comp in comps:
                self.components[comp.type] = comp

    def hooks_of(self, plugin_id: str) -> list[str]:
        """Every hook a plugin implements, sorted."""
        names = set()
        for plugin_name, plugin in self.pm.list_name_plugin():
            if self.plugin_of(plugin_name) == plugin_id:
                names.update(c.name for c in self.pm.get_hookcallers(plugin) or [])
        return sorted(names)

    @staticmethod
    def _python_component(plugin_id: str, descriptor: dict) -> Component:
        source = f"<python component of plugin {plugin_id}>"
        if not isinstance(descriptor, dict):
            raise DescriptorError(source, "register() takes a descriptor dict")
        kind = descriptor.get("kind")
        if kind not in COMPONENT_DIRS:
            raise DescriptorError(source, f"'kind' must be one of {', '.join(COMPONENT_DIRS)}, "
                                  f"got {kind!r}", pointer="/kind")
        comp_id = descriptor.get("id")
        if not isinstance(comp_id, str) or not comp_id:
            raise DescriptorError(source, "'id' (a non-empty string) is required", pointer="/id")
        callables = {k: v for k, v in descriptor.items() if callable(v)}
        fn = ENTRY_FUNCTIONS[kind]
        if fn not in callables:
            raise DescriptorError(source, f"a {kind} needs a callable {fn!r}", pointer=f"/{fn}")
        data = {k: v for k, v in descriptor.items() if k not in callables and k not in ("kind", "id")}
        data = validate_descriptor(kind, data, f"{source} {comp_id}")
        return Component(plugin_id, kind, comp_id, data, None, callables)

    # ---- queries ----
    def component(self, type_: str, kind: str | None = None) -> Component:
        """The component `plugin-id/component-id`, optionally of a given kind."""
        comp = self.components.get(type_)
        if comp is None or (kind and comp.kind != kind):
            known = sorted(t for t, c in self.components.items() if not kind or c.kind == kind)
            what = f"{kind} component" if kind else "component"
            hint = ""
            plugin = type_.split("/", 1)[0]
            if plugin in self.plugins and self.plugins[plugin].status == "failed":
                hint = f"; its plugin failed to load: {self.plugins[plugin].error}"
            raise NotFoundError(f"unknown {what} type {type_!r} (known: {', '.join(known) or 'none'})"
                                f"{hint}")
        return comp

    def by_kind(self, kind: str) -> list[Component]:
        return sorted((c for c in self.components.values() if c.kind == kind), key=lambda c: c.type)

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]


def component_dirs(directory: Path) -> Iterable[tuple[str, Path, Path]]:
    """`(kind, component directory, descriptor path)` of every component directory of a plugin."""
    for kind, (sub, desc_file, _code, _fn) in COMPONENT_DIRS.items():
        base = directory / sub
        if base.is_dir():
            for comp_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                yield kind, comp_dir, comp_dir / desc_file


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


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
