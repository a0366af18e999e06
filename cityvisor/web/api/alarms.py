"""Alarms: the list, KPIs, one alarm, acknowledge, shelve, unshelve, out of service, procedures."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web

from ...core.alarms import Priority, UnknownAlarmError
from ...core.text import shown
from ..routing import (
    ApiError,
    Fields,
    Query,
    Routes,
    integer_schema,
    invalid,
    json_body,
    query_int,
    query_str,
    text_schema,
)
from ..visibility import visibility
from .common import _hub, _json, _user

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- alarms

ROUTES = Routes()
"""The routes of the alarms (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


MAX_SHELVE_S = 7 * 86_400
"""The longest shelving the API documents (the alarm manager's own limit)."""


_STATES = (
    "normal",
    "unack_active",
    "ack_active",
    "rtn_unack",
    "shelved",
    "suppressed",
    "out_of_service",
    "maintenance",
)


@ROUTES.route(
    "GET",
    "/api/v1/alarms",
    summary="Alarms: annunciated ones by default, with filters",
    tag="alarms",
    query=[
        Query(
            "scope",
            {"enum": ["annunciated", "active", "all"], "default": "annunciated"},
            "annunciated: what the operator must see; active: condition true, hidden or not; all",
        ),
        Query("zone", text_schema(200), "only this zone"),
        Query("priority", {"enum": ["low", "medium", "high", "critical"]}, "only this priority"),
        Query("state", {"enum": list(_STATES)}, "only this display state"),
        Query("device", text_schema(200), "only this device's alarms"),
        Query("family", text_schema(200), "only this family"),
    ],
)
async def alarms(request: web.Request) -> web.StreamResponse:
    """Alarms, highest priority first, unacknowledged before acknowledged, newest first;
    with the banner's counts per priority."""
    hub = _hub(request)
    scope = query_str(request, "scope") or "annunciated"
    if scope not in ("annunciated", "active", "all"):
        raise invalid(["scope must be annunciated, active or all"])
    priority = query_str(request, "priority")
    if priority is not None:
        try:
            wanted = Priority.parse(priority)
        except ValueError as error:
            raise invalid([str(error)]) from None
    state = query_str(request, "state")
    if state is not None and state not in _STATES:
        raise invalid([f"state must be one of {', '.join(_STATES)}"])
    zone, device_id = query_str(request, "zone"), query_str(request, "device")
    family = query_str(request, "family")
    if scope == "annunciated":
        listed = hub.alarms.annunciated()
    else:
        listed = hub.alarms.alarms(active_only=scope == "active")
        listed.sort(key=lambda a: (-a.spec.priority, a.acked, -(a.raised_at or 0), a.id))
    seen = visibility(request)
    selected = [
        a.as_json()
        for a in listed
        if seen.sees_alarm(a)
        and (zone is None or a.zone == zone)
        and (priority is None or a.spec.priority is wanted)
        and (state is None or a.display_state == state)
        and (device_id is None or a.device_id == device_id)
        and (family is None or a.family == family)
    ]
    return _json({"alarms": selected, "counts": hub.alarms.counts_by_priority(seen.zone_filter)})


@ROUTES.route(
    "GET",
    "/api/v1/alarms/kpis",
    summary="Alarm-system performance (ISA-18.2)",
    tag="alarms",
    query=[
        Query(
            "period",
            integer_schema(60, 90 * 86_400),
            "seconds looked back (default: a day)",
        )
    ],
)
async def alarm_kpis(request: web.Request) -> web.StreamResponse:
    """Floods per zone, bad actors, chattering and stale alarms, counts by state and priority."""
    period = query_int(request, "period", minimum=60, maximum=90 * 86_400)
    return _json(
        _hub(request).alarms.kpis(
            period=float(period) if period else None, zones=visibility(request).zone_filter
        )
    )


@ROUTES.route(
    "GET",
    "/api/v1/alarms/{id}",
    summary="One alarm with its operating procedure",
    tag="alarms",
    responses={200: "OK", 404: "unknown alarm"},
)
async def alarm(request: web.Request) -> web.StreamResponse:
    """An alarm's full state and the procedure (checklist) linked to it."""
    hub = _hub(request)
    found = hub.alarms.get(request.match_info["id"])
    if not visibility(request).sees_alarm(found):
        raise UnknownAlarmError(found.id)
    procedure = hub.alarms.procedures.get(found.procedure) if found.procedure else None
    return _json(
        {
            "alarm": found.as_json(),
            "procedure": procedure.as_json() if procedure is not None else None,
        }
    )


_ALARM_RESPONSES = {
    200: "done and journaled: the alarm as it is now",
    403: "not permitted",
    404: "unknown alarm",
    409: "not possible in the alarm's state",
    422: "invalid request",
}


@ROUTES.route(
    "POST",
    "/api/v1/alarms/{id}/ack",
    summary="Acknowledge an alarm",
    tag="alarms",
    body={"type": "object", "properties": {"comment": text_schema(1000, multiline=True)}},
    responses=_ALARM_RESPONSES,
)
async def acknowledge(request: web.Request) -> web.StreamResponse:
    """Acknowledge an alarm in the user's name, with an optional comment (operator, in
    the alarm's zone); answers once it is journaled."""
    fields = Fields(await json_body(request, required=False), allowed=["comment"])
    comment = fields.text("comment", default="", max_length=1000, multiline=True) or ""
    fields.done()
    found = await _hub(request).alarms.acknowledge(
        request.match_info["id"], _user(request), comment
    )
    return _json({"alarm": found.as_json()})


@ROUTES.route(
    "POST",
    "/api/v1/alarms/{id}/shelve",
    summary="Shelve an alarm for a while",
    tag="alarms",
    body={
        "type": "object",
        "required": ["duration", "reason"],
        "properties": {
            "duration": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_SHELVE_S,
                "description": "seconds, at most a week",
            },
            "reason": text_schema(1000, multiline=True, min_length=1),
        },
    },
    responses=_ALARM_RESPONSES,
)
async def shelve(request: web.Request) -> web.StreamResponse:
    """Shelve an alarm for ``duration`` seconds with a reason (supervisor); it comes back
    by itself when the time is up."""
    fields = Fields(await json_body(request), allowed=["duration", "reason"])
    duration = fields.number(
        "duration",
        required=True,
        minimum=0,
        exclusive_minimum=True,
        maximum=_hub(request).alarms.max_shelve,
    )
    reason = fields.text("reason", required=True, max_length=1000, nonempty=True, multiline=True)
    fields.done()
    assert duration is not None and reason is not None
    found = await _hub(request).alarms.shelve(
        request.match_info["id"], _user(request), duration, reason
    )
    return _json({"alarm": found.as_json()})


