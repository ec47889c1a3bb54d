"""Plugins: one pluggy PluginManager fed by directory plugins, entry points and built-ins.

`discovery` (where plugins come from, a directory plugin's layout), `namespace` (the import
system giving each directory plugin's `python-lib` a package of its own), `registry` (the
plugin manager and the components), `validation` (`labelloop plugin validate`).
`PluginRegistry` and `validate_plugin_dir` are public (docs/plugins.md): tests of a plugin
load it with them.
"""

from .discovery import (
    BUILTIN_MODULES,
    COMPONENT_DIRS,
    ENTRY_FUNCTIONS,
    ENTRY_POINT_GROUP,
    builtin_plugin_dir,
    component_dirs,
    env_plugin_dirs,
)
from .namespace import NAMESPACE_PACKAGE, PluginNamespace
from .registry import Component, PluginInfo, PluginRegistry, call_hook_per_plugin
from .validation import validate_plugin_dir

__all__ = ["BUILTIN_MODULES", "COMPONENT_DIRS", "ENTRY_FUNCTIONS", "ENTRY_POINT_GROUP",
           "NAMESPACE_PACKAGE", "Component", "PluginInfo", "PluginNamespace", "PluginRegistry",
           "builtin_plugin_dir", "call_hook_per_plugin", "component_dirs", "env_plugin_dirs",
           "validate_plugin_dir"]
