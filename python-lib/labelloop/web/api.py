"""The JSON API at /api/v1: Tornado handlers, identity, body limits and JSON errors.

Every handler runs its work (SQL, backend code) in a thread pool, so the event loop that
also serves the Bokeh sessions never waits for the database or for a slow handler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from ..errors import LabelloopError, NotFoundError, disk_full
from ..project import Project
from ..scenarios import Scheduler, get_run, list_scenarios, scenario_config, scenario_runs
from .auth import NO_TOKEN_ROLE, AuthenticationError, Identity, require_role, role_of
from .guard import ForbiddenRequestError, RequestGuard
from .openapi import build_openapi
from .payload import INT64_MAX, check_payload_bounds, parse_json_body
from .webapps import API_PREFIX, BODY_METHODS, FileResponse, MethodNotAllowedError, WebappHost

log = logging.getLogger("labelloop.api")

HARD_BODY_CAP = 64 * 1024 * 1024  # beyond this, the answer (413) comes before the body
DISCARD_CAP = 1024 * 1024 * 1024  # bodies declared larger: the connection is dropped
WRITE_METHODS = (*BODY_METHODS, "DELETE")
REQUEST_ID_HEADER = "X-Request-Id"


class PayloadTooLargeError(LabelloopError):
    status = 413


@dataclass
class Api:
    """What the API handlers share."""

    project: Project
    identity: Identity
    webapps: WebappHost
    scheduler: Scheduler
    executor: ThreadPoolExecutor
    max_body: int = 1024 * 1024
    guard: RequestGuard = field(default_factory=RequestGuard)


def _default(value: Any) -> Any:
    """JSON for the values handlers commonly return besides plain Python types."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, allow_nan=False)


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Base of the API handlers: body limit, identity, JSON answers and errors."""

    api: Api
    auth_required = True

    def initialize(self, api: Api) -> None:
        self.api = api
        self.user = "anonymous"
        self.auth_how = "anonymous"
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self.request_id = uuid.uuid4().hex[:16]
        self.set_header(REQUEST_ID_HEADER, self.request_id)

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    def prepare(self) -> None:
        # Why read-and-discard rather than answer at once: clients that are still sending
        # their body see a reset connection instead of the 413 if the server answers early.
        cap = max(HARD_BODY_CAP, self.api.max_body + 1)
        try:
            length = int(self.request.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._too_large = length > self.api.max_body
        if length > cap:
            # Answer now (a client waiting on `Expect: 100-continue` never sends the body);
            # the rest is read and dropped up to DISCARD_CAP so that the answer gets through.
            self.request.connection.set_max_body_size(min(length, DISCARD_CAP))
            self.set_header("Connection", "close")
            self.send_error_json(413, f"request body of {length} bytes is larger than "
                                      f"{self.api.max_body} bytes")
            return
        self.request.connection.set_max_body_size(cap)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.api.max_body:
            self._too_large = True
            self._chunks = []
        elif not self._too_large:
            self._chunks.append(chunk)

    # ---- answering ----
    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(value))

    async def send_file(self, resp: FileResponse) -> None:
        """A route's binary answer; 304 (nothing read) when the browser has this version."""
        self.set_header("ETag", resp.etag)
        self.set_header("Cache-Control", resp.cache_control)
        if resp.matches(self.request.headers.get("If-None-Match")):
            self.clear_header("Content-Type")
            self.set_status(304)
            self.finish()
            return
        body = await self.in_thread(resp.read)
        self.set_header("Content-Type", resp.content_type)
        self.finish(body)

    def send_error_json(self, status: int, message: str, allow: list[str] | None = None,
                        extra: dict | None = None) -> None:
        self.clear()
        self.set_default_headers()
        self.set_header(REQUEST_ID_HEADER, self.request_id)
        self.set_status(status)
        if status == 405:
            self.set_header("Allow", ", ".join(allow or self.allowed_methods()))
        self.finish(json.dumps({"error": message, **(extra or {})}))

    def allowed_methods(self) -> list[str]:
        """The methods this handler answers (the `Allow` of a 405)."""
        base = tornado.web.RequestHandler
        return [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                if getattr(type(self), m.lower()) is not getattr(base, m.lower())]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's own errors (405, malformed request...) as JSON too.
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        body: dict[str, Any] = {"error": self._reason or "error"}
        if status_code >= 500:
            body = {"error": f"internal error (request {self.request_id}); see the server log",
                    "request_id": self.request_id}
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 - Tornado's signature
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            log.error("request %s: %s %s: unexpected error", self.request_id,
                      self.request.method, self.request.uri, exc_info=(typ, value, tb))

    async def in_thread(self, func, *args: Any) -> Any:
        return await IOLoop.current().run_in_executor(self.api.executor, func, *args)

    async def handle(self, work, *args: Any, status: int = 200) -> None:
        """Check limits and identity, run `work(*args)` in a thread, answer its result."""
        try:
            if self._too_large:
                raise PayloadTooLargeError(f"request body larger than {self.api.max_body} bytes")
            self.check_request_origin()
            result = await self.in_thread(self._checked, work, args)
            if isinstance(result, FileResponse):
                await self.send_file(result)
            else:
                self.send_json(result, status)
        except MethodNotAllowedError as exc:
            self.send_error_json(405, str(exc), allow=getattr(exc, "allow", None))
        except LabelloopError as exc:
            self.send_error_json(exc.status, str(exc), extra=getattr(exc, "details", None))
        except Exception as exc:
            full = disk_full(exc)
            if full is not None:  # the writer rolled back and goes on with its next write
                log.error("request %s: %s %s: %s", self.request_id, self.request.method,
                          self.request.uri, str(exc).splitlines()[0])
                self.send_error_json(full.status, str(full))
                return
            log.error("request %s: %s %s: unexpected error", self.request_id,
                      self.request.method, self.request.uri, exc_info=True)
            self.send_error_json(500, f"internal error ({type(exc).__name__}, request "
                                 f"{self.request_id}); see the server log",
                                 extra={"request_id": self.request_id})

    def _checked(self, work: Callable[..., Any], args: tuple) -> Any:
        """Identity, then the JSON check, then `work(*args)`: in one thread hop (each hop
        is a hand-off through the event loop, and a label had two)."""
        if self.auth_required:
            self.authenticate()
        self.check_json_write()
        return work(*args)

    def check_request_origin(self) -> None:
        """Origin on writes: refuse what a page of another site could send (a foreign Host
        was refused before any handler: see guard.py)."""
        if self.request.method in WRITE_METHODS:
            self.api.guard.check_origin(self.request.headers.get("Origin"),
                                        self.request.headers.get("Host"))

    def check_json_write(self) -> None:
        """A write with a body must say it is JSON (a cross-site form can't)."""
        if self.request.method in WRITE_METHODS and (self._size or self._chunks) and \
                not self._is_json_request():
            ctype = self.request.headers.get("Content-Type")
            raise ForbiddenRequestError(
                f"request refused: a {self.request.method} body must be sent as "
                f"Content-Type: application/json, got {ctype or 'no Content-Type'}")

    def authenticate(self) -> None:
        cookies = {k: v.value for k, v in self.request.cookies.items()}
        self.user, self.auth_how = self.api.identity.resolve(self.request.headers, cookies)
        # A cookie is sent by the browser on cross-site requests too; a JSON content type can't
        # be set by a cross-site form, so requiring it blocks request forgery.
        if self.auth_how == "cookie" and self.request.method in BODY_METHODS and \
                not self._is_json_request():
            raise AuthenticationError("cookie-authenticated requests that change data must "
                                      "send Content-Type: application/json")

    def check_role(self, needed: str, what: str) -> None:
        """403 (RoleError) when the caller's role is lower than `needed` (auth's rules)."""
        role = role_of(self.api.project.engine, self.user) if self.api.identity.required() \
            else NO_TOKEN_ROLE
        require_role(role, needed, self.user, what)

    def _is_json_request(self) -> bool:
        ctype = self.request.headers.get("Content-Type", "")
        return ctype.split(";")[0].strip().lower() == "application/json"

    def json_body(self, bounds: bool = True) -> Any:
        """The parsed JSON body; `{}` when empty (`bounds`: check integers, nesting, text)."""
        return parse_json_body(b"".join(self._chunks), bounds)

    def query_args(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, values in self.request.query_arguments.items():
            try:
                out[name] = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError as exc:
                raise LabelloopError(f"query argument {name!r} is not UTF-8") from exc
        return out

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise LabelloopError(f"query argument {name!r} must be an integer, got {raw!r}") \
                from None
        if not lo <= value <= hi or len(raw) > 30:
            raise LabelloopError(f"query argument {name!r} must be between {lo} and {hi}, "
                                 f"got {value}")
        return value


class HealthHandler(ApiHandler):
    auth_required = False

    async def get(self) -> None:
        await self.handle(lambda: {"status": "ok"})


class OpenApiHandler(ApiHandler):
    auth_required = False

    async def get(self) -> None:
        await self.handle(build_openapi, self.api.webapps,
                          f"Labelloop API (project {self.api.project.key})")


class WebappsHandler(ApiHandler):
    async def get(self) -> None:
        host = self.api.webapps
        await self.handle(lambda: [host.describe(w) for w in host.ids()])


class WebappRouteHandler(ApiHandler):
    """`/api/v1/webapps/<id>/<subpath>`: a route the webapp's backend declares."""

    async def _route(self, webapp: str, subpath: str) -> None:
        method = self.request.method

        def work() -> Any:
            try:
                route = self.api.webapps.get(webapp).route(method, subpath)
            except MethodNotAllowedError as exc:
                exc.allow = self._route_methods(webapp, subpath)  # type: ignore[attr-defined]
                raise
            if route.role is not None:
                self.check_role(route.role, f"{method} {route.subpath}")
            if method in BODY_METHODS:
                payload = self.json_body()
            else:
                payload = route.payload_from_query(self.query_args())
                check_payload_bounds(payload, "query")
            route.check(payload)
            return route.handler(payload, self.user)

        await self.handle(work)

    get = post = put = patch = delete = _route

    def _route_methods(self, webapp: str, subpath: str) -> list[str]:
        try:
            routes = self.api.webapps.get(webapp).routes
        except LabelloopError:
            return []
        return sorted(m for m, sp in routes if sp == subpath.strip("/"))

    def allowed_methods(self) -> list[str]:
        # From the path itself: Tornado refuses an unknown method (TRACE) before it parses it.
        prefix = f"{API_PREFIX}/webapps/"
        path = self.request.path
        if path.startswith(prefix) and "/" in path[len(prefix):]:
            webapp, subpath = path[len(prefix):].split("/", 1)
            methods = self._route_methods(webapp, subpath)
            if methods:
                return methods
        return super().allowed_methods()


class ScenariosHandler(ApiHandler):
    async def get(self) -> None:
        await self.handle(list_scenarios, self.api.project)


class ScenarioRunHandler(ApiHandler):
    async def post(self, name: str) -> None:
        def work() -> dict:
            if not isinstance(self.json_body(bounds=False), dict):  # nothing in it is used
                raise LabelloopError("the body must be a JSON object (or nothing)")
            scenario_config(self.api.project, name)
            run_id = self.api.scheduler.launch(name, {"kind": "api", "by": self.user})
            return {"run_id": run_id, "scenario": name, "status": "RUNNING",
                    "url": f"{API_PREFIX}/scenarios/{name}/runs/{run_id}"}

        await self.handle(work, status=202)


class ScenarioRunsHandler(ApiHandler):
    async def get(self, name: str) -> None:
        await self.handle(lambda: scenario_runs(self.api.project, name,
                                                self.int_arg("limit", 20, 1, 500)))


class ScenarioRunDetailHandler(ApiHandler):
    async def get(self, name: str, run_id: str) -> None:
        def work() -> dict:
            scenario_config(self.api.project, name)
            if len(run_id) > 18 or int(run_id) > INT64_MAX:
                raise NotFoundError(f"scenario {name!r} has no run {run_id[:30]}")
            run = get_run(self.api.project, int(run_id))
            if run["kind"] != "scenario" or run["name"] != name:
                raise NotFoundError(f"scenario {name!r} has no run {run_id}")
            return run

        await self.handle(work)


class NotFoundHandler(ApiHandler):
    auth_required = False

    async def _any(self, *_: str) -> None:
        path = self.request.path

        def work() -> None:
            raise NotFoundError(f"no API route {self.request.method} {path} (see "
                                f"{API_PREFIX}/openapi.json)")

        await self.handle(work)

    get = post = put = patch = delete = _any


def api_patterns(api: Api) -> list[tuple]:
    """Tornado URL patterns of the API."""
    a = {"api": api}
    name = r"([A-Za-z0-9][A-Za-z0-9_-]*)"
    return [
        (rf"{API_PREFIX}/health/?", HealthHandler, a),
        (rf"{API_PREFIX}/openapi\.json", OpenApiHandler, a),
        (rf"{API_PREFIX}/webapps/?", WebappsHandler, a),
        (rf"{API_PREFIX}/webapps/{name}/(.+)", WebappRouteHandler, a),
        (rf"{API_PREFIX}/scenarios/?", ScenariosHandler, a),
        (rf"{API_PREFIX}/scenarios/{name}/run/?", ScenarioRunHandler, a),
        (rf"{API_PREFIX}/scenarios/{name}/runs/?", ScenarioRunsHandler, a),
        (rf"{API_PREFIX}/scenarios/{name}/runs/([0-9]+)/?", ScenarioRunDetailHandler, a),
        (rf"{API_PREFIX}(/.*)?", NotFoundHandler, a),
    ]
