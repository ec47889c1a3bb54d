"""The hook contract between the host and its plugins."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("labelloop")
hookimpl = pluggy.HookimplMarker("labelloop")


@hookspec
def register_components(register):
    """Register components: call `register(descriptor)` with a dict holding `kind`, `id`, the
    DSS descriptor keys and the entry point callable (`run`, `check` or `create_backend`)."""


@hookspec
def register_commands(cli):
    """Add commands to the `labelloop` click group."""
