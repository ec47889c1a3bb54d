"""The OpenAPI 3.1 document of the JSON API, including the routes webapp backends declare."""

from __future__ import annotations

import re
from typing import Any

from .. import __version__
from .webapps import API_PREFIX, BODY_METHODS, WebappHost, WebappUnavailableError

JSON = "application/json"
INT64 = {"minimum": -(2 ** 63), "maximum": 2 ** 63 - 1}


def bounded(schema: object) -> object:
    """A copy of a JSON Schema whose integers are bounded to 64 bits (what the server takes)."""
    if isinstance(schema, list):
        return [bounded(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) if isinstance(v, dict | list) and k not in ("enum", "const", "default",
                                                                     "examples") else v
           for k, v in schema.items()}
    kind = out.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        out["minimum"] = max(out.get("minimum", INT64["minimum"]), INT64["minimum"])
        out["maximum"] = min(out.get("maximum", INT64["maximum"]), INT64["maximum"])
    return out


def _json(schema: dict | None = None, description: str = "JSON answer") -> dict:
    return {"description": description, "content": {JSON: {"schema": schema or {}}}}


def _errors(*codes: str) -> dict:
    return {code: {"$ref": "#/components/responses/Error"} for code in codes}


def _op(op_id: str, summary: str, ok: dict, *codes: str, **extra: Any) -> dict:
    responses = {"200": ok, **_errors(*codes, "403"),
                 "500": {"$ref": "#/components/responses/Error"}}
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


