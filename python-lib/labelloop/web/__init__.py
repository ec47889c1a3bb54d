"""The web server: webapps as Bokeh apps, the JSON API, identity and tokens.

Public API for webapp backends: `session_user(doc)` (the user of a browser session),
`FileResponse` (what a route handler returns to answer a file: see `labelloop.web.webapps`),
`tokens_configured(engine)` (whether the server requires a token), `role_of(engine, user)`
(the user's role, `annotator` | `reviewer` | `admin`: `admin` for everyone without tokens;
how a route handler or a page learns what its caller may see), `check_user_name(name)`
(the rule for user names: 1 to 100 printable characters, stripped), `free_port(host)` (a
port nobody listens on right now), `check_port(host, port)` (a one-line error when a
server could not listen there), `webapp_config(webapp, cfg, registry)` (a webapp's component
and its params checked by `validate_config`, as the server makes them), and `serve(project, ServeOptions(...))` to run the server
from a plugin command (imported on first use).
Server internals: `labelloop.web.server.LabelloopServer`.
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import LabelloopError
from .webapps import FileResponse, webapp_config


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now on `host` (IPv4 or IPv6)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cannot_listen(host: str, port: int, exc: OSError) -> LabelloopError:
    """The one-line error of a server that cannot listen on `host:port`."""
    return LabelloopError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                          "server may use this port: choose another with --port, or stop "
                          "that one)")


def check_port(host: str, port: int) -> None:
    """Raise `cannot_listen`'s error when a server could not listen on `host:port` now (a
    command checks before it announces its address)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise cannot_listen(host, port, exc) from None


def session_user(doc: Any) -> str:
    """The user of the browser session that owns a Bokeh document ('anonymous' if unknown)."""
    from .server import session_user as _session_user

    return _session_user(doc)


def tokens_configured(engine: Any) -> bool:
    """True when the project has at least one token: the server then requires one."""
    from .auth import tokens_configured as _tokens_configured

    return _tokens_configured(engine)


def role_of(engine: Any, user: str) -> str:
    """The role of `user` (`annotator` < `reviewer` < `admin`): `admin` when the project has no
    token (everyone may do everything), else the role of the user's tokens."""
    from .auth import role_of as _role_of

    return _role_of(engine, user)


def check_user_name(user: str) -> str:
    """A user name as the server accepts it (stripped: 1 to 100 printable characters), else a
    `LabelloopError` saying what to use: the one rule for tokens, requests and plugins."""
    from .auth import check_user_name as _check_user_name

    return _check_user_name(user)


def __getattr__(name: str) -> Any:
    # The server (Tornado, Bokeh) loads only when a plugin asks for it.
    if name in ("serve", "ServeOptions"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["session_user", "FileResponse", "tokens_configured", "role_of", "check_user_name", "free_port",
           "check_port", "webapp_config", "serve", "ServeOptions"]
