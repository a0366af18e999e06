"""The OpenAPI 3.1 document, generated from the route declarations and the live router.

Core routes are documented from their :class:`~cityvisor.web.routing.Route`
declarations (summary, docstring, query parameters, body schema, answers).
Routes that plugins add are found in the application's router and
documented from their handler's docstring, so the document lists every
route the server answers (a test holds it to that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import __version__
from .routing import METRICS, PUBLIC, Route

__all__ = ["document", "router_routes"]

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code for programs"},
        "message": {"type": "string", "description": "what went wrong, in English"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "text": {"type": "object", "description": "the message in French and English"},
    },
}


def router_routes(app: web.Application) -> list[tuple[str, str]]:
    """Every ``(METHOD, path)`` the application's router answers (HEAD left out)."""
    found = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        found.append((route.method, canonical))
    return found


def _canonical(path: str) -> str:
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            **(
                {"description": "may contain slashes (as is or %2F-encoded)"}
                if f"{{{name}:.+}}" in route.path
                else {}
            ),
        }
        for name in re.findall(r"\{(\w+)(?::[^}]+)?\}", route.path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": dict(q.schema),
        }
        for q in route.query
    ]
    responses: dict[str, Any] = {}
    for status, description in route.responses.items():
        entry: dict[str, Any] = {"description": description}
        if status < 300 and status not in (204,) and route.response_schema is not None:
            entry["content"] = {"application/json": {"schema": dict(route.response_schema)}}
        elif status >= 400:
            entry["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        responses[str(status)] = entry
    if route.auth != PUBLIC:
        responses.setdefault(
            "401",
            {
                "description": "no session",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        )
    if route.method not in ("GET", "HEAD"):
        responses.setdefault(
            "403",
            {
                "description": "another site's request, or a missing/wrong X-CSRF-Token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        )
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "description": route.description,
        "parameters": parameters,
        "responses": responses,
    }
    if route.tag:
        operation["tags"] = [route.tag]
    if route.auth == PUBLIC:
        operation["security"] = []
    elif route.auth == METRICS:
        operation["security"] = [{"session": []}, {"metricsToken": []}]
    elif route.method not in ("GET", "HEAD"):
        operation["security"] = [{"session": [], "csrf": []}]
    if route.body is not None:
        operation["requestBody"] = {
            "required": bool(route.body.get("required")),
            "content": {"application/json": {"schema": dict(route.body)}},
        }
    return operation


def _plugin_operation(method: str, handler: Any) -> dict[str, Any]:
    doc = (getattr(handler, "__doc__", None) or "").strip()
    summary = doc.splitlines()[0] if doc else "A route added by a plugin"
    operation: dict[str, Any] = {
        "operationId": f"plugin_{getattr(handler, '__name__', 'handler')}_{method.lower()}",
        "summary": summary,
        "description": doc,
        "tags": ["plugins"],
        "responses": {
            "200": {"description": "see the plugin's documentation"},
            "401": {"description": "no session"},
        },
    }
    if method not in ("GET", "HEAD"):
        operation["security"] = [{"session": [], "csrf": []}]
    if getattr(handler, "__cityvisor_auth__", None) == PUBLIC:  # hookspecs.public: no session
        operation["security"] = []
        del operation["responses"]["401"]
    return operation


def document(app: web.Application, routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``: core routes from ``routes``, plugins' from the router."""
    paths: dict[str, dict[str, Any]] = {}
    declared = set()
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route)
        declared.add((route.method, _canonical(route.path)))
    for served in app.router.routes():
        if served.method in ("HEAD", "*") or served.resource is None:
            continue
        key = (served.method, served.resource.canonical)
        if key in declared:
            continue
        paths.setdefault(served.resource.canonical, {})[served.method.lower()] = _plugin_operation(
            served.method, served.handler
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cityvisor",
            "version": __version__,
            "description": "REST and WebSocket API of a cityvisor hub. Every route but the "
            "login and the login page needs a session (cookie); state-changing requests "
            "need the session's X-CSRF-Token header. Errors are JSON: "
            '{"error": code, "message": text}. Times are UTC epoch milliseconds.',
        },
        "servers": [{"url": "/"}],
        "security": [{"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "cityvisor_session",
                    "description": "__Host-cityvisor_session when secure_cookies is on",
                },
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "[web] metrics_token, for /metrics only",
                },
            },
            "schemas": {"Error": _ERROR},
        },
    }
