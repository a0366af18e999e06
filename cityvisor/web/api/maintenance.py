"""Planned maintenance windows: list, add, remove."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...core.points import now_ms
from ..routing import (
    Fields,
    Routes,
    json_body,
    text_schema,
    time_schema,
)
from ..visibility import visibility
from .common import _hub, _json, _user

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- maintenance


ROUTES = Routes()
"""The routes of the maintenance windows (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


@ROUTES.route("GET", "/api/v1/maintenance", summary="Planned maintenance windows", tag="alarms")
async def maintenance_windows(request: web.Request) -> web.StreamResponse:
    """Current and future maintenance windows, by start time."""
    seen = visibility(request)
    windows = [
        w
        for w in _hub(request).alarms.maintenance_windows()
        if (seen.sees_device(w.device_id) if w.device_id is not None else seen.sees_zone(w.zone))
    ]
    return _json({"windows": [w.as_json() for w in windows]})


@ROUTES.route(
    "POST",
    "/api/v1/maintenance",
    summary="Plan maintenance of a device or a zone",
    tag="alarms",
    body={
        "type": "object",
        "required": ["end", "reason"],
        "properties": {
            "device_id": text_schema(100),
            "zone": text_schema(100),
            "start": time_schema("epoch ms or ISO 8601; default now"),
            "end": time_schema("epoch ms or ISO 8601"),
            "reason": text_schema(1000, multiline=True, min_length=1),
        },
    },
    responses={
        201: "planned and journaled",
        403: "not permitted",
        422: "invalid request",
        409: "not possible",
    },
)
async def add_maintenance(request: web.Request) -> web.StreamResponse:
    """Plan a maintenance window for one device (``device_id``) or one zone (``zone``)
    (supervisor): its alarms are not annunciated between ``start`` and ``end``."""
    fields = Fields(
        await json_body(request), allowed=["device_id", "zone", "start", "end", "reason"]
    )
    device_id = fields.text("device_id", max_length=100)
    zone = fields.text("zone", max_length=100)
    start = fields.time_ms("start", default=now_ms())
    end = fields.time_ms("end", required=True)
    reason = fields.text("reason", required=True, max_length=1000, nonempty=True, multiline=True)
    if (device_id is None) == (zone is None):
        fields.problems.append("give exactly one of device_id and zone")
    fields.done()
    assert start is not None and end is not None and reason is not None
    window = await _hub(request).alarms.add_maintenance(
        _user(request), device_id=device_id, zone=zone, start_ms=start, end_ms=end, reason=reason
    )
    return _json({"window": window.as_json()}, status=201)


@ROUTES.route(
    "DELETE",
    "/api/v1/maintenance/{id}",
    summary="End or cancel a maintenance window",
    tag="alarms",
    responses={200: "ended and journaled", 403: "not permitted", 404: "unknown window"},
)
async def remove_maintenance(request: web.Request) -> web.StreamResponse:
    """End or cancel a maintenance window (supervisor)."""
    window = await _hub(request).alarms.remove_maintenance(request.match_info["id"], _user(request))
    return _json({"window": window.as_json()})
