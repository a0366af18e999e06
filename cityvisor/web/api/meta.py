"""The rest of the API: the WebSocket route, the OpenAPI document and the metrics page."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from .. import metrics, openapi, ws
from ..routing import (
    METRICS,
    ApiError,
    Routes,
)
from ..state import STATE
from ..visibility import visibility
from .common import _json

if TYPE_CHECKING:
    pass

from ..state import API

log = logging.getLogger(__name__)

ROUTES = Routes()
"""The routes of the WebSocket, OpenAPI and metrics (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""

# --------------------------------------------------------------------------- the rest

ROUTES.route(
    "GET",
    "/api/v1/ws",
    summary="WebSocket: live point changes and alarm events",
    tag="live",
    responses={
        101: "switching to the WebSocket protocol (see docs/api.md)",
        503: "too many WebSocket clients",
    },
)(ws.websocket)


@ROUTES.route("GET", "/api/v1/openapi.json", summary="This document", tag="meta")
async def openapi_document(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of every route, plugins' included."""
    routes = request.app[API]
    return _json(openapi.document(request.app, routes))


@ROUTES.route(
    "GET",
    "/metrics",
    summary="Metrics in the Prometheus text format",
    auth=METRICS,
    tag="meta",
    responses={200: "text/plain; version=0.0.4"},
)
async def metrics_page(request: web.Request) -> web.StreamResponse:
    """Points, update rate, alarms by state and priority, command outcomes, driver
    restarts, WebSocket clients. Needs a session, or ``Authorization: Bearer`` with
    the ``[web] metrics_token``. With ``[security] zone_reading = "own"`` they cover
    every zone (device ids included): only users who read everything see them."""
    if "user" in request and not visibility(request).everything:
        raise ApiError(403, "forbidden", "the metrics cover every zone: you read only yours")
    text = metrics.render(request.app[STATE])
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: metrics.CONTENT_TYPE})
