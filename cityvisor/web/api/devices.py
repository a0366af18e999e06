"""Devices: the equipment list by zone and family, and one device with its points and commands."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from ...core.points import Point
from ...core.users import User
from ..routing import (
    Query,
    Routes,
    query_str,
    text_schema,
)
from ..visibility import visibility
from .common import _hub, _json, _user

if TYPE_CHECKING:
    from ...core.devices import DeviceType
    from ...core.hub import Hub


# --------------------------------------------------------------------------- devices

ROUTES = Routes()
"""The routes of the devices (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


_SECRET_IN_URL = re.compile(r"(\w+://)[^/@\s:]+:[^/@\s]*@")


def _scrub(text: str) -> str:
    """A driver's error message without the credentials a URL might carry."""
    return _SECRET_IN_URL.sub(r"\1***:***@", text)[:500]


def _communication(hub: Hub, device: DeviceType) -> dict[str, Any]:
    driver = hub.supervisor.drivers.get(device.id)
    if driver is None:
        return {
            "online": False,
            "restarts": 0,
            "failures": 0,
            "last_reason": "",
            "last_error": "",
            "answered_ms": device.answered_ms or None,
        }
    return {
        "online": driver.online,
        "answered_ms": device.answered_ms or None,
        "restarts": driver.restarts,
        "failures": driver.failures,
        "last_reason": driver.last_reason,
        "last_error": _scrub(driver.last_error),
    }


def _device_summary(
    hub: Hub, device: DeviceType, alarm_counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    info = device.info
    return {
        "id": device.id,
        "type": device.type_name,
        "family": device.family,
        "zone": device.zone,
        "name": info.name or device.id,
        "label": dict(type(device).label),
        "tags": sorted(info.tags),
        "location": list(info.location) if info.location is not None else None,
        "watched_by": list(info.watched_by),
        "communication": _communication(hub, device),
        "alarms": alarm_counts.get(device.id, {"annunciated": 0, "unacked": 0}),
    }


_DEVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "family": {"type": "string"},
        "zone": {"type": "string"},
        "name": {"type": "string"},
        "label": {"type": "object", "description": "the device type's name, fr/en"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "location": {
            "type": ["array", "null"],
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "[latitude, longitude] in degrees, for the map; null if not placed",
        },
        "watched_by": {"type": "array", "items": {"type": "string"}},
        "communication": {
            "type": "object",
            "properties": {
                "online": {"type": "boolean"},
                "restarts": {"type": "integer"},
                "failures": {"type": "integer"},
                "last_reason": {"type": "string"},
                "last_error": {"type": "string"},
                "answered_ms": {
                    "type": ["integer", "null"],
                    "description": "when the equipment last answered (epoch ms), changed or not",
                },
            },
        },
        "alarms": {
            "type": "object",
            "properties": {"annunciated": {"type": "integer"}, "unacked": {"type": "integer"}},
        },
    },
}


def _alarm_counts(hub: Hub) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for alarm in hub.alarms.alarms():
        if alarm.annunciated:
            entry = counts.setdefault(alarm.device_id, {"annunciated": 0, "unacked": 0})
            entry["annunciated"] += 1
            entry["unacked"] += not alarm.acked
    return counts


@ROUTES.route(
    "GET",
    "/api/v1/devices",
    summary="Devices, with their communication status",
    tag="devices",
    query=[
        Query("zone", text_schema(200), "only the devices of this zone"),
        Query("family", text_schema(200), "only the devices of this family"),
        Query("type", text_schema(200), "only the devices of this type"),
        Query("tag", text_schema(200), "only the devices with this tag"),
    ],
    response_schema={
        "type": "object",
        "properties": {"devices": {"type": "array", "items": _DEVICE_SCHEMA}},
    },
)
async def devices(request: web.Request) -> web.StreamResponse:
    """Every device (or those matching the filters), by zone then id.

    Each has its identity, location, tags, the supervisor's view of its
    communication (online, restarts, last error without credentials) and
    its count of annunciated alarms. Never its config.
    """
    hub = _hub(request)
    zone, family = query_str(request, "zone"), query_str(request, "family")
    type_name, tag = query_str(request, "type"), query_str(request, "tag")
    counts = _alarm_counts(hub)
    seen = visibility(request)
    listed = [
        _device_summary(hub, d, counts)
        for d in sorted(hub.devices.values(), key=lambda d: (d.zone, d.id))
        if seen.sees_zone(d.zone)
        and (zone is None or d.zone == zone)
        and (family is None or d.family == family)
        and (type_name is None or d.type_name == type_name)
        and (tag is None or tag in d.info.tags)
    ]
    return _json({"devices": listed})


def _point_json(point: Point) -> dict[str, Any]:
    spec = point.spec
    return {
        "id": point.id,
        "name": spec.name,
        "device_id": point.device_id,
        "zone": point.zone,
        "family": point.family,
        "member": point.member,
        "type": spec.dtype.value,
        "unit": spec.unit,
        "writable": spec.writable,
        "labels": {str(k): v for k, v in spec.labels.items()} if spec.labels else None,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "doc": dict(spec.doc),
        "current": point.current.as_json(),
    }


def _command_json(device: DeviceType, spec: Any, user: User) -> dict[str, Any]:
    members: list[str] | None = None
    if spec.per is not None:
        try:
            members = device.members(spec.per)
        except (TypeError, ValueError):
            members = []
    return {
        "name": spec.name,
        "label": dict(spec.label),
        "doc": dict(spec.doc),
        "per": spec.per,
        "members": members,
        "role": str(spec.role),
        "confirm": spec.confirm,
        "confirm_within_s": spec.confirm_within,
        "two_person": spec.two_person or spec.name in device.info.require_approval,
        "approve_within_s": spec.approve_within,
        "approver_role": str(spec.approver_role_needed),
        "parameters": spec.json_schema(),
        "interlocks": [
            {
                "point": lock.point,
                "equals": lock.equals,
                "not_equals": lock.not_equals,
                "reason": dict(lock.reason),
            }
            for lock in spec.interlocks
        ],
        "feedback": None
        if spec.feedback is None
        else {"point": spec.feedback.point, "within": spec.feedback.within},
        "permitted": user.may(spec.role, device.zone),
    }


@ROUTES.route(
    "GET",
    "/api/v1/devices/{id}",
    summary="One device: points, commands, alarms",
    tag="devices",
    responses={200: "OK", 404: "unknown device"},
    response_schema={
        "type": "object",
        "properties": {
            **_DEVICE_SCHEMA["properties"],
            "points": {"type": "array", "items": {"type": "object"}},
            "commands": {"type": "array", "items": {"type": "object"}},
            "alarms": {"type": "array", "items": {"type": "object"}},
            "pages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"url": {"type": "string"}, "label": {"type": "object"}},
                },
                "description": "the plugin's own screens about this device (a ring diagram...)",
            },
        },
    },
)
async def device(request: web.Request) -> web.StreamResponse:
    """A device with its points (live values), its commands (parameter JSON schemas,
    whether the user may send them) and its alarms."""
    hub = _hub(request)
    found = visibility(request).device_or_404(request.match_info["id"])
    user = _user(request)
    body = _device_summary(hub, found, _alarm_counts(hub))
    body["points"] = [_point_json(p) for p in hub.points.of_device(found.id)]
    body["commands"] = [_command_json(found, s, user) for s in found.command_specs.values()]
    body["alarms"] = [a.as_json() for a in hub.alarms.alarms() if a.device_id == found.id]
    body["pages"] = [
        {"url": url.replace("{id}", quote(found.id, safe="")), "label": dict(label)}
        for url, label in type(found).pages.items()
    ]
    return _json(body)
