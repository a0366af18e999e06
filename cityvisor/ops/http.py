"""The operations layer over HTTP: the operators' API, the citizens' Open311 endpoint, the trackers' port.

- ``/api/v1/ops/...``: incidents, dispatch, crews, procedures, reports and
  the crisis cell, behind the web server's session check (reads follow
  ``[security] zone_reading`` through :mod:`cityvisor.web.visibility`).
- ``/open311/v2/...``: GeoReport v2, public (no session), rate-limited per
  address, sized; errors are GeoReport's ``[{"code": ..., "description": ...}]``
  and name the parameter at fault.
- the OsmAnd protocol (``/?id=..&lat=..&lon=..&timestamp=..&speed=..&token=..``,
  GET or form POST) on a port of its own, served by :func:`serve_trackers`.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from cityvisor.core.alarms import UnknownAlarmError
from cityvisor.core.hookspecs import public
from cityvisor.web.routing import ApiError, json_body
from cityvisor.web.visibility import visibility

from .crews import PositionError, TrackerRefusedError
from .crisis import CrisisError
from .incidents import IncidentConflictError, IncidentError, IncidentPermissionError, State
from .reports import ReportError

if TYPE_CHECKING:
    from .operations import Operations

__all__ = ["OpsRoutes", "serve_trackers", "tracker_app"]

log = logging.getLogger(__name__)

MAX_TRACKER_BODY = 4096
"""Largest OsmAnd request body accepted (a position is a few dozen bytes)."""


def _user(request: web.Request) -> Any:
    return request["user"]


def _text(body: dict[str, Any], key: str, *, required: bool = False, limit: int = 2000) -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"{key}: expected a text", problems=[key])
    if required and not value.strip():
        raise ApiError(422, "invalid_request", f"{key}: missing", problems=[key])
    if len(value) > limit or any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ApiError(
            422, "invalid_request", f"{key}: too long or control characters", problems=[key]
        )
    return value


class OpsRoutes:
    """The routes of one hub's operations layer."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def routes(self) -> list[web.RouteDef]:
        """Every route: operators' API, HMI page, Open311 (public)."""
        r = [
            web.get("/api/v1/ops/incidents", self.incidents),
            web.post("/api/v1/ops/incidents", self.create_incident),
            web.post("/api/v1/ops/incidents/from-alarm", self.incident_from_alarm),
            web.get("/api/v1/ops/incidents/{id}", self.incident),
            web.post("/api/v1/ops/incidents/{id}/state", self.move_incident),
            web.post("/api/v1/ops/incidents/{id}/links", self.link_incident),
            web.get("/api/v1/ops/incidents/{id}/dispatch", self.proposals),
            web.post("/api/v1/ops/incidents/{id}/dispatch", self.dispatch),
            web.get("/api/v1/ops/crews", self.crews),
            web.get("/api/v1/ops/procedures", self.procedures),
            web.get("/api/v1/ops/procedures/{id}", self.procedure),
            web.get("/api/v1/ops/reports/{id}", self.report),
            web.get("/api/v1/ops/reports/{id}/photo", self.report_photo),
            web.get("/api/v1/ops/crisis", self.crisis),
            web.post("/api/v1/ops/crisis", self.open_crisis),
            web.post("/api/v1/ops/crisis/notes", self.crisis_note),
            web.post("/api/v1/ops/crisis/close", self.close_crisis),
            web.get("/api/v1/ops/crisis/{id}/timeline", self.crisis_timeline),
            web.get("/api/v1/ops/crisis/{id}/report", self.crisis_report),
            web.get("/plugins/ops/", self.page),
            web.get("/plugins/ops/ops.js", self.script),
        ]
        if self.ops.settings.open311.enabled:
            r += [
                web.get("/open311/v2/services.json", public(self.services)),
                web.post("/open311/v2/requests.json", public(self.post_request)),
                web.get("/open311/v2/requests/{id}.json", public(self.get_request)),
            ]
        return r

    # -- helpers -----------------------------------------------------------------

    async def _ready(self) -> None:
        with anyio.move_on_after(10):
            await self.ops.ready.wait()
        if not self.ops.ready.is_set():
            raise ApiError(
                503,
                "starting",
                "the operations layer is not ready yet",
                headers={"Retry-After": "5"},
            )

    def _incident(self, request: web.Request) -> Any:
        try:
            incident = self.ops.book.get(int(request.match_info["id"]))
        except (ValueError, IncidentError):
            incident = None
        if incident is None or not visibility(request).sees_zone(incident.zone):
            raise ApiError(
                404, "unknown_incident", f"unknown incident {request.match_info['id']!r}"
            )
        return incident

    async def _act(self, action: Any) -> web.Response:
        try:
            incident = await action
        except IncidentPermissionError as error:
            raise ApiError(403, "not_permitted", str(error)) from None
        except IncidentConflictError as error:
            raise ApiError(409, "incident_state", str(error)) from None
        except IncidentError as error:
            raise ApiError(422, "invalid_request", str(error)) from None
        return web.json_response(self._shown(incident))

    def _shown(self, incident: Any) -> dict[str, Any]:
        body = incident.as_json()
        crew = self.ops.fleet.crews.get(incident.crew or "")
        body["crew_state"] = crew.as_json() if crew is not None else None
        return body

    # -- incidents ---------------------------------------------------------------

    async def incidents(self, request: web.Request) -> web.Response:
        """Incidents the user may read, most urgent first: ``state=open`` (the default: new,
        assigned, on site), ``active`` (not closed), ``all`` (newest 1000 first) or one state."""
        await self._ready()
        seen = visibility(request)
        state = request.query.get("state", "open")
        if state == "open":
            found = self.ops.book.open_incidents()
        elif state == "active":
            found = self.ops.book.open_incidents() + sorted(
                (i for i in self.ops.book.incidents.values() if i.state == State.RESOLVED),
                key=lambda i: -i.updated_ts,
            )
        elif state == "all":
            found = sorted(self.ops.book.incidents.values(), key=lambda i: -i.id)[:1000]
        elif state in {s.value for s in State}:
            found = [i for i in self.ops.book.incidents.values() if i.state.value == state]
        else:
            raise ApiError(
                400,
                "bad_parameter",
                "state: expected open, active, all or a state",
                problems=["state"],
            )
        shown = [self._shown(i) for i in found if seen.sees_zone(i.zone)]
        return web.json_response({"incidents": shown[:1000]})

    async def incident(self, request: web.Request) -> web.Response:
        """One incident with its alarms, reports and actions."""
        await self._ready()
        return web.json_response(self._shown(self._incident(request)))

    async def create_incident(self, request: web.Request) -> web.Response:
        """Open an incident by hand (operator in its zone)."""
        await self._ready()
        body = await json_body(request)
        zone = _text(body, "zone", required=True, limit=64)
        if zone not in {z.id for z in self.ops.hub.config.zones}:
            raise ApiError(
                422, "invalid_request", f"zone: unknown zone {zone!r}", problems=["zone"]
            )
        location = body.get("location")
        if location is not None:
            if (
                not isinstance(location, list)
                or len(location) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in location)
                or not (-90 <= location[0] <= 90 and -180 <= location[1] <= 180)
            ):
                raise ApiError(
                    422, "invalid_request", "location: expected [lat, lon]", problems=["location"]
                )
            location = (float(location[0]), float(location[1]))
        action = self.ops.book.create(
            _user(request),
            title=_text(body, "title", required=True, limit=200),
            zone=zone,
            priority=_text(body, "priority", limit=16) or "medium",
            location=location,
            skill=_text(body, "skill", limit=32) or None,
            comment=_text(body, "comment"),
        )
        response = await self._act(action)
        response.set_status(201)
        return response

    async def incident_from_alarm(self, request: web.Request) -> web.Response:
        """Open the incident of an alarm in one call (``{"alarm": id, "comment": ...}``)."""
        await self._ready()
        body = await json_body(request)
        alarm_id = _text(body, "alarm", required=True, limit=300)
        try:
            alarm = self.ops.hub.alarms.get(alarm_id)
        except UnknownAlarmError:
            alarm = None
        if alarm is None or not visibility(request).sees_alarm(alarm):
            raise ApiError(404, "unknown_alarm", f"alarm: unknown alarm {alarm_id!r}")
        device = self.ops.hub.devices.get(alarm.device_id or "")
        location = device.info.location if device is not None else None
        response = await self._act(
            self.ops.book.from_alarm(
                alarm, _user(request), _text(body, "comment"), location=location
            )
        )
        response.set_status(201)
        return response

    async def move_incident(self, request: web.Request) -> web.Response:
        """Change an incident's state (``{"state": "on_site", "comment": ...}``), journaled."""
        await self._ready()
        incident = self._incident(request)
        body = await json_body(request)
        return await self._act(
            self.ops.book.move(
                incident.id,
                _text(body, "state", required=True, limit=16),
                _user(request),
                _text(body, "comment"),
            )
        )

    async def link_incident(self, request: web.Request) -> web.Response:
        """Add an alarm, report, action or note to an incident, journaled."""
        await self._ready()
        incident = self._incident(request)
        body = await json_body(request)
        return await self._act(
            self.ops.book.link(
                incident.id,
                _text(body, "kind", required=True, limit=16),
                _text(body, "ref", required=True, limit=300),
                _user(request),
                _text(body, "comment"),
            )
        )

    async def proposals(self, request: web.Request) -> web.Response:
        """The available crews with the skill, nearest first (great-circle distance, ETA)."""
        await self._ready()
        incident = self._incident(request)
        skill = request.query.get("skill") or None
        try:
            found = self.ops.propose(incident, skill)
        except IncidentError as error:
            raise ApiError(409, "no_location", str(error)) from None
        return web.json_response(
            {"incident": incident.id, "proposals": [p.as_json() for p in found]}
        )

    async def dispatch(self, request: web.Request) -> web.Response:
        """Confirm the crew to send (``{"crew": id, "comment": ...}``): incident assigned, journaled."""
        await self._ready()
        incident = self._incident(request)
        body = await json_body(request)
        return await self._act(
            self.ops.dispatch(
                incident.id,
                _text(body, "crew", required=True, limit=64),
                _user(request),
                _text(body, "comment"),
            )
        )

    async def crews(self, request: web.Request) -> web.Response:
        """Every crew: skills, state, incident, last position and ETA."""
        await self._ready()
        return web.json_response(
            {"crews": [crew.as_json() for crew in self.ops.fleet.crews.values()]}
        )

    # -- procedures ----------------------------------------------------------------

    async def procedures(self, request: web.Request) -> web.Response:
        """Procedure files, or those whose scope names ``?alarm=&device_type=&zone=``."""
        await self._ready()
        query = request.query
        found = [
            p.as_json()
            for p in self.ops.procedures.values()
            if p.names(
                alarm=query.get("alarm", ""),
                device_type=query.get("device_type", ""),
                zone=query.get("zone", ""),
            )
        ]
        return web.json_response({"procedures": found[:1000], "total": len(found)})

    async def procedure(self, request: web.Request) -> web.Response:
        """One procedure file: steps with their command or person to call, scope, version."""
        await self._ready()
        found = self.ops.procedures.get(request.match_info["id"])
        if found is None:
            raise ApiError(
                404, "unknown_procedure", f"unknown procedure {request.match_info['id']!r}"
            )
        return web.json_response(found.as_json())

    # -- reports -------------------------------------------------------------------

    async def _report(self, request: web.Request) -> Any:
        found = await self.ops.desk.get(request.match_info["id"])
        if found is None or not visibility(request).sees_zone(found.zone):
            raise ApiError(404, "unknown_report", f"unknown report {request.match_info['id']!r}")
        return found

    async def report(self, request: web.Request) -> web.Response:
        """A citizen report; name, e-mail and phone only for ``personal_data_role``."""
        await self._ready()
        found = await self._report(request)
        personal = self.ops.desk.may_read_personal(_user(request))
        return web.json_response(found.as_json(personal=personal))

    async def report_photo(self, request: web.Request) -> web.StreamResponse:
        """A report's photo, re-encoded without EXIF."""
        await self._ready()
        found = await self._report(request)
        photo = await self.ops.desk.photo(found.id) if found.has_photo else None
        if photo is None:
            raise ApiError(404, "no_photo", "this report has no photo")
        return web.Response(body=photo, content_type="image/jpeg")

    # -- crisis ----------------------------------------------------------------------

    async def _crisis(self, action: Any) -> Any:
        try:
            return await action
        except PermissionError as error:
            raise ApiError(403, "not_permitted", str(error)) from None
        except CrisisError as error:
            raise ApiError(409 if "open" in str(error) else 422, "crisis", str(error)) from None

    async def crisis(self, request: web.Request) -> web.Response:
        """The open crisis (or null) and the past ones."""
        await self._ready()
        cell = self.ops.cell
        current = cell.current
        return web.json_response(
            {
                "current": current.as_json() if current else None,
                "crises": [c.as_json() for c in sorted(cell.crises.values(), key=lambda c: -c.id)],
            }
        )

    async def open_crisis(self, request: web.Request) -> web.Response:
        """Open a crisis (``{"kind": "flood", "title": ...}``; the crisis role)."""
        await self._ready()
        body = await json_body(request)
        crisis = await self._crisis(
            self.ops.cell.open(
                _user(request),
                _text(body, "kind", required=True, limit=32),
                _text(body, "title", required=True, limit=200),
            )
        )
        return web.json_response(crisis.as_json(), status=201)

    async def crisis_note(self, request: web.Request) -> web.Response:
        """Write a note in the open crisis's timeline (operator)."""
        await self._ready()
        body = await json_body(request)
        entry = await self._crisis(
            self.ops.cell.note(_user(request), _text(body, "text", required=True))
        )
        return web.json_response(entry.as_json(), status=201)

    async def close_crisis(self, request: web.Request) -> web.Response:
        """Close the open crisis (``{"summary": ...}``; the crisis role); its report is written."""
        await self._ready()
        body = await json_body(request)
        crisis = await self._crisis(
            self.ops.cell.close(
                _user(request),
                _text(body, "summary", limit=10_000),
                list(self.ops.book.incidents.values()),
            )
        )
        return web.json_response(crisis.as_json())

    def _crisis_of(self, request: web.Request) -> Any:
        try:
            return self.ops.cell.get(int(request.match_info["id"]))
        except (ValueError, CrisisError):
            raise ApiError(
                404, "unknown_crisis", f"unknown crisis {request.match_info['id']!r}"
            ) from None

    async def crisis_timeline(self, request: web.Request) -> web.Response:
        """What the journal holds for the crisis, oldest first (the user's zones only)."""
        await self._ready()
        crisis = self._crisis_of(request)
        seen = visibility(request)
        entries = await self.ops.cell.timeline(crisis)
        shown = [
            e.as_json()
            for e in entries
            if seen.everything
            or seen.sees_device(e.device)
            or seen.sees_zone(e.data.get("zone"))
            or e.kind == "crisis"
        ]
        return web.json_response({"crisis": crisis.as_json(), "timeline": shown})

    async def crisis_report(self, request: web.Request) -> web.Response:
        """The HTML report of a closed crisis (print it to PDF from the browser)."""
        await self._ready()
        crisis = self._crisis_of(request)
        if not visibility(request).everything:
            raise ApiError(403, "not_permitted", "the crisis report covers every zone")
        report = await self.ops.cell.report(crisis.id)
        if report is None:
            raise ApiError(409, "crisis_open", f"crisis {crisis.id} is still open: no report yet")
        return web.Response(text=report, content_type="text/html")

    # -- HMI -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        """The operations screen (incidents, crews, crisis), fr/en."""
        return web.Response(text=_asset("ops.html"), content_type="text/html")

    async def script(self, request: web.Request) -> web.Response:
        """The operations screen's script."""
        return web.Response(text=_asset("ops.js"), content_type="text/javascript")

    # -- Open311 ---------------------------------------------------------------------

    async def services(self, request: web.Request) -> web.Response:
        """GeoReport v2 service list (public)."""
        return web.json_response(
            [
                {
                    "service_code": s.code,
                    "service_name": s.name,
                    "description": s.description,
                    "metadata": False,
                    "type": "realtime",
                    "keywords": "",
                    "group": s.group,
                }
                for s in self.ops.settings.open311.services
            ]
        )

    async def post_request(self, request: web.Request) -> web.Response:
        """GeoReport v2 POST requests.json: a citizen's report becomes an incident (public)."""
        await self._ready()
        desk = self.ops.desk
        wait = desk.limiter.allow(request.remote or "unknown")
        if wait:
            return _georeport_error(
                429, "too many reports from this address", {"Retry-After": str(int(wait) + 1)}
            )
        limit = desk.settings.max_photo_bytes + 64_000
        if request.content_length is not None and request.content_length > limit:
            return _georeport_error(413, f"media: request larger than {limit} bytes")
        photo: bytes | None = None
        form: dict[str, str] = {}
        try:
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                total = 0
                while (part := await reader.next()) is not None:
                    name = getattr(part, "name", None) or ""
                    data = bytearray()
                    while chunk := await part.read_chunk():  # type: ignore[union-attr]
                        total += len(chunk)
                        if total > limit:
                            return _georeport_error(
                                413, f"media: request larger than {limit} bytes"
                            )
                        data.extend(chunk)
                    if name == "media":
                        photo = bytes(data)
                    else:
                        form[name] = data.decode("utf-8")
            else:
                posted = await request.post()
                form = {k: v for k, v in posted.items() if isinstance(v, str)}
            fields = desk.check(form)
            report, token = await desk.submit(fields, photo)
        except ReportError as error:
            return _georeport_error(error.status, str(error))
        except UnicodeDecodeError:
            return _georeport_error(400, "the form is not UTF-8 text")
        except ValueError as error:
            return _georeport_error(400, f"the form cannot be read ({error})")
        return web.json_response(
            [
                {
                    "service_request_id": report.id,
                    "token": token,
                    "service_notice": "Merci, votre signalement est transmis / Thank you, "
                    "your report is on its way",
                    "account_id": None,
                }
            ],
            status=201,
        )

    async def get_request(self, request: web.Request) -> web.Response:
        """GeoReport v2 GET requests/{id}.json with the citizen's ``token`` (public)."""
        await self._ready()
        token = request.query.get("token", "")
        if not token:
            return _georeport_error(400, "token: missing (it came with the request's id)")
        found = await self.ops.desk.get(request.match_info["id"], token)
        if found is None:
            return _georeport_error(404, "service_request_id: unknown request or wrong token")
        service = self.ops.desk.services.get(found.service_code)
        return web.json_response([found.georeport(service)])


