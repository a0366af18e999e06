"""The REST API under ``/api/v1``: sessions, devices, points, commands, alarms, journal.

Each handler is declared with :data:`ROUTES` (method, path, documentation);
:func:`cityvisor.web.app.build_app` mounts them and
:mod:`cityvisor.web.openapi` documents them from the same declarations.
Handlers find the hub in ``request.app[HUB]`` and the logged-in user in
``request["user"]``; every action is done in that user's name, so the
command bus and the alarm manager check their role and zones and journal
who did it.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import hdrs, web

from ..core.alarms import Priority, UnknownAlarmError
from ..core.commands import CommandRequest
from ..core.patterns import MAX_LENGTH, MAX_WILDCARDS, PatternError, compile_pattern
from ..core.points import Point, UnknownPointError, now_ms
from ..core.store import JournalEntry, TrendBucket
from ..core.text import MAX_INTEGER, shown, text_problem
from ..core.users import User
from . import metrics, openapi, ws
from .app import HUB, STATE
from .auth import MAX_PASSWORD, MAX_USER_NAME
from .routing import (
    METRICS,
    PUBLIC,
    ApiError,
    Fields,
    Query,
    Routes,
    integer_schema,
    invalid,
    json_body,
    parse_duration_ms,
    query_int,
    query_list,
    query_str,
    query_time,
    text_schema,
    time_schema,
)
from .visibility import visibility

if TYPE_CHECKING:
    from ..core.devices import DeviceType
    from ..core.hub import Hub

__all__ = ["ROUTES", "STATIC_ROOT"]

log = logging.getLogger(__name__)

ROUTES = Routes()
"""Every route of the core API, in matching order."""

STATIC_ROOT = Path(__file__).resolve().parent / "static"
"""The HMI's static files (the screens): served at ``/static/`` without a session."""

_OBJECT = {"type": "object"}


def _hub(request: web.Request) -> Hub:
    return request.app[HUB]  # type: ignore[return-value]


def _user(request: web.Request) -> User:
    return request["user"]  # type: ignore[no-any-return]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# --------------------------------------------------------------------------- pages


