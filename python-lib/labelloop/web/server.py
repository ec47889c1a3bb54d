"""One Tornado server: each webapp's Bokeh app, the JSON API and the scenario scheduler.

Layout of the port:

- `/webapps/<instance>`: the Bokeh application of each webapp instance of project.json
  (a new Document per browser session, built by the backend's `make_document`);
- `/api/v1/...`: the JSON API (see api.py and `/api/v1/openapi.json`);
- `/resource/<plugin-id>/<path>`: files of a plugin's `resource/` directory;
- `/login`, `/logout`: set / clear the token cookie for the pages (see auth.py);
- `/`: Bokeh's index of the webapps.

The scheduler checks triggers from a thread every `period` seconds and runs scenarios in
subprocesses, so neither trigger checks nor training ever block the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import html
import ipaddress
import logging
import mimetypes
import secrets
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import tornado.web
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.models import Div
from bokeh.server.auth_provider import AuthProvider
from bokeh.server.server import Server
from tornado.ioloop import IOLoop, PeriodicCallback

from ..errors import LabelloopError
from ..project import Project
from ..scenarios import Scheduler
from . import cannot_listen, free_port
from .api import Api, api_patterns
from .auth import (
    ANONYMOUS,
    TOKEN_COOKIE,
    USER_HEADER,
    AuthenticationError,
    Identity,
    LoginHandler,
    LogoutHandler,
    query_arguments,
)
from .guard import RequestGuard, guard_every_request
from .webapps import WebappHost

log = logging.getLogger("labelloop.server")

USER_PAYLOAD_KEY = "labelloop_user"
CONFIG_CHECK_SECONDS = 1.0  # how often project.json is looked at while serving


@dataclass
class ServeOptions:
    """Options of `labelloop serve`."""

    host: str = "127.0.0.1"
    port: int = 5006
    insecure: bool = False
    scheduler: bool = True
    period: float = 5.0
    max_body: int = 1024 * 1024
    threads: int = 8
    websocket_origins: list[str] = field(default_factory=list)
    plugin_dirs: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


# Why 'unsafe-inline' / 'unsafe-eval' for scripts: Bokeh's page embeds its documents with
# inline scripts and builds some callbacks with `new Function`. What the policy adds is no
# framing (clickjacking), no plugins, no foreign base URL and no loads from other sites.
PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' data: blob:; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


class SecurityHeaders(tornado.web.OutputTransform):
    """X-Frame-Options, Content-Security-Policy and nosniff on every answer of the server."""

    def transform_first_chunk(self, status_code, headers, chunk, finishing):  # noqa: ANN001
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        return status_code, headers, chunk


def check_bind(host: str, insecure: bool, identity: Identity) -> None:
    """Refuse to expose a token-less server beyond this machine unless asked to."""
    if is_loopback(host) or insecure or identity.required():
        return
    raise LabelloopError(
        f"refusing to serve on {host}: no API token is configured, so anyone who can reach this "
        "address could label as anyone and run scenarios. Create tokens with `labelloop token "
        "add USER` (annotators then open the webapps with ?token=...), bind to 127.0.0.1, or "
        "pass --insecure if the network is trusted")


def session_user(doc: Any) -> str:
    """The user of the browser session that owns a Bokeh document ('anonymous' if unknown)."""
    ctx = getattr(doc, "session_context", None)
    try:
        payload = ctx.token_payload if ctx is not None else {}
    except Exception:  # no session (a document built outside the server)
        payload = {}
    return (payload or {}).get(USER_PAYLOAD_KEY) or ANONYMOUS


class WebappHandler(FunctionHandler):
    """The Bokeh handler of one webapp instance: identity at page load, the backend's document."""

    def __init__(self, host: WebappHost, identity: Identity, webapp: str):
        self.host = host
        self.identity = identity
        self.webapp = webapp
        super().__init__(self._make_document)

    def process_request(self, request: Any) -> dict[str, Any]:
        # Runs at page load: its result goes into the (signed) session token, where
        # session_user(doc) finds it. Tokens and cookies themselves are kept out of it.
        cookies = {k: v.value for k, v in request.cookies.items()}
        try:
            user, _how = self.identity.resolve(request.headers, cookies,
                                               query_arguments(request.arguments))
        except LabelloopError as exc:
            log.warning("webapp %s: %s; the session is anonymous", self.webapp, exc)
            user = ANONYMOUS
        return {USER_PAYLOAD_KEY: user}

    def _make_document(self, doc: Any) -> None:
        user = session_user(doc)
        try:
            app = self.host.get(self.webapp)
            app.make_document(doc, user)
        except Exception as exc:
            message = str(exc) if isinstance(exc, LabelloopError) else \
                f"{type(exc).__name__}: {exc}"
            log.error("webapp %s: make_document failed: %s", self.webapp, message,
                      exc_info=not isinstance(exc, LabelloopError))
            doc.clear()
            doc.title = f"{self.webapp}: error"
            doc.add_root(Div(text=f"<h2>Webapp {html.escape(self.webapp)} could not start</h2>"
                                  f"<pre>{html.escape(message)}</pre><p>Fix the problem and "
                                  "reload this page (see the server log).</p>",
                             css_classes=["labelloop-error"]))


