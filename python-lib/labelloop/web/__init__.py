"""The web server: webapps as Bokeh apps, the JSON API, identity and tokens.

Public API for webapp backends: `session_user(doc)` (the user of a browser session).
Server internals (imported lazily): `labelloop.web.server.serve`, `LabelloopServer`.
"""

from __future__ import annotations

from typing import Any


def session_user(doc: Any) -> str:
    """The user of the browser session that owns a Bokeh document ('anonymous' if unknown)."""
    from .server import session_user as _session_user

    return _session_user(doc)


__all__ = ["session_user"]
