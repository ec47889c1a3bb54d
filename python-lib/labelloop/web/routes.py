"""API routes that plugins mount outside `/api/v1/webapps/<id>/` (hook `register_api_routes`).

A plugin's hook implementation calls `register(path, handler, methods=("GET",), auth=True,
role=None)`:

- `path`: relative to `/api/v1`, with `{name}` parts matching one path segment of letters,
  digits, `_` and `-` (e.g. `"/ml-backends/{webapp}/predict"`); a trailing `/` is optional;
- `handler(request)`: runs in the API's thread pool with an `ApiRequest`; returns JSON-able
  data (status 200) or a `(status, data)` tuple; raises `LabelloopError` for a 4xx answer;
- `auth`: True applies the API's identity rules (a token when the project has tokens), and
  also accepts the token as the password of HTTP Basic auth or as `Authorization: Token <t>`,
  the forms other tools (Label Studio) send; False answers anyone;
- `role`: `"reviewer"` or `"admin"` answers 403 before the handler to a caller whose role is
  lower (as a webapp route spec's `"role"`; without tokens everyone is admin).

`ApiRequest.host` gives the handler the server's project, webapp backends and scenario
launcher, the same objects the host's own routes use.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LabelloopError
from .api import Api, ApiHandler
from .auth import ROLES, AuthenticationError
from .webapps import API_PREFIX, BODY_METHODS, METHODS

log = logging.getLogger("labelloop.api")

_PART = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


@dataclass
class ApiHost:
    """What a plugin route may use of the running server."""

    api: Api

    @property
    def project(self) -> Any:
        return self.api.project

    def webapp_ids(self) -> list[str]:
        return self.api.webapps.ids()

    def webapp_backend(self, webapp: str) -> Any:
        """The created backend of a webapp instance (NotFoundError / 503 when it can't be)."""
        return self.api.webapps.get(webapp).backend

    def launch_scenario(self, name: str, trigger: dict | None = None) -> int:
        """Start a run of scenario `name` in the background; its run id."""
        return self.api.scheduler.launch(name, trigger or {"kind": "api"})


@dataclass
class ApiRequest:
    """One request to a plugin route."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    user: str
    host: ApiHost
    raw_body: bytes = field(default=b"", repr=False)


@dataclass
class PluginRoute:
    path: str
    handler: Callable[[ApiRequest], Any]
    methods: tuple[str, ...]
    auth: bool
    plugin: str
    role: str | None = None

    @property
    def pattern(self) -> str:
        body = _PART.sub(lambda m: f"(?P<{m.group(1)}>{SEGMENT})", self.path.rstrip("/"))
        return f"{API_PREFIX}{body}/?"


def _basic_token(headers: Any) -> str | None:
    """The password of `Authorization: Basic ...`, or the token of `Authorization: Token ...`."""
    value = headers.get("Authorization") or ""
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "token" and rest.strip():
        return rest.strip()
    if scheme.lower() != "basic" or not rest.strip():
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed HTTP Basic credentials") from None
    _user, sep, password = decoded.partition(":")
    return password if sep and password else None


class PluginRouteHandler(ApiHandler):
    """Tornado handler of one plugin route."""

    def initialize(self, api: Api, route: PluginRoute) -> None:  # type: ignore[override]
        super().initialize(api)
        self.route = route
        self.auth_required = route.auth

    def authenticate(self) -> None:
        token = _basic_token(self.request.headers)
        if token is not None:
            if not self.api.identity.required():
                return  # a token-less server answers anyone; the credentials are not checked
            self.user, self.auth_how = self.api.identity.resolve(
                {"Authorization": f"Bearer {token}"}, {})
            return
        super().authenticate()

    def send_json(self, value: Any, status: int = 200) -> None:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
            status, value = value
        super().send_json(value, status)

    async def _any(self, **params: str) -> None:
        method = self.request.method
        if method not in self.route.methods:
            def refuse() -> None:
                raise MethodNotAllowed(f"{self.request.path} does not accept {method} (use "
                                       f"{', '.join(self.route.methods)})")
            await self.handle(refuse)
            return

        def work() -> Any:
            if self.route.role is not None:
                self.check_role(self.route.role, f"{method} {self.route.path}")
            body = self.json_body() if method in BODY_METHODS else None
            req = ApiRequest(method, self.request.path, dict(params), self.query_args(),
                             dict(self.request.headers), body, self.user, ApiHost(self.api),
                             b"".join(self._chunks))
            return self.route.handler(req)

        await self.handle(work)

    get = post = put = patch = delete = _any


class MethodNotAllowed(LabelloopError):
    status = 405


def collect_routes(registry: Any) -> list[PluginRoute]:
    """The routes plugins register through `register_api_routes`."""
    from ..plugins import call_hook_per_plugin

    routes: list[PluginRoute] = []

    def kwargs_for(plugin_name: str) -> dict:
        def register(path: str, handler: Callable, methods: Any = ("GET",),
                     auth: bool = True, role: str | None = None) -> None:
            if not isinstance(path, str) or not path.startswith("/"):
                raise LabelloopError(f"plugin {plugin_name}: API route path {path!r} must start "
                                     "with '/'")
            if path.rstrip("/").split("/")[1:2] in (["webapps"], ["scenarios"], ["health"],
                                                     ["openapi.json"]):
                raise LabelloopError(f"plugin {plugin_name}: {path!r} is a route of the host")
            ms = (methods,) if isinstance(methods, str) else tuple(methods)
            ms = tuple(m.upper() for m in ms)
            bad = [m for m in ms if m not in METHODS]
            if bad or not callable(handler):
                raise LabelloopError(f"plugin {plugin_name}: API route {path}: methods must be "
                                     f"among {', '.join(METHODS)} and handler callable")
            if role is not None and (role not in ROLES or not auth):
                raise LabelloopError(f"plugin {plugin_name}: API route {path}: role must be "
                                     f"one of {', '.join(ROLES)}, on a route with auth=True")
            routes.append(PluginRoute(path, handler, ms, bool(auth), plugin_name, role))

        return {"register": register}

    for plugin_name, exc in call_hook_per_plugin(registry.pm, "register_api_routes", kwargs_for):
        if exc is not None:  # one broken plugin must not keep the server from starting
            log.error("plugin %s: register_api_routes failed: %s", plugin_name, exc,
                      exc_info=(type(exc), exc, exc.__traceback__)
                      if not isinstance(exc, LabelloopError) else None)
    return routes


def plugin_api_patterns(api: Api) -> list[tuple]:
    """Tornado patterns of the plugin routes (placed before the API's catch-all)."""
    return [(r.pattern, PluginRouteHandler, {"api": api, "route": r})
            for r in collect_routes(api.project.registry)]