@ROUTES.route(
    "POST",
    "/api/v1/alarms/{id}/unshelve",
    summary="Bring a shelved alarm back",
    tag="alarms",
    responses=_ALARM_RESPONSES,
)
async def unshelve(request: web.Request) -> web.StreamResponse:
    """Unshelve an alarm before its time (operator, in its zone)."""
    await json_body(request, required=False)
    found = await _hub(request).alarms.unshelve(request.match_info["id"], _user(request))
    return _json({"alarm": found.as_json()})


@ROUTES.route(
    "POST",
    "/api/v1/alarms/{id}/out-of-service",
    summary="Take an alarm out of service, or back",
    tag="alarms",
    body={
        "type": "object",
        "properties": {
            "out": {"type": "boolean", "default": True},
            "reason": text_schema(1000, multiline=True),
        },
    },
    responses=_ALARM_RESPONSES,
)
async def out_of_service(request: web.Request) -> web.StreamResponse:
    """Take an alarm out of service (``out``: true, reason required) or return it to
    service (``out``: false); supervisor."""
    fields = Fields(await json_body(request, required=False), allowed=["out", "reason"])
    out = fields.boolean("out", default=True)
    reason = fields.text("reason", default="", max_length=1000, multiline=True) or ""
    fields.done()
    found = await _hub(request).alarms.set_out_of_service(
        request.match_info["id"], _user(request), out, reason
    )
    return _json({"alarm": found.as_json()})


@ROUTES.route(
    "POST",
    "/api/v1/alarms/{id}/steps/{n}",
    summary="Tick a step of the alarm's procedure",
    tag="alarms",
    body={"type": "object", "properties": {"done": {"type": "boolean", "default": True}}},
    responses=_ALARM_RESPONSES,
)
async def procedure_step(request: web.Request) -> web.StreamResponse:
    """Tick (``done``: true, the default) or untick step ``n`` (0-based) of the alarm's
    operating procedure; journaled with the procedure's version."""
    text = request.match_info["n"]
    if not re.fullmatch(r"\d{1,6}", text):
        raise invalid([f"step must be an integer from 0 to 999999, not {shown(text)}"])
    step = int(text)
    fields = Fields(await json_body(request, required=False), allowed=["done"])
    done = fields.boolean("done", default=True)
    fields.done()
    found = await _hub(request).alarms.tick_step(
        request.match_info["id"], step, _user(request), done
    )
    return _json({"alarm": found.as_json()})


@ROUTES.route(
    "GET",
    "/api/v1/procedures/{id}",
    summary="An operating procedure",
    tag="alarms",
    responses={200: "OK", 404: "unknown procedure"},
)
async def procedure(request: web.Request) -> web.StreamResponse:
    """An operating procedure: title and steps in French and English, and its version."""
    found = _hub(request).alarms.procedures.get(request.match_info["id"])
    if found is None:
        raise ApiError(404, "unknown_procedure", f"unknown procedure {request.match_info['id']!r}")
    return _json(found.as_json())
