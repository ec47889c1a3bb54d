"""Which `Host` and `Origin` a request may carry: the guard against DNS rebinding and
cross-site request forgery, applied to every request of the server.

`guard_every_request(app, guard)` puts a rule in front of all of Tornado's routes, so a
request under a foreign `Host` is answered 403 before any handler runs: the JSON API, the
pages (`/webapps/<id>`), `/login`, static files and the Bokeh websocket handshake. Why the
handshake needs it: Tornado accepts a websocket whose `Origin` equals its `Host` without
asking Bokeh's origin check, and a DNS-rebound page sends exactly that. The API handlers also
check a write's `Origin` (`RequestGuard.check_origin`).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from tornado.routing import Matcher, Rule

from ..errors import LabelloopError


class ForbiddenRequestError(LabelloopError):
    """A request refused for where it comes from or how it is sent (request forgery)."""

    status = 403


def _host_name(host: str) -> str:
    """The name part of a `Host` header value or of `host[:port]` (lower case, no brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass
class RequestGuard:
    """Which `Host` and `Origin` a request may carry (DNS rebinding, cross-site forgery).

    A Host that is an IP address can't come from a rebound name, so it is always accepted;
    names must be this server's (localhost, the bound name, the machine's names) or one of
    `--allow-websocket-origin`. A write's `Origin`, when the browser sends one, must be the
    request's own host (same origin) or an allowed one.
    """

    names: set[str] = field(default_factory=lambda: {"localhost"})
    extra: set[str] = field(default_factory=set)  # allowed host[:port] from the command line

    @classmethod
    def for_server(cls, bound: str, port: int, extra_origins: list[str] | tuple[str, ...] = (),
                   machine_names: tuple[str, ...] = ()) -> RequestGuard:
        names = {"localhost", "localhost.localdomain", _host_name(bound),
                 *(_host_name(n) for n in machine_names if n)}
        extra = {o.strip().lower() for o in extra_origins if o.strip()}
        names |= {_host_name(o) for o in extra}
        return cls(names, extra)

    def check_host(self, host: str | None) -> None:
        name = _host_name(host or "")
        if not name or not (_is_ip(name) or name in self.names):
            raise ForbiddenRequestError(
                f"request refused: Host {host!r} is not a name of this server (a page served "
                "under another name may be a DNS-rebinding attack); use the server's address, "
                "or start it with --allow-websocket-origin HOST behind a proxy")

    def check_origin(self, origin: str | None, host: str | None) -> None:
        if origin is None:
            return  # not a browser (browsers send Origin with every cross-origin write)
        parts = urlsplit(origin.strip())
        netloc = parts.netloc.lower()
        if parts.scheme in ("http", "https") and netloc and \
                (netloc == (host or "").strip().lower() or netloc in self.extra):
            return
        raise ForbiddenRequestError(
            f"request refused: Origin {origin!r} is not this server ({host!r}): pages of other "
            "sites may not change data here (allow a proxy's origin with "
            "--allow-websocket-origin HOST[:PORT])")


class _ForeignHost(Matcher):
    """Matches the requests whose `Host` is not a name of this server."""

    def __init__(self, guard: RequestGuard):
        self.guard = guard

    def match(self, request: Any) -> dict | None:
        try:
            self.guard.check_host(request.headers.get("Host"))
        except ForbiddenRequestError:
            return {}
        return None


class ForeignHostHandler(tornado.web.RequestHandler):
    """The 403 of a request under a foreign `Host` (JSON under /api/, text elsewhere)."""

    def initialize(self, guard: RequestGuard) -> None:
        self.guard = guard

    def check_xsrf_cookie(self) -> None:  # refused below whatever it carries
        pass

    def prepare(self) -> None:
        try:
            self.guard.check_host(self.request.headers.get("Host"))
            message = "request refused"  # the Host changed between match and here: refuse
        except ForbiddenRequestError as exc:
            message = str(exc)
        self.set_status(403)
        self.set_header("Cache-Control", "no-store")
        if self.request.path.startswith("/api/"):
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"error": message}))
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(message + "\n")


def guard_every_request(app: tornado.web.Application, guard: RequestGuard) -> None:
    """Refuse (403) every request of `app` whose `Host` is foreign, before any of its routes."""
    rule = app.default_router.process_rule(
        Rule(_ForeignHost(guard), ForeignHostHandler, {"guard": guard}))
    app.default_router.rules.insert(0, rule)