_LOGIN_PAGE = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{site} — cityvisor</title>
</head>
<body>
<main>
<h1>{site}</h1>
{status}
<form method="post" action="/api/v1/session">
<p><label>Identifiant / User name <input name="username" autocomplete="username" required></label></p>
<p><label>Mot de passe / Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Se connecter / Log in</button></p>
</form>
</main>
</body>
</html>
"""


@ROUTES.route(
    "GET",
    "/",
    summary="The HMI's page (the login form until the screens are installed)",
    auth=PUBLIC,
    tag="pages",
    responses={200: "HTML page"},
)
async def index(request: web.Request) -> web.StreamResponse:
    """The HMI's entry page. Served without a session: it holds no data, only the login form.

    When the screens (``cityvisor/web/static/index.html``) are installed they
    are served instead of this placeholder, with the site's language and name
    in place of ``%CITYVISOR_LANGUAGE%`` and ``%CITYVISOR_SITE%`` (escaped): the
    login form speaks the city's language before anyone has logged in.
    """
    page = STATIC_ROOT / "index.html"
    if page.is_file():
        config = _hub(request).config
        text = (
            page.read_text(encoding="utf-8")
            .replace("%CITYVISOR_LANGUAGE%", html.escape(config.site.language))
            .replace("%CITYVISOR_SITE%", html.escape(config.site.name))
        )
        return web.Response(text=text, content_type="text/html")
    site = html.escape(_hub(request).config.site.name)
    user = request.get("user")
    failed = request.query.get("login")
    if user is not None:
        status = f"<p>Connecté en tant que / Logged in as <strong>{html.escape(user.name)}</strong> ({user.role}).</p>"
    elif failed == "limited":
        status = (
            "<p>Trop de tentatives, réessayez plus tard. / Too many attempts, try again later.</p>"
        )
    elif failed:
        status = "<p>Identifiant ou mot de passe incorrect. / Wrong user name or password.</p>"
    else:
        status = ""
    return web.Response(text=_LOGIN_PAGE.format(site=site, status=status), content_type="text/html")


@ROUTES.route(
    "GET",
    "/static/{path:.+}",
    summary="The HMI's static files (ES modules, styles, vendored libraries)",
    auth=PUBLIC,
    tag="pages",
    responses={200: "the file", 404: "no such file"},
)
async def static_file(request: web.Request) -> web.StreamResponse:
    """A static file of the HMI. Served without a session: code and styles, never data."""
    relative = request.match_info["path"]
    try:
        root = STATIC_ROOT.resolve()
        path = (root / relative).resolve()
        path.relative_to(root)
        # A name longer than the file system allows is an OSError here, not a False.
        found = path.is_file()
    except (ValueError, OSError):
        found = False
    if not found:
        raise ApiError(404, "not_found", "no such file")
    return web.FileResponse(path, headers={hdrs.CACHE_CONTROL: "no-cache"})


# --------------------------------------------------------------------------- session

_USER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "role": {"enum": ["viewer", "operator", "supervisor", "admin"]},
        "zones": {"type": "array", "items": {"type": "string"}},
    },
}
_SESSION_SCHEMA = {
    "type": "object",
    "properties": {
        "user": _USER_SCHEMA,
        "csrf_token": {"type": "string", "description": "send it as X-CSRF-Token"},
        "created_ms": {"type": "integer"},
        "expires_ms": {"type": "integer"},
        "session_lifetime_s": {"type": "number"},
    },
}


def _session_json(request: web.Request, session: Any) -> dict[str, Any]:
    lifetime = request.app[STATE].settings.session_lifetime
    user = session.user
    return {
        "user": {"name": user.name, "role": str(user.role), "zones": sorted(user.zones)},
        "csrf_token": session.csrf,
        "created_ms": session.created_ms,
        "expires_ms": session.expires_ms(lifetime),
        "session_lifetime_s": lifetime,
    }


@ROUTES.route(
    "POST",
    "/api/v1/session",
    summary="Log in",
    auth=PUBLIC,
    tag="session",
    body={
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": text_schema(MAX_USER_NAME, min_length=1),
            "password": text_schema(MAX_PASSWORD),
        },
    },
    responses={
        200: "logged in: the session cookie is set; the body has the CSRF token",
        303: "logged in or refused, from the HTML form: back to the page",
        401: "wrong user name or password",
        429: "too many failed attempts for this name or from this address (Retry-After)",
    },
    response_schema=_SESSION_SCHEMA,
)
async def login(request: web.Request) -> web.StreamResponse:
    """Log in with a user name and a password (JSON, or an HTML form).

    Sets the session cookie (HttpOnly, SameSite=Strict, Secure when
    ``[web] secure_cookies``) and returns the CSRF token that every
    state-changing request must carry in ``X-CSRF-Token``. Failed attempts
    are limited per user name and per client address; logins and failures
    are journaled (never the password).
    """
    state = request.app[STATE]
    hub = _hub(request)
    form = request.content_type == "application/x-www-form-urlencoded"
    if form:
        try:
            data = await request.post()
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "bad_form", "the form is not UTF-8 text") from None
        body: dict[str, Any] = {k: v for k, v in data.items() if isinstance(v, str)}
    else:
        body = await json_body(request)
    fields = Fields(body, allowed=["username", "password"])
    name = fields.text("username", required=True, max_length=MAX_USER_NAME, nonempty=True) or ""
    password = fields.text("password", required=True, max_length=MAX_PASSWORD, strip=False) or ""
    fields.done()
    address = request.remote or ""
    wait = state.limiter.retry_after(name, address)
    if wait > 0:
        if state.limiter.refuse(name, address):
            await hub.store.journal(
                JournalEntry(
                    kind="login_failed",
                    message=f"login of {name} refused: too many failed attempts",
                    user=name,
                    data={"reason": "rate_limited", "address": address},
                )
            )
        state.counters["login_rate_limited"] += 1
        retry = str(max(1, round(wait)))
        if form:
            return _see_other("/?login=limited")
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed attempts: try again in {retry} s",
            headers={hdrs.RETRY_AFTER: retry},
        )
    account = await state.accounts.authenticate(name, password)
    if account is None:
        state.limiter.failed(name, address)
        state.counters["login_failed"] += 1
        await hub.store.journal(
            JournalEntry(
                kind="login_failed",
                message=f"failed login as {name}",
                user=name,
                data={"reason": "bad_credentials", "address": address},
            )
        )
        if form:
            return _see_other("/?login=failed")
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    state.limiter.succeeded(name)
    session = await state.sessions.create(account, address)
    state.counters["login"] += 1
    await hub.store.journal(
        JournalEntry(
            kind="login",
            message=f"{name} logged in",
            user=name,
            data={"address": address, "role": str(account.role), "zones": sorted(account.zones)},
        )
    )
    response = _see_other("/") if form else _json(_session_json(request, session))
    response.set_cookie(
        state.cookie_name,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=state.settings.secure_cookies,
        path="/",
    )
    return response


def _see_other(location: str) -> web.Response:
    """Back to the page after the HTML form's login (no JavaScript needed)."""
    return web.Response(status=303, headers={hdrs.LOCATION: location})


