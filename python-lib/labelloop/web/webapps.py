"""Webapp instances of a project and their backends: creation, routes, payload checks.

A webapp component's `backend.py` defines `create_backend(ctx)`, returning an object with

- `make_document(doc)` (or `make_document(doc, user)`): builds the Bokeh document of one
  browser session; `labelloop.web.session_user(doc)` gives the session's user;
- `routes`: `{(METHOD, subpath): handler}` where `handler(payload, user)` returns JSON-able
  data, or `{(METHOD, subpath): {"handler": f, "schema": {...}, "summary": "...",
  "description": "...", "response": {...}, "links": {...}}}`; the host validates the
  payload against `schema` first. `links` are OpenAPI links from the route's answer to other
  routes of the webapp, `{name: {"route": (METHOD, subpath), "parameters": {...},
  "requestBody": ...}}` with runtime expressions such as `"$response.body#/items/0/id"`:
  clients (and the fuzzing test) follow them with real values. A route that answers files
  lists their content types in `"produces": [...]` (the OpenAPI document says so). A route
  that only some users may call says `"role": "reviewer"` (or `"admin"`): the host answers
  403 `{"error": ...}` before the handler (nothing runs, nothing is written) when the
  caller's role is lower (see `labelloop.web.auth`; without tokens everyone is admin); a
  handler that needs the caller's role asks `labelloop.web.role_of(engine, user)`. GET/DELETE payloads are the query arguments (a str per argument, a list
  when repeated; converted to integer / number / boolean where the schema says so);
  POST/PUT/PATCH payloads are the JSON body (`{}` when empty);
- optionally `describe()`: a dict merged into the webapp's entry of `GET /api/v1/webapps`.

A handler that answers a file or other binary content (an image, a sound) returns a
`labelloop.web.FileResponse(content_type, path=... or body=..., etag=..., cache_control=...)`
instead of JSON: the host sends it with its content type, `ETag` and `Cache-Control`, and
answers `304 Not Modified` (without reading the file) when the request's `If-None-Match`
holds the ETag. The handler does the access checks (e.g. `Folder.resolve`) before returning.

Handlers run in threads: a backend must be safe to call from several threads at once.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..errors import LabelloopError, NotFoundError, schema_problems
from ..params import validate_config
from ..plugins import Component, PluginRegistry
from ..project import Project

API_PREFIX = "/api/v1"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = ("POST", "PUT", "PATCH")
RETRY_SECONDS = 2.0  # a backend that failed to start is retried after this long


@dataclass
class FileResponse:
    """A binary answer of a webapp route (see the module docstring): a file or bytes."""

    content_type: str
    path: Path | None = None
    body: bytes | None = None
    etag: str | None = None  # with or without quotes; default: from the file's size and mtime
    cache_control: str = "private, max-age=86400"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.body is None):
            raise ValueError("FileResponse takes exactly one of path= or body=")
        if self.etag is None:
            if self.path is not None:
                st = Path(self.path).stat()
                seed = f"{self.path}:{st.st_size}:{st.st_mtime_ns}".encode()
            else:
                seed = self.body or b""
            self.etag = hashlib.sha1(seed).hexdigest()[:20]
        if not self.etag.startswith(('"', 'W/"')):
            self.etag = f'"{self.etag}"'

    def matches(self, if_none_match: str | None) -> bool:
        """True when an `If-None-Match` header names this response's ETag (or is `*`)."""
        if not if_none_match:
            return False
        tags = [t.strip() for t in if_none_match.split(",")]
        bare = self.etag.removeprefix("W/")
        return "*" in tags or any(t.removeprefix("W/") == bare for t in tags)

    def read(self) -> bytes:
        """The content (reads the file when the response holds a path)."""
        return self.body if self.body is not None else Path(self.path).read_bytes()


class WebappUnavailableError(LabelloopError):
    """The webapp's backend could not be created (its error says why)."""

    status = 503