class PageAuth(AuthProvider):
    """Bokeh page authentication: a valid token cookie when the project has tokens."""

    def __init__(self, identity: Identity):
        self.identity = identity
        super().__init__()

    @property
    def get_user(self):
        return self._get_user

    @property
    def get_login_url(self):
        return self._login_url

    def _get_user(self, handler: tornado.web.RequestHandler) -> str | None:
        cookies = {k: v.value for k, v in handler.request.cookies.items()}
        try:
            user, _how = self.identity.resolve(handler.request.headers, cookies,
                                               query_arguments(handler.request.arguments))
        except AuthenticationError:
            return None
        except LabelloopError:
            return ANONYMOUS  # a malformed ?user= must not lock anyone out of a token-less server
        return user

    def _login_url(self, handler: tornado.web.RequestHandler) -> str:
        # The token of `?token=` goes to /login, which sets the cookie and redirects back
        # to the page without the token in its address.
        args = {k: v for k, v in query_arguments(handler.request.arguments).items()
                if k != "token"}
        target = handler.request.path + (f"?{urlencode(args)}" if args else "")
        query = {"next": target}
        token = handler.get_argument("token", None)
        if token:
            query["token"] = token
        return f"/login?{urlencode(query)}"


class ResourceHandler(tornado.web.RequestHandler):
    """`/resource/<plugin-id>/<path>`: a file of the plugin's resource/ directory."""

    def initialize(self, host: WebappHost) -> None:
        self.host = host

    def get(self, plugin_id: str, rel: str) -> None:
        root = self.host.resource_dir(plugin_id)
        parts = rel.split("/")
        if root is None or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise tornado.web.HTTPError(404)
        path = (root / Path(*parts)).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise tornado.web.HTTPError(404)
        ctype, _ = mimetypes.guess_type(path.name)
        self.set_header("Content-Type", ctype or "application/octet-stream")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(path.read_bytes())