@ROUTES.route(
    "GET", "/api/v1/session", summary="Who am I", tag="session", response_schema=_SESSION_SCHEMA
)
async def whoami(request: web.Request) -> web.StreamResponse:
    """The logged-in user (name, role, zones), the session's CSRF token and its expiry."""
    return _json(_session_json(request, request["session"]))


@ROUTES.route(
    "DELETE",
    "/api/v1/session",
    summary="Log out",
    tag="session",
    responses={204: "logged out; the cookie is cleared"},
)
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (journaled) and clear its cookie."""
    state = request.app[STATE]
    session = request["session"]
    await state.sessions.end(session)
    await _hub(request).store.journal(
        JournalEntry(
            kind="logout",
            message=f"{session.account.name} logged out",
            user=session.account.name,
            data={"address": request.remote or ""},
        )
    )
    response = web.Response(status=204)
    response.del_cookie(state.cookie_name, path="/")
    return response


# --------------------------------------------------------------------------- site


@ROUTES.route(
    "GET", "/api/v1/site", summary="The deployment: name, time zone, zones, map", tag="site"
)
async def site(request: web.Request) -> web.StreamResponse:
    """What the screens need to know about the deployment (never a device's config)."""
    config = _hub(request).config
    seen = visibility(request)
    return _json(
        {
            "name": config.site.name,
            "timezone": config.site.timezone,
            "language": config.site.language,
            "latitude": config.site.latitude,
            "longitude": config.site.longitude,
            "zones": [
                {"id": z.id, "name": z.name, "label": dict(z.label)}
                for z in config.zones
                if seen.sees_zone(z.id)
            ],
            "families": sorted(
                {d.family for d in _hub(request).devices.values() if seen.sees_zone(d.zone)}
            ),
            "tile_url": config.web.tile_url,
            "basemap": config.web.basemap is not None,
        }
    )


@ROUTES.route(
    "GET",
    "/api/v1/basemap",
    summary="The map's offline background: the GeoJSON of [web] basemap",
    tag="site",
    responses={
        200: "a GeoJSON document (served as application/json)",
        404: "no basemap configured",
    },
)
async def basemap(request: web.Request) -> web.StreamResponse:
    """The GeoJSON the map draws under the equipment (outlines of the communes...)."""
    path = _hub(request).config.web.basemap
    if path is None:
        raise ApiError(404, "no_basemap", "no [web] basemap is configured")
    try:
        body = await anyio.Path(path).read_bytes()
    except OSError as error:
        raise ApiError(404, "no_basemap", f"the basemap cannot be read: {error.strerror}") from None
    return web.Response(body=body, content_type="application/json")


# --------------------------------------------------------------------------- devices

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


_DEVICE_SCHEMA = {
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
    return _json(body)


# --------------------------------------------------------------------------- points


@ROUTES.route(
    "GET",
    "/api/v1/points",
    summary="Points matching a glob pattern, with their current values",
    tag="points",
    query=[
        Query(
            "pattern",
            text_schema(MAX_LENGTH, default="**"),
            "glob over point ids: * within a level, ** as a level: any levels; "
            f"at most {MAX_WILDCARDS} wildcards",
        ),
        Query(
            "limit",
            integer_schema(1, 100_000, default=10_000),
            "most points returned",
        ),
    ],
)
async def points(request: web.Request) -> web.StreamResponse:
    """Points whose id matches ``pattern`` (``centre/demo/**``), with value, quality
    and timestamps; ``truncated`` says when ``limit`` cut the list."""
    hub = _hub(request)
    pattern = query_str(request, "pattern", max_length=MAX_LENGTH) or "**"
    limit = query_int(request, "limit", default=10_000, minimum=1, maximum=100_000)
    assert limit is not None
    try:
        compile_pattern(pattern)
    except PatternError as error:
        raise invalid([f"pattern: {error}"]) from None
    found: list[dict[str, Any]] = []
    truncated = False
    seen = visibility(request)
    for point in hub.points.points(pattern):
        if not seen.sees_point(point):
            continue
        if len(found) >= limit:
            truncated = True
            break
        found.append(_point_json(point))
    return _json({"points": found, "truncated": truncated})


@ROUTES.route(
    "GET",
    "/api/v1/points/{id:.+}/history",
    summary="A point's history: raw values, or min/max/avg per bucket",
    tag="points",
    query=[
        Query(
            "from", time_schema("start"), "start (epoch ms or ISO 8601; default: 24 h before `to`)"
        ),
        Query("to", time_schema("end"), "end, excluded (default: now)"),
        Query(
            "bucket",
            text_schema(40),
            "bucket width: ms, or 500ms, 30s, 5m, 1h, 1d (at most 36600 d); absent: raw values",
        ),
        Query("limit", integer_schema(1, 10_000, default=10_000), "most rows returned"),
    ],
    responses={200: "OK", 404: "unknown point", 422: "bad range or bucket"},
)
async def history(request: web.Request) -> web.StreamResponse:
    """History of one point. Point ids contain slashes: put the id in the path as it
    is (``/api/v1/points/centre/demo/tank-a/level/history``) or percent-encoded.

    With ``bucket``, good-quality values are aggregated per bucket (min, max,
    avg, last; empty buckets are left out); without it, raw values come with
    their quality. At most 10,000 buckets per query.
    """
    hub = _hub(request)
    point_id = request.match_info["id"]
    point = hub.points.get(point_id)
    if not visibility(request).sees_point(point):
        raise UnknownPointError(point_id)
    end = query_time(request, "to")
    end = now_ms() + 1 if end is None else end
    start = query_time(request, "from")
    start = end - 86_400_000 if start is None else start
    limit = query_int(request, "limit", default=10_000, minimum=1, maximum=10_000)
    assert limit is not None
    if end <= start:
        raise invalid(["to must be after from"])
    bucket_text = query_str(request, "bucket")
    bucket_ms: int | None = None
    if bucket_text is not None:
        try:
            bucket_ms = parse_duration_ms(bucket_text)
        except ValueError as error:
            raise invalid([f"bucket: {error}"]) from None
        if bucket_ms <= 0:
            raise invalid(["bucket must be at least 1 ms"])
        if (end - start) / bucket_ms > 10_000:
            raise invalid(["more than 10000 buckets: widen the bucket or narrow the range"])
        if not point.spec.dtype.numeric:
            raise invalid([f"{point_id} holds text: it has no min/max/avg, ask without bucket"])
    # What was measured a moment ago belongs on the trend too.
    await hub.store.flush_history()
    rows = await hub.store.history(point_id, start, end, bucket_ms=bucket_ms, limit=limit)
    body: dict[str, Any] = {"point": point_id, "from": start, "to": end, "bucket_ms": bucket_ms}
    if bucket_ms is None:
        body["values"] = [r.as_json() for r in rows if not isinstance(r, TrendBucket)]
    else:
        body["buckets"] = [
            {
                "start": r.start,
                "count": r.count,
                "min": r.minimum,
                "max": r.maximum,
                "avg": r.average,
                "last": r.last,
            }
            for r in rows
            if isinstance(r, TrendBucket)
        ]
    return _json(body)


# --------------------------------------------------------------------------- commands

_RESULT_RESPONSES = {
    200: "the command ran: `outcome` says how it ended (succeeded, failed, timed_out...)",
    202: "waiting: `token` to confirm it, or `approval_id` for a second person",
    403: "not permitted (role or zone)",
    404: "unknown device or command",
    409: "interlocked (the reason says why), or a confirmation problem",
    422: "invalid arguments: `problems` lists every one",
    503: "device offline or busy",
}


def _result(result: Any) -> web.Response:
    outcome = result.outcome
    return _json(result.as_json(), status=202 if outcome.pending else 200)


@ROUTES.route(
    "POST",
    "/api/v1/devices/{id}/commands/{name}",
    summary="Send a command to a device",
    tag="commands",
    body={
        "type": "object",
        "properties": {
            "arguments": {"type": "object", "description": "the command's parameters"},
            "member": {
                **text_schema(100),
                "type": ["string", "null"],
                "description": "circuit, port... for a per-member command",
            },
            "comment": text_schema(500, multiline=True),
            "confirmation": text_schema(100, description="a selection's token: operate it now"),
        },
    },
    responses=_RESULT_RESPONSES,
)
async def send_command(request: web.Request) -> web.StreamResponse:
    """Send a command in the user's name. The command bus validates the arguments,
    checks the user's role and zone, the device's state and the interlocks, then runs
    it and waits for its feedback, or parks it for confirmation (select before operate)
    or for a second person's approval. Every attempt is journaled."""
    body = await json_body(request, required=False)
    fields = Fields(body, allowed=["arguments", "member", "comment", "confirmation"])
    arguments = fields.mapping("arguments")
    member = fields.text("member", max_length=100)
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    confirmation = fields.text("confirmation", max_length=100)
    fields.done()
    request_ = CommandRequest(
        request.match_info["id"],
        request.match_info["name"],
        arguments,
        member,
        _user(request),
        comment,
        "api",
        confirmation=confirmation,
    )
    return _result(await _hub(request).commands.execute(request_))


@ROUTES.route(
    "POST",
    "/api/v1/commands/confirm/{token}",
    summary="Confirm (operate) a selected command",
    tag="commands",
    responses=_RESULT_RESPONSES | {410: "the selection expired"},
)
async def confirm_command(request: web.Request) -> web.StreamResponse:
    """Operate a command selected earlier (its answer carried ``token``). Only the user
    who selected it may confirm, before it expires; everything is checked again."""
    return _result(
        await _hub(request).commands.confirm(request.match_info["token"], _user(request))
    )


@ROUTES.route(
    "POST",
    "/api/v1/commands/group",
    summary="Send one command to every device of a zone, family or tag",
    tag="commands",
    body={
        "type": "object",
        "required": ["command"],
        "properties": {
            "command": text_schema(100, min_length=1),
            "arguments": {"type": "object"},
            "zone": text_schema(100),
            "family": text_schema(100),
            "tag": text_schema(100),
            "type": text_schema(100),
            "members": {
                "oneOf": [
                    {"const": "all"},
                    {"type": "array", "items": text_schema(100), "maxItems": 10_000},
                ]
            },
            "comment": text_schema(500, multiline=True),
        },
    },
    responses=_RESULT_RESPONSES,
)
async def group_command(request: web.Request) -> web.StreamResponse:
    """One order to every device matching the selector (at least one of zone, family,
    tag, type), with one result per target: targets outside the user's zones are
    refused one by one. A group needing confirmation or approval is parked once."""
    body = await json_body(request)
    fields = Fields(
        body,
        allowed=["command", "arguments", "zone", "family", "tag", "type", "members", "comment"],
    )
    name = fields.text("command", required=True, max_length=100, nonempty=True)
    arguments = fields.mapping("arguments")
    selector = {key: fields.text(key, max_length=100) for key in ("zone", "family", "tag", "type")}
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    members = body.get("members", "all")
    if not (
        members == "all" or (isinstance(members, list) and all(isinstance(m, str) for m in members))
    ):
        fields.problems.append('members must be "all" or a list of member names')
    elif isinstance(members, list):
        if len(members) > 10_000:
            fields.problems.append("members lists at most 10000 names")
        fields.problems.extend(
            problem
            for member in members[:10_000]
            if (problem := text_problem("members", member, max_length=100))
        )
    fields.done()
    assert name is not None
    result = await _hub(request).commands.execute_group(
        name,
        arguments,
        _user(request),
        zone=selector["zone"],
        family=selector["family"],
        tag=selector["tag"],
        type_name=selector["type"],
        members=members,
        comment=comment,
    )
    return _result(result)


@ROUTES.route(
    "GET",
    "/api/v1/commands/approvals",
    summary="Commands waiting for a second person",
    tag="commands",
)
async def approvals(request: web.Request) -> web.StreamResponse:
    """``approvals``: requests this user may approve or reject (not their own, in their
    zones, with the role); ``requested``: the user's own requests still waiting."""
    bus = _hub(request).commands
    user = _user(request)
    return _json(
        {
            "approvals": [p.as_json() for p in bus.pending_approvals(user)],
            "requested": [
                p.as_json() for p in bus.pending_approvals() if p.requested_by.name == user.name
            ],
        }
    )


@ROUTES.route(
    "GET",
    "/api/v1/commands/confirmations",
    summary="The user's selected commands waiting for confirmation",
    tag="commands",
)
async def confirmations(request: web.Request) -> web.StreamResponse:
    """The user's own selections (select before operate) that are still open."""
    bus = _hub(request).commands
    return _json(
        {"confirmations": [p.as_json() for p in bus.pending_confirmations(_user(request))]}
    )


_COMMENT_BODY = {
    "type": "object",
    "properties": {"comment": text_schema(500, multiline=True)},
}


async def _comment(request: web.Request) -> str:
    fields = Fields(await json_body(request, required=False), allowed=["comment"])
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    fields.done()
    return comment


@ROUTES.route(
    "POST",
    "/api/v1/commands/approvals/{id}/approve",
    summary="Approve (and so run) a command",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES | {410: "expired"},
)
async def approve(request: web.Request) -> web.StreamResponse:
    """Approve a command waiting for a second person: it runs now, in the author's name,
    with the approver journaled. The approver must not be its author."""
    comment = await _comment(request)
    result = await _hub(request).commands.approve(request.match_info["id"], _user(request), comment)
    return _result(result)


@ROUTES.route(
    "POST",
    "/api/v1/commands/approvals/{id}/reject",
    summary="Reject a command waiting for approval",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES,
)
async def reject(request: web.Request) -> web.StreamResponse:
    """Reject a command waiting for approval (its author rejecting it cancels it)."""
    comment = await _comment(request)
    result = await _hub(request).commands.reject(request.match_info["id"], _user(request), comment)
    return _result(result)


@ROUTES.route(
    "POST",
    "/api/v1/commands/pending/{id}/cancel",
    summary="Withdraw a selection or an approval request",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES,
)
async def cancel(request: web.Request) -> web.StreamResponse:
    """Withdraw a selected command or an approval request (its author, or an admin)."""
    comment = await _comment(request)
    result = await _hub(request).commands.cancel(request.match_info["id"], _user(request), comment)
    return _result(result)


# --------------------------------------------------------------------------- alarms

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


# --------------------------------------------------------------------------- maintenance


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


# --------------------------------------------------------------------------- journal


@ROUTES.route(
    "GET",
    "/api/v1/journal",
    summary="The journal, newest first, filtered and paged",
    tag="journal",
    query=[
        Query(
            "kind",
            text_schema(2000),
            "comma-separated kinds (alarm, ack, command, login...), at most 50",
        ),
        Query("device", text_schema(200), "only this device"),
        Query("user", text_schema(200), "only what this user did"),
        Query("alarm", text_schema(200), "only this alarm"),
        Query("from", time_schema("from"), "from this time (epoch ms or ISO 8601)"),
        Query("to", time_schema("to"), "before this time"),
        Query("search", text_schema(200), "text in the message or the details"),
        Query("limit", integer_schema(1, 1000, default=100), "entries per page"),
        Query(
            "before_id",
            integer_schema(1, MAX_INTEGER),
            "next page: the previous page's next_before_id",
        ),
    ],
)
async def journal(request: web.Request) -> web.StreamResponse:
    """Journal entries, newest first. Page through with ``before_id`` set to the previous
    answer's ``next_before_id`` (null on the last page)."""
    limit = query_int(request, "limit", default=100, minimum=1, maximum=1000)
    assert limit is not None
    entries = await _hub(request).store.query_journal(
        kinds=query_list(request, "kind"),
        device=query_str(request, "device"),
        user=query_str(request, "user"),
        alarm=query_str(request, "alarm"),
        since=query_time(request, "from"),
        until=query_time(request, "to"),
        search=query_str(request, "search"),
        limit=limit,
        before_id=query_int(request, "before_id", minimum=1),
        scope=visibility(request).journal_scope(),
    )
    next_before = entries[-1].id if len(entries) == limit else None
    return _json({"entries": [e.as_json() for e in entries], "next_before_id": next_before})


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
    return _json(openapi.document(request.app, ROUTES))


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
