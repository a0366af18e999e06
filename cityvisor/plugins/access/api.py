"""The badge API: badges, their rights and the lockdown exceptions, under ``/api/v1/access/``.

==========  ==========================================  ==========================================
method      path                                        body / answer
==========  ==========================================  ==========================================
GET         ``/api/v1/access/badges``                   every badge with its rights and exceptions
POST        ``/api/v1/access/badges``                   ``{"number", "holder", "note"?}``
DELETE      ``/api/v1/access/badges/{number}``          the badge and all its permits
POST        ``/api/v1/access/badges/{number}/rights``   ``{"place", "valid_from"?, "valid_until"?}``
DELETE      ``/api/v1/access/rights/{id}``
POST        ``/api/v1/access/badges/{number}/exceptions``  same body as a right
DELETE      ``/api/v1/access/exceptions/{id}``
==========  ==========================================  ==========================================

A place is ``building:<id>``, ``zone:<id>`` or ``*``; dates are ISO 8601 or
epoch milliseconds. Only supervisors and admins may call these routes, and
only for places inside their zones (a building's doors must all be in them;
``*`` needs every zone). Each change is journaled (kind ``badges``) with the
user and the badge's pseudonym, and the doors see it at once. Errors answer
``{"error": code, "message": ...}`` with 400, 403, 404 or 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from cityvisor.core.store import JournalEntry
from cityvisor.core.text import MAX_TIME_MS, shown, text_problem
from cityvisor.core.users import Role, User

from . import rights
from .rights import AccessControl, RightsError

if TYPE_CHECKING:
    import sqlite_utils

    from cityvisor.core.hub import Hub

PREFIX = "/api/v1/access"
Handler = Callable[[web.Request], Awaitable[web.Response]]


def routes(hub: Hub) -> list[web.RouteDef]:
    """The API's routes for ``hub`` (what the plugin's ``cityvisor_web_routes`` returns)."""
    api = _BadgeApi(hub)
    return [
        web.get(f"{PREFIX}/badges", api.guard(api.list)),
        web.post(f"{PREFIX}/badges", api.guard(api.add)),
        web.delete(f"{PREFIX}/badges/{{number}}", api.guard(api.remove)),
        web.post(f"{PREFIX}/badges/{{number}}/rights", api.guard(api.grant("right"))),
        web.post(f"{PREFIX}/badges/{{number}}/exceptions", api.guard(api.grant("exception"))),
        web.delete(f"{PREFIX}/rights/{{id:\\d+}}", api.guard(api.revoke("right"))),
        web.delete(f"{PREFIX}/exceptions/{{id:\\d+}}", api.guard(api.revoke("exception"))),
    ]


class _RefusedError(Exception):
    """A request refused with ``status`` and ``{"error": code, "message": ...}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _BadgeApi:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.control = hub.resources.get("access", AccessControl)

    def guard(self, handler: Handler) -> Handler:
        """Supervisors and admins only; a user's mistake becomes a JSON 4xx."""

        async def guarded(request: web.Request) -> web.Response:
            user = request.get("user")
            try:
                if not isinstance(user, User) or not user.has_role(Role.SUPERVISOR):
                    raise _RefusedError(
                        403, "forbidden", "managing badges needs the supervisor role"
                    )
                return await handler(request)
            except RightsError as error:
                code = {404: "not_found", 409: "conflict"}.get(error.status, "invalid")
                return _answer(error.status, code, str(error))
            except _RefusedError as error:
                return _answer(error.status, error.code, str(error))

        return guarded

    # -- handlers ----------------------------------------------------------------

    async def list(self, request: web.Request) -> web.Response:
        badges = await self._call(rights.list_badges)
        key = await self._key()
        for badge in badges:
            badge["pseudonym"] = rights.pseudonym(key, badge["number"])
        return web.json_response({"badges": badges})

    async def add(self, request: web.Request) -> web.Response:
        body = await _body(request)
        number, holder = _text(body, "number"), _text(body, "holder")
        note = _text(body, "note", required=False, max_length=1000, multiline=True)
        await self._call(rights.add_badge, number, holder, note)
        await self._changed(request, "badge enrolled", number)
        return web.json_response({"number": number}, status=201)

    async def remove(self, request: web.Request) -> web.Response:
        number = request.match_info["number"]
        for permit in await self._call(_permits_of, number):
            self._check_place(request["user"], permit.place)
        await self._call(rights.remove_badge, number)
        await self._changed(request, "badge withdrawn", number)
        return web.json_response({"number": number})

    def grant(self, kind: str) -> Handler:
        async def grant(request: web.Request) -> web.Response:
            number, body = request.match_info["number"], await _body(request)
            place = rights.parse_place(_text(body, "place"))
            self._check_place(request["user"], place)
            valid_from = _date(body.get("valid_from"))
            valid_until = _date(body.get("valid_until"), end=True)
            by = request["user"].name
            permit_id = await self._call(
                lambda db: rights.add_permit(
                    db, number, kind, place, valid_from=valid_from, valid_until=valid_until, by=by
                )
            )
            data = {
                "id": permit_id,
                "place": place,
                "valid_from": valid_from,
                "valid_until": valid_until,
            }
            await self._changed(request, f"{kind} granted", number, data)
            return web.json_response(data, status=201)

        return grant

    def revoke(self, kind: str) -> Handler:
        async def revoke(request: web.Request) -> web.Response:
            permit_id = int(request.match_info["id"])
            permit = await self._call(_permit, permit_id, kind)
            self._check_place(request["user"], permit.place)
            number = await self._call(rights.remove_permit, permit_id, kind)
            await self._changed(
                request, f"{kind} revoked", number, {"id": permit_id, "place": permit.place}
            )
            return web.json_response({"id": permit_id})

        return revoke

    # -- helpers -----------------------------------------------------------------

    def _check_place(self, user: User, place: str) -> None:
        """A user manages the places inside their zones; ``*`` only with every zone."""
        kind, _, name = place.partition(":")
        if kind == "zone":
            allowed = user.in_zone(name)
        elif kind == "building":
            zones = {
                d.zone
                for d in self.hub.devices.values()
                if getattr(d.config, "building", None) == name
            }
            allowed = "*" in user.zones or (bool(zones) and all(user.in_zone(z) for z in zones))
        else:
            allowed = "*" in user.zones
        if not allowed:
            raise _RefusedError(403, "forbidden", f"{place} is outside your zones")

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        def call(db: sqlite_utils.Database) -> Any:
            rights.create_tables(db)
            return function(db, *args)

        return await self.hub.store.call(call)

    async def _key(self) -> bytes:
        if not self.control.key:
            self.control.key = await anyio.to_thread.run_sync(
                rights.pseudonym_key, self.hub.config.store.path
            )
        return self.control.key

    async def _changed(
        self, request: web.Request, message: str, number: str, data: dict[str, Any] | None = None
    ) -> None:
        """Journal an edit (with the badge's pseudonym, never its number) and tell the doors."""
        badge = rights.pseudonym(await self._key(), number)
        entry = JournalEntry(
            kind="badges",
            message=message,
            user=request["user"].name,
            data={"badge": badge, **(data or {})},
        )
        await self.hub.store.journal(entry)
        if self.control.store is not None:
            await self.control.reload()


def _permit(db: sqlite_utils.Database, permit_id: int, kind: str) -> rights.Permit:
    for permits in rights.load_book(db)[1].permits.values():
        for permit in permits:
            if permit.id == permit_id and permit.kind == kind:
                return permit
    raise RightsError(f"no {kind} {permit_id}", 404)


def _permits_of(db: sqlite_utils.Database, number: str) -> list[rights.Permit]:
    permits = rights.load_book(db)[1].permits
    if number not in permits:
        raise RightsError(f"no badge {number}", 404)
    return permits[number]


def _answer(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise RightsError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RightsError("the body must be a JSON object")
    return body


def _text(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    max_length: int = 200,
    multiline: bool = False,
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise RightsError(f"{name} is required (a non-empty string)")
    problem = text_problem(name, value.strip(), max_length=max_length, multiline=multiline)
    if problem is not None:
        raise RightsError(problem, 422)
    return value.strip()


def _date(value: Any, *, end: bool = False) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_TIME_MS:
            raise RightsError(f"{shown(value)} is not a date between 1970 and 9999", 422)
        return value
    if isinstance(value, str):
        return rights.parse_date(value[:64], end=end)
    raise RightsError(f"{shown(value)} is not a date (ISO 8601 or epoch milliseconds)")