class LabelloopServer:
    """The server of one project; `start()` then run the IOLoop (see `serve`)."""

    def __init__(self, project: Project, options: ServeOptions):
        self.warming: list = []  # the webapps' backends being created (see `start`)
        self.project = project
        self.options = options
        # The authentication mode is decided here, once (see auth.py).
        self.identity = Identity(project.engine)
        check_bind(options.host, options.insecure, self.identity)
        log.info("authentication: %s", "tokens required" if self.identity.required() else
                 "no tokens (user names are claimed by the X-Labelloop-User header)")
        self.webapps = WebappHost(project)
        self.scheduler = Scheduler(project, period=options.period,
                                   plugin_dirs=options.plugin_dirs)
        self.executor = ThreadPoolExecutor(max_workers=options.threads,
                                           thread_name_prefix="labelloop-api")
        port = options.port or free_port(options.host)  # --port 0
        machine = (socket.gethostname(), socket.getfqdn()) if not is_loopback(options.host) \
            else ()
        self.api = Api(project, self.identity, self.webapps, self.scheduler, self.executor,
                       options.max_body,
                       RequestGuard.for_server(options.host, port, options.websocket_origins,
                                               machine))
        self._ticking = False
        self._periodic: PeriodicCallback | None = None
        apps = {f"/webapps/{w}": Application(WebappHandler(self.webapps, self.identity, w))
                for w in self.webapps.ids()}
        from .routes import plugin_api_patterns  # plugin routes go before the API's catch-all

        extra = plugin_api_patterns(self.api) + api_patterns(self.api) + [
            (r"/resource/([A-Za-z0-9][A-Za-z0-9_.-]*)/(.+)", ResourceHandler,
             {"host": self.webapps}),
            (r"/login", LoginHandler, {"identity": self.identity}),
            (r"/logout", LogoutHandler),
        ]
        # Bokeh allows only localhost:<port> by default; the address we bind must work too.
        origins = {f"localhost:{port}", f"127.0.0.1:{port}", f"{options.host}:{port}",
                   *options.websocket_origins}
        if not is_loopback(options.host):
            origins |= {f"{socket.gethostname()}:{port}", f"{socket.getfqdn()}:{port}"}
        try:
            self.bokeh = self._bokeh_server(apps, port, extra, origins)
        except OSError as exc:
            self.executor.shutdown(wait=False)
            raise cannot_listen(options.host, port, exc) from exc
        self.bokeh._tornado.transforms.append(SecurityHeaders)
        guard_every_request(self.bokeh._tornado, self.api.guard)
        self.port = self.bokeh.port

    def _bokeh_server(self, apps: dict, port: int, extra: list, origins: set) -> Server:
        options = self.options
        return Server(
            apps, port=port, address=options.host, extra_patterns=extra,
            auth_provider=PageAuth(self.identity),
            # A per-process secret signs session tokens, so a browser can't forge the user
            # that process_request put in them.
            secret_key=secrets.token_urlsafe(32), sign_sessions=True,
            exclude_cookies=[TOKEN_COOKIE],
            exclude_headers=["Authorization", "Cookie", USER_HEADER],
            allow_websocket_origin=sorted(origins), num_procs=1,
        )

    @property
    def url(self) -> str:
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Start serving and, unless disabled, the scheduler; warm up the backends."""
        self.bokeh.start()
        from ..webhooks import Sender  # outgoing webhooks: delivered from a thread

        self.webhook_sender = Sender(self.project).start()
        loop = IOLoop.current()
        self.warming = [loop.run_in_executor(self.executor, self._warm, webapp)
                        for webapp in self.webapps.ids()]  # backends now, to show errors early
        if self.options.scheduler:
            self._periodic = PeriodicCallback(self._tick, self.options.period * 1000)
            self._periodic.start()
            loop.add_callback(self._tick)
        else:  # runs started from the API still need reaping
            self._periodic = PeriodicCallback(self._reap, max(self.options.period, 1.0) * 1000)
            self._periodic.start()
        self._config_watch = PeriodicCallback(self._follow_config, CONFIG_CHECK_SECONDS * 1000)
        self._config_watch.start()

    # ---- live configuration (see WebappHost.check_config) ----
    async def _follow_config(self) -> None:
        try:
            added = await IOLoop.current().run_in_executor(self.executor,
                                                           self.webapps.check_config)
            for webapp in added:
                self._add_page(webapp)
        except Exception:
            log.exception("following project.json failed")

    def _add_page(self, webapp: str) -> None:
        """Serve the Bokeh page of a webapp added to project.json while serving.

        Bokeh fixes its applications when the server starts; this adds one the way its
        constructor does (an ApplicationContext and the per-app URL patterns)."""
        from bokeh.server.contexts import ApplicationContext
        from bokeh.server.tornado import create_static_handler
        from bokeh.server.urls import per_app_patterns

        path = f"/webapps/{webapp}"
        tornado_app = self.bokeh._tornado
        if path in tornado_app._applications:
            return
        app = Application(WebappHandler(self.webapps, self.identity, webapp))
        ctx = ApplicationContext(app, io_loop=IOLoop.current(), url=path,
                                 logout_url=tornado_app.auth_provider.logout_url)
        patterns = [(path + p[0], p[1], {"application_context": ctx}) for p in per_app_patterns]
        ws = next(r[0] for r in patterns if r[0].endswith("/ws"))
        for r in patterns:
            r[2]["bokeh_websocket_path"] = ws
        patterns.append(create_static_handler("", path, app))
        tornado_app._applications[path] = ctx
        tornado_app.add_handlers(r".*", patterns)
        ctx.run_load_hook()
        log.info("webapp %s added to project.json: served at %s", webapp, path)

    def _warm(self, webapp: str) -> None:
        try:
            self.webapps.get(webapp)
        except LabelloopError:
            pass  # logged by the host; the page and the API show the error

    async def _tick(self) -> None:
        if self._ticking:  # a slow tick (busy database) is never stacked
            return
        self._ticking = True
        try:
            await IOLoop.current().run_in_executor(self.executor, self.scheduler.tick)
        except Exception:
            log.exception("scheduler tick failed")
        finally:
            self._ticking = False

    async def _reap(self) -> None:
        try:
            await IOLoop.current().run_in_executor(self.executor, self.scheduler.reap)
        except Exception:
            log.exception("reaping scenario runs failed")

    def stop(self, child_timeout: float = 10.0) -> None:
        """Stop serving; the scenario runs this server started end too (see Scheduler.stop)."""
        if getattr(self, "_config_watch", None) is not None:
            self._config_watch.stop()
        if self._periodic is not None:
            self._periodic.stop()
        self.bokeh.stop()
        if getattr(self, "webhook_sender", None) is not None:
            self.webhook_sender.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.scheduler.stop(timeout=child_timeout)


# Seconds a Python thread may hold the GIL while another waits for it (Python's default is
# 0.005). Why shorter in the server: the database writer thread gives the GIL up at every
# round trip to the database and must win it back from the request threads; at 5 ms a turn, a
# label of 15 round trips waited up to tens of ms for the GIL alone with 32 annotators (label
# p50 40 ms, p99 210 ms on PostgreSQL), at 0.5 ms p50 13 ms, p99 78 ms (bench_engine).
GIL_SWITCH_INTERVAL = 0.0005


def freeze_heap() -> None:
    """Collect garbage, then move every object the process holds now out of the cyclic garbage
    collector's reach (`gc.freeze`). Why: the server holds a large heap from its start
    (Bokeh, pandas, scikit-learn, the webapps' engines) and a full collection walks all of it
    with every thread stopped: 60-200 ms pauses that landed in the middle of labeling. What is
    frozen is still freed when no longer referenced; only cycles among it stay."""
    gc.collect()
    gc.freeze()


def serve(project: Project, options: ServeOptions) -> None:
    """Run the server until SIGINT / SIGTERM."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    server = LabelloopServer(project, options)
    server.start()
    freeze_heap()

    async def settle() -> None:
        await asyncio.gather(*server.warming, return_exceptions=True)
        freeze_heap()  # what the warmed-up backends loaded, too

    IOLoop.current().add_callback(settle)
    loop = IOLoop.current()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.asyncio_loop.add_signal_handler(sig, loop.stop)
    mode = "tokens required" if server.identity.required() else "no tokens"
    print(f"Labelloop: project {project.key} served at {server.url}/ ({mode}; "
          f"scheduler {'on, every ' + str(options.period) + 's' if options.scheduler else 'off'})",
          flush=True)
    for webapp in server.webapps.ids():
        print(f"  webapp {webapp}: {server.url}/webapps/{webapp}", flush=True)
    print(f"  API: {server.url}/api/v1 (OpenAPI: {server.url}/api/v1/openapi.json)", flush=True)
    try:
        loop.start()
    finally:
        running = server.scheduler.running()
        if running:
            log.info("stopping: interrupting the scenario runs still going on: %s", running)
        server.stop()
