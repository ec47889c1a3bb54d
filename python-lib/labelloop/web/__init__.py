"""The web server: webapps as Bokeh apps, the JSON API, identity and tokens.

Public API for webapp backends: `session_user(doc)` (the user of a browser session) and
`FileResponse` (what a route handler returns to answer a file: see `labelloop.web.webapps`).
Server internals (imported lazily): `labelloop.web.server.serve`, `LabelloopServer`.
"""

from __future__ import annotations

from typing import Any

from .webapps import FileResponse


def session_user(doc: Any) -> str:
    """The user of the browser session that owns a Bokeh document ('anonymous' if unknown)."""
    from .server import session_user as _session_user

    return _session_user(doc)


__all__ = ["session_user", "FileResponse"]