def _name_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def host_paths(scenarios: list[str] | None = None) -> dict:
    """Paths of the host's own API (`scenarios`: the names a scenario path may take)."""
    scenario = _name_param("scenario", "scenario name in project.json")
    if scenarios:
        scenario["schema"] = {"type": "string", "enum": list(scenarios)}
    return {
        f"{API_PREFIX}/health": {"get": {
            **_op("health", "Server health", _json({"type": "object", "properties": {
                "status": {"const": "ok"}}, "required": ["status"]})), "security": []}},
        f"{API_PREFIX}/openapi.json": {"get": {
            **_op("openapi", "This document", _json({"type": "object"})), "security": []}},
        f"{API_PREFIX}/webapps": {"get": _op(
            "listWebapps", "Webapp instances of the project", _json({"type": "array", "items": {
                "$ref": "#/components/schemas/Webapp"}}), "401")},
        f"{API_PREFIX}/scenarios": {"get": _op(
            "listScenarios", "Scenarios with their triggers, steps, current and last run",
            _json({"type": "array", "items": {"type": "object"}}), "401")},
        f"{API_PREFIX}/scenarios/{{scenario}}/run": {"post": {
            "operationId": "runScenario",
            "summary": "Start a run in the background (409 when the scenario is running)",
            "parameters": [scenario],
            "requestBody": {"required": False, "content": {JSON: {"schema": {
                "type": "object", "description": "nothing yet (an empty object, or no body)"}}}},
            "responses": {"202": _json({"$ref": "#/components/schemas/RunStarted"},
                                       "Run started"),
                          **_errors("400", "401", "403", "404", "409", "413"),
                          "500": {"$ref": "#/components/responses/Error"}}}},
        f"{API_PREFIX}/scenarios/{{scenario}}/runs": {"get": _op(
            "listScenarioRuns", "Runs of a scenario, newest first",
            _json({"type": "array", "items": {"$ref": "#/components/schemas/Run"}}),
            "400", "401", "404", parameters=[scenario, {
                "name": "limit", "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 20}}])},
        f"{API_PREFIX}/scenarios/{{scenario}}/runs/{{run_id}}": {"get": _op(
            "getScenarioRun", "One run of a scenario", _json({"$ref": "#/components/schemas/Run"}),
            "400", "401", "404", parameters=[scenario, {
                "name": "run_id", "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 0, "maximum": INT64["maximum"]}}])},
    }


def _operation_id(webapp: str, method: str, subpath: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", f"{webapp} {method.lower()} {subpath}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:] if w)


def _links(webapp: str, routes: dict, declared: dict | None) -> dict:
    """A route's OpenAPI links (see webapps.py) to the routes the webapp has."""
    out = {}
    for name, link in (declared or {}).items():
        method, subpath = link["route"][0].upper(), link["route"][1].strip("/")
        if (method, subpath) in routes:
            out[name] = {"operationId": _operation_id(webapp, method, subpath),
                         **{k: v for k, v in link.items() if k != "route"}}
    return out


def webapp_paths(host: WebappHost) -> tuple[dict, list[str]]:
    """Paths of every webapp backend's routes, and the webapps that could not start."""
    paths: dict[str, dict] = {}
    unavailable = []
    for webapp in host.ids():
        try:
            app = host.get(webapp)
        except WebappUnavailableError:
            unavailable.append(webapp)
            continue
        for (method, subpath), route in sorted(app.routes.items()):
            op: dict[str, Any] = {
                "operationId": _operation_id(webapp, method, subpath),
                "summary": route.summary or f"{method} {subpath} of webapp {webapp}",
                "tags": [webapp],
                "responses": {"200": _json(route.response),
                              **_errors("400", "401", "403", "404", "503"),
                              "500": {"$ref": "#/components/responses/Error"}}}
            if route.produces:  # a file (see FileResponse), or 304 when the ETag matches
                op["responses"]["200"] = {"description": "The file", "content": {
                    kind: {"schema": {"type": "string", "contentMediaType": kind}}
                    for kind in route.produces}}
                op["responses"]["304"] = {"description": "Not modified: the ETag of "
                                                         "If-None-Match is the file's"}
            if route.description:
                op["description"] = route.description
            if route.role is not None:
                op["x-labelloop-role"] = route.role
                op["description"] = (f"{op.get('description', '')}\n\nNeeds the {route.role} "
                                     "role (a token made with `labelloop token add NAME --role "
                                     f"{route.role}`): lower roles get 403.").lstrip()
                op["responses"]["403"] = {
                    "description": f"The caller's role is lower than {route.role} (or a "
                                   "cross-site write): nothing was done",
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
            links = _links(webapp, app.routes, route.links)
            if links:
                op["responses"]["200"]["links"] = links
            schema = bounded(route.schema or {})
            if method in BODY_METHODS:
                op["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
                op["responses"].update(_errors("409", "413", "507"))
            elif isinstance(schema.get("properties"), dict):
                required = set(schema.get("required") or [])
                op["parameters"] = [{"name": name, "in": "query", "required": name in required,
                                     "schema": prop if isinstance(prop, dict) else {}}
                                    for name, prop in schema["properties"].items()]
            paths.setdefault(f"{API_PREFIX}/webapps/{webapp}/{subpath}", {})[method.lower()] = op
    return paths, unavailable


def build_openapi(host: WebappHost, title: str) -> dict:
    """The whole OpenAPI document."""
    paths = host_paths(sorted(host.project.config.get("scenarios", {})))
    extra, unavailable = webapp_paths(host)
    paths.update(extra)
    description = ("JSON API of a Labelloop server. The user of a request is the token's user "
                   "(`Authorization: Bearer <token>`) when the project has tokens, else the "
                   "`X-Labelloop-User` header, else `anonymous`. Errors are `{\"error\": ...}`.")
    if unavailable:
        description += f" Webapps that could not start (routes not listed): {', '.join(unavailable)}."
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "paths": paths,
        "security": [{"bearer": []}, {"user": []}, {}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "user": {"type": "apiKey", "in": "header", "name": "X-Labelloop-User"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Webapp": {"type": "object", "required": ["id", "type"], "properties": {
                    "id": {"type": "string"}, "type": {"type": "string"},
                    "data_type": {"type": ["string", "null"]},
                    "categories": {}, "page": {"type": "string"},
                    "error": {"type": "string"}}},
                "RunStarted": {"type": "object", "required": ["run_id", "scenario", "status"],
                               "properties": {"run_id": {"type": "integer"},
                                              "scenario": {"type": "string"},
                                              "status": {"type": "string"},
                                              "url": {"type": "string"}}},
                "Run": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "kind": {"type": "string"},
                    "name": {"type": "string"}, "started": {"type": "string"},
                    "ended": {"type": ["string", "null"]}, "status": {"type": "string"},
                    "error": {"type": ["string", "null"]}, "details": {"type": "object"}}},
            },
            "responses": {"Error": _json({"$ref": "#/components/schemas/Error"},
                                         "Error: {\"error\": message}")},
        },
    }


__all__ = ["build_openapi"]
