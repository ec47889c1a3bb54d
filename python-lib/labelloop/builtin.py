"""The host's built-in components, registered through the same hook a third party uses."""

from __future__ import annotations

import time

from .hookspecs import hookimpl

PERIODIC = {
    "kind": "trigger",
    "id": "periodic",
    "meta": {"label": "Every N seconds",
             "description": "Fires when at least N seconds have passed since it last fired."},
    "params": [
        {"name": "seconds", "type": "DOUBLE", "label": "Period (seconds)", "defaultValue": 60,
         "minD": 0.1, "mandatory": True},
        {"name": "fire_at_start", "type": "BOOLEAN", "label": "Fire at the first check",
         "defaultValue": False},
    ],
}


def check_periodic(ctx) -> bool:
    """Fire every `seconds` seconds; the last firing time is kept in the trigger's state."""
    now = time.time()
    last = ctx.state.get("last_fired")
    if last is None:
        if ctx.config.get("fire_at_start"):
            ctx.state["last_fired"] = now
            return True
        ctx.state["last_fired"] = now
        return False
    if now - float(last) >= float(ctx.config["seconds"]):
        ctx.state["last_fired"] = now
        return True
    return False


@hookimpl
def register_components(register):
    register({**PERIODIC, "check": check_periodic})