@dataclass
class WebappContext:
    """What `create_backend(ctx)` receives."""

    project: Project
    webapp: str
    component: Component
    config: dict
    log: logging.Logger
    resource_dir: Path | None
    api_prefix: str
    resource_url: str | None = None  # where resource_dir is served, e.g. "/resource/<plugin>"

    @property
    def registry(self) -> PluginRegistry:
        return self.project.registry


@dataclass
class Route:
    """One route a backend declares."""

    method: str
    subpath: str
    handler: Callable[[Any, str], Any]
    schema: dict | None = None
    summary: str | None = None
    description: str | None = None
    response: dict | None = None
    validator: Draft202012Validator | None = field(default=None, repr=False)
    links: dict | None = None
    produces: list[str] | None = None  # content types of its FileResponse answers
    role: str | None = None  # the role a caller needs (annotator < reviewer < admin)

    def payload_from_query(self, args: dict[str, list[str]]) -> dict:
        """Query arguments as a payload, converted to the types the schema asks for."""
        props = (self.schema or {}).get("properties") or {}
        out: dict[str, Any] = {}
        for name, values in args.items():
            value: Any = values[0] if len(values) == 1 else list(values)
            kind = (props.get(name) or {}).get("type")
            if isinstance(value, str) and kind in ("integer", "number", "boolean"):
                value = _convert(value, kind)
            out[name] = value
        return out

    def check(self, payload: Any) -> None:
        """Validate the payload against the route's schema (LabelloopError, status 400): each
        problem worded by `labelloop.errors.schema_problems`, where it is and what is allowed,
        e.g. `invalid payload at size: must be between 1 and 50, got 80`."""
        if self.validator is None:
            return
        problems = schema_problems(self.validator.iter_errors(payload))
        if problems:
            raise LabelloopError("; ".join(
                f"invalid payload{' at ' + '/'.join(map(str, path)) if path else ''}: {reason}"
                for path, reason in problems))


def _convert(value: str, kind: str) -> Any:
    """A query string as an int / float / bool; unchanged when it isn't one (the schema says)."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    return value


def normalise_routes(webapp: str, routes: Any) -> dict[tuple[str, str], Route]:
    """Check a backend's `routes` and turn them into Route objects."""
    from .auth import ROLES  # the server's module (Tornado): loaded only when serving

    where = f"webapp {webapp!r}: backend routes"
    if routes is None:
        return {}
    if not isinstance(routes, dict):
        raise LabelloopError(f"{where} must be a dict {{(METHOD, subpath): handler}}, "
                             f"got {type(routes).__name__}")
    out: dict[tuple[str, str], Route] = {}
    for key, value in routes.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise LabelloopError(f"{where}: key {key!r} must be a (METHOD, subpath) tuple")
        method, subpath = key[0].upper(), key[1].strip("/")
        if method not in METHODS:
            raise LabelloopError(f"{where}: method {key[0]!r} must be one of {', '.join(METHODS)}")
        if not subpath or any(p in ("", ".", "..") for p in subpath.split("/")):
            raise LabelloopError(f"{where}: subpath {key[1]!r} must be a non-empty relative path")
        spec = value if isinstance(value, dict) else {"handler": value}
        if not callable(spec.get("handler")):
            raise LabelloopError(f"{where}: {method} {subpath} has no callable handler")
        schema = spec.get("schema")
        validator = None
        if schema is not None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise LabelloopError(f"{where}: {method} {subpath}: invalid JSON Schema: "
                                     f"{exc.message}") from exc
            validator = Draft202012Validator(schema)
        role = spec.get("role")
        if role is not None and role not in ROLES:
            raise LabelloopError(f"{where}: {method} {subpath}: role {role!r} must be one of "
                                 f"{', '.join(ROLES)}")
        out[(method, subpath)] = Route(method, subpath, spec["handler"], schema,
                                       spec.get("summary"), spec.get("description"),
                                       spec.get("response"), validator, spec.get("links"),
                                       spec.get("produces"), role)
    return out


