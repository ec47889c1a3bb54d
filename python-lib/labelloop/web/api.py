"""The JSON API at /api/v1: Tornado handlers, identity, body limits and JSON errors.

Every handler runs its work (SQL, backend code) in a thread pool, so the event loop that
also serves the Bokeh sessions never waits for the database or for a slow handler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from ..errors import LabelloopError, NotFoundError
from ..project import Project
from ..scenarios import Scheduler, get_run, list_scenarios, scenario_config, scenario_runs
from .auth import AuthenticationError, Identity
from .openapi import build_openapi
from .webapps import API_PREFIX, BODY_METHODS, FileResponse, WebappHost

log = logging.getLogger("labelloop.api")

HARD_BODY_CAP = 64 * 1024 * 1024  # beyond this, the connection is dropped without reading


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

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        # Why read-and-discard rather than answer at once: clients that are still sending
        # their body see a reset connection instead of the 413 if the server answers early.
        self.request.connection.set_max_body_size(max(HARD_BODY_CAP, self.api.max_body + 1))
        try:
            length = int(self.request.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._too_large = length > self.api.max_body

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

    def send_error_json(self, status: int, message: str) -> None:
        self.clear()
        self.set_default_headers()
        self.set_status(status)
        self.finish(json.dumps({"error": message}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's own errors (405, malformed request...) as JSON too.
        self.finish(json.dumps({"error": self._reason or "error"}))

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 - Tornado's signature
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            log.error("%s %s: unexpected error", self.request.method, self.request.uri,
                      exc_info=(typ, value, tb))

    async def in_thread(self, func, *args: Any) -> Any:
        return await IOLoop.current().run_in_executor(self.api.executor, func, *args)

    async def handle(self, work, *args: Any, status: int = 200) -> None:
        """Check limits and identity, run `work(*args)` in a thread, answer its result."""
        try:
            if self._too_large:
                raise PayloadTooLargeError(f"request body larger than {self.api.max_body} bytes")
            if self.auth_required:
                await self.in_thread(self.authenticate)
            result = await self.in_thread(work, *args)
            if isinstance(result, FileResponse):
                await self.send_file(result)
            else:
                self.send_json(result, status)
        except LabelloopError as exc:
            self.send_error_json(exc.status, str(exc))
        except Exception as exc:
            log.error("%s %s: unexpected error", self.request.method, self.request.uri,
                      exc_info=True)
            self.send_error_json(500, f"internal error ({type(exc).__name__}); see the server "
                                 "log")

    def authenticate(self) -> None:
        cookies = {k: v.value for k, v in self.request.cookies.items()}
        self.user, self.auth_how = self.api.identity.resolve(self.request.headers, cookies)
        # A cookie is sent by the browser on cross-site requests too; a JSON content type can't
        # be set by a cross-site form, so requiring it blocks request forgery.
        if self.auth_how == "cookie" and self.request.method in BODY_METHODS and \
                not self._is_json_request():
            raise AuthenticationError("cookie-authenticated requests that change data must "
                                      "send Content-Type: application/json")

    def _is_json_request(self) -> bool:
        ctype = self.request.headers.get("Content-Type", "")
        return ctype.split(";")[0].strip().lower() == "application/json"

    def json_body(self) -> Any:
        """The parsed JSON body; `{}` when empty."""
        raw = b"".join(self._chunks)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabelloopError(f"malformed JSON body: {exc}") from exc

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
        if not lo <= value <= hi:
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
            route = self.api.webapps.get(webapp).route(method, subpath)
            if method in BODY_METHODS:
                payload = self.json_body()
            else:
                payload = route.payload_from_query(self.query_args())
            route.check(payload)
            return route.handler(payload, self.user)

        await self.handle(work)

    get = post = put = patch = delete = _route


class ScenariosHandler(ApiHandler):
    async def get(self) -> None:
        await self.handle(list_scenarios, self.api.project)


class ScenarioRunHandler(ApiHandler):
    async def post(self, name: str) -> None:
        def work() -> dict:
            self.json_body()  # refuse a malformed body even though nothing in it is used
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
