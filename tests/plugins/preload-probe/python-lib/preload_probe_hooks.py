"""Asks the scheduler to preload `preload_probe_marker` (on PYTHONPATH: tests/plugins/preload-probe/marker)."""

from labelloop.hookspecs import hookimpl


@hookimpl
def register_preload_modules(register):
    register(["preload_probe_marker", "no_such_module_anywhere"])