@dataclass
class Webapp:
    """A created webapp instance: its backend and routes."""

    id: str
    component: Component
    backend: Any
    routes: dict[tuple[str, str], Route]

    def make_document(self, doc: Any, user: str) -> None:
        """Call the backend's make_document (with the user when it takes two arguments)."""
        make = getattr(self.backend, "make_document", None)
        if make is None:
            raise LabelloopError(f"webapp {self.id!r}: its backend has no make_document(doc)")
        try:
            n_params = len(inspect.signature(make).parameters)
        except (TypeError, ValueError):
            n_params = 1
        if n_params >= 2:
            make(doc, user)
        else:
            make(doc)

    def describe(self) -> dict:
        """The webapp's entry of `GET /api/v1/webapps`."""
        entry = {"id": self.id, "type": self.component.type,
                 "data_type": self.component.descriptor.get("dataType"), "categories": None,
                 "label": self.component.label, "page": f"/webapps/{self.id}"}
        describe = getattr(self.backend, "describe", None)
        if callable(describe):
            extra = describe()
            if isinstance(extra, dict):
                entry.update(extra)
        return entry

    def route(self, method: str, subpath: str) -> Route:
        route = self.routes.get((method, subpath.strip("/")))
        if route is None:
            if any(sp == subpath.strip("/") for _m, sp in self.routes):
                raise MethodNotAllowedError(f"webapp {self.id!r}: {subpath!r} does not accept "
                                            f"{method}")
            known = ", ".join(f"{m} {p}" for m, p in sorted(self.routes)) or "none"
            raise NotFoundError(f"webapp {self.id!r} has no route {method} {subpath!r} "
                                f"(routes: {known})")
        return route


def webapp_config(webapp: str, cfg: dict, registry: PluginRegistry) -> tuple[Component, dict]:
    """A webapp entry of project.json: its component and its params, validated and with
    their defaults (ConfigError naming each wrong param)."""
    from ..flow import effective_params

    comp = registry.component(cfg["type"], "webapp")
    return comp, validate_config(f"{comp.type} (webapp {webapp!r})",
                                 effective_params(comp, registry), cfg.get("params"))


class MethodNotAllowedError(LabelloopError):
    """The route exists but not for this method."""

    status = 405


