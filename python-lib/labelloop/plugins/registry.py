"""The plugin manager and the components its plugins provide."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from .. import hookspecs
from ..descriptors import load_json, validate_descriptor
from ..errors import DescriptorError, LabelloopError, NotFoundError
from .discovery import (
    BUILTIN_MODULES,
    COMPONENT_DIRS,
    ENTRY_FUNCTIONS,
    ENTRY_POINT_GROUP,
    builtin_plugin_dir,
    component_dirs,
    env_plugin_dirs,
)
from .namespace import PluginNamespace


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

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]