def _georeport_error(
    status: int, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        [{"code": status, "description": description}], status=status, headers=headers
    )


def _asset(name: str) -> str:
    return resources.files("cityvisor.ops").joinpath("static", name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- trackers


def tracker_app(ops: Operations) -> web.Application:
    """The OsmAnd protocol application: one route, ``/``, GET or form POST."""

    async def position(request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.body_exists:
            posted = await request.post()
            params.update({k: v for k, v in posted.items() if isinstance(v, str)})
        token = params.pop("token", "")
        auth = request.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        try:
            ops.ingest(params, token)
        except PositionError as error:
            return web.json_response(
                {"error": "bad_position", "field": error.field, "message": str(error)}, status=400
            )
        except TrackerRefusedError as error:
            return web.json_response({"error": "refused", "message": str(error)}, status=403)
        return web.Response(status=200)

    app = web.Application(client_max_size=MAX_TRACKER_BODY)
    app.router.add_route("GET", "/", position)
    app.router.add_route("POST", "/", position)
    return app


async def serve_trackers(
    ops: Operations,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the OsmAnd port until cancelled; ``ops.tracker_port`` is the bound port."""
    runner = web.AppRunner(tracker_app(ops), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        addresses = runner.addresses
        ops.tracker_port = addresses[0][1] if addresses else port
        log.info("OsmAnd trackers on %s:%s", host, ops.tracker_port)
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