class WebappHost:
    """The webapp instances of a project; each backend is created once, at first use."""

    def __init__(self, project: Project):
        self.project = project
        self._apps: dict[str, Webapp] = {}
        self._failures: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.log = logging.getLogger("labelloop.webapps")
        # Live configuration: the project.json this host serves, and why a newer one was not.
        self._applied = copy.deepcopy(project.config)
        self._config_stamp = self._stamp()
        self.config_error: str | None = None

    # ---- live configuration ----
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.project.config_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check_config(self) -> list[str]:
        """Follow project.json while serving; returns the webapps it adds.

        A valid new file replaces the project's configuration: webapps whose settings
        changed get a new backend at their next request, new plugin directories are loaded.
        A file that does not validate (its JSON, project.json's schema, or the param types
        of a changed webapp) is not applied at all: the last good configuration keeps
        serving and `config_error` (shown in `GET /api/v1/webapps` and on the pages) says
        why until the file is fixed.
        """
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return []
        self._config_stamp = stamp
        from ..descriptors import load_descriptor

        try:
            new = load_descriptor("project", self.project.config_path)
            self._check_webapp_params(new, self._applied)
        except LabelloopError as exc:
            self.config_error = (f"project.json was changed but not applied: {exc}. The last "
                                 "good configuration is still served; fix the file and it is "
                                 "applied within seconds.")
            self.log.error("%s", self.config_error)
            return []
        old = self._applied
        self.config_error = None
        if new == old:
            return []
        registry_changed = new.get("plugin_dirs") != old.get("plugin_dirs")
        old_apps, new_apps = old.get("webapps", {}), new.get("webapps", {})
        with self._lock:
            self.project.config = new
            self._applied = copy.deepcopy(new)
            if registry_changed:  # loaded again, with the new directories, at next use
                self.project.__dict__.pop("registry", None)
            if new.get("variables") != old.get("variables"):
                self.project.__dict__.pop("variables", None)
            for webapp in list(self._apps):
                if registry_changed or new_apps.get(webapp) != old_apps.get(webapp):
                    self._drop(webapp)
            self._failures.clear()  # a fixed file (or a new dataset) is tried again now
        self.log.info("project.json changed: applied")
        return [w for w in new_apps if w not in old_apps]

    def _check_webapp_params(self, new: dict, old: dict) -> None:
        """Validate the params of the webapps a new project.json changes (ConfigError).

        With new plugin directories, or a component this registry doesn't know, a webapp's
        params are checked when it starts (its error then shows in its entry and page)."""
        if new.get("plugin_dirs") != old.get("plugin_dirs"):
            return
        registry = self.project.registry
        old_apps = old.get("webapps", {})
        for webapp, cfg in new.get("webapps", {}).items():
            if cfg != old_apps.get(webapp) and cfg["type"] in registry.components:
                webapp_config(webapp, cfg, registry)

    def _drop(self, webapp: str) -> None:
        app = self._apps.pop(webapp, None)
        close = getattr(app.backend, "close", None) if app is not None else None
        if callable(close):
            try:
                close()
            except Exception:
                self.log.exception("webapp %s: closing its old backend failed", webapp)

    def ids(self) -> list[str]:
        return sorted(self.project.config.get("webapps", {}))

    def resource_dir(self, plugin_id: str) -> Path | None:
        """The `resource/` directory of a directory plugin, if it has one."""
        info = self.project.registry.plugins.get(plugin_id)
        if info is None or info.path is None or info.status != "loaded":
            return None
        path = Path(info.path) / "resource"
        return path if path.is_dir() else None

    def get(self, webapp: str) -> Webapp:
        """The created webapp (creating it now if needed)."""
        config = self.project.config.get("webapps", {})
        if webapp not in config:
            raise NotFoundError(f"unknown webapp {webapp!r} (webapps: "
                                f"{', '.join(sorted(config)) or 'none'})")
        app = self._apps.get(webapp)
        if app is not None:
            return app
        with self._lock:
            if webapp in self._apps:
                return self._apps[webapp]
            failed = self._failures.get(webapp)
            if failed and time.monotonic() - failed[0] < RETRY_SECONDS:
                raise WebappUnavailableError(failed[1])
            try:
                app = self._create(webapp, config[webapp])
            except Exception as exc:
                reason = str(exc) if isinstance(exc, LabelloopError) else \
                    f"{type(exc).__name__}: {exc}"
                message = f"webapp {webapp!r} could not start: {reason}"
                self.log.error(message, exc_info=not isinstance(exc, LabelloopError))
                self._failures[webapp] = (time.monotonic(), message)
                raise WebappUnavailableError(message) from exc
            self._failures.pop(webapp, None)
            self._apps[webapp] = app
            return app

    def _create(self, webapp: str, cfg: dict) -> Webapp:
        self.project.upgrade_schema()  # a plugin directory added while serving: its tables
        comp, config = webapp_config(webapp, cfg, self.project.registry)
        resource_dir = self.resource_dir(comp.plugin)
        ctx = WebappContext(self.project, webapp, comp, config,
                            logging.getLogger(f"labelloop.webapp.{webapp}"), resource_dir,
                            f"{API_PREFIX}/webapps/{webapp}",
                            f"/resource/{comp.plugin}" if resource_dir else None)
        backend = comp.entry()(ctx)
        if backend is None:
            raise LabelloopError(f"{comp.type}: create_backend(ctx) returned None")
        routes = normalise_routes(webapp, getattr(backend, "routes", None))
        self.log.info("webapp %s (%s): backend ready, %d route(s)", webapp, comp.type, len(routes))
        return Webapp(webapp, comp, backend, routes)

    def describe(self, webapp: str) -> dict:
        """The list entry of one webapp; a webapp that can't start says why, and a
        project.json that could not be applied is reported as `config_error`."""
        try:
            entry = self.get(webapp).describe()
        except WebappUnavailableError as exc:
            cfg = self.project.config["webapps"][webapp]
            entry = {"id": webapp, "type": cfg["type"], "data_type": None, "categories": None,
                     "page": f"/webapps/{webapp}", "error": str(exc)}
        if self.config_error:
            entry["config_error"] = self.config_error
        return entry
