"""Incidents: one real-world event (a lamp column down, a flooded underpass) followed to its end.

An incident groups the alarms, citizen reports and actions about one event.
Its states run ``new -> assigned -> on_site -> resolved -> closed``; every
change is journaled (kind ``incident``) with the user and their comment
*before* it is applied, and kept in the store's SQLite file in tables of
its own (``ops_incidents``, ``ops_incident_links``) through
:meth:`Store.call`, so incidents survive a restart.

Zones decide who acts, as for devices: creating, assigning or moving an
incident needs the operator role in its zone. Who *reads* is the web
routes' business (``[security] zone_reading``).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import sqlite_utils

from cityvisor.core.alarms import Alarm, Priority
from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry, Store
from cityvisor.core.users import Role, User

__all__ = [
    "Incident",
    "IncidentBook",
    "IncidentConflictError",
    "IncidentError",
    "IncidentPermissionError",
    "State",
]

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    """Where an incident stands."""

    NEW = "new"
    ASSIGNED = "assigned"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    CLOSED = "closed"


MOVES: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.ASSIGNED, State.RESOLVED}),
    State.ASSIGNED: frozenset({State.NEW, State.ON_SITE, State.RESOLVED}),
    State.ON_SITE: frozenset({State.RESOLVED}),
    State.RESOLVED: frozenset({State.CLOSED, State.ON_SITE}),
    State.CLOSED: frozenset(),
}
"""The changes allowed from each state (a resolved incident may be reopened on site)."""

OPEN_STATES = frozenset({State.NEW, State.ASSIGNED, State.ON_SITE})
"""States in which an incident still needs someone."""


class IncidentError(ValueError):
    """A request about incidents that cannot be done (unknown, wrong state...)."""


class IncidentPermissionError(IncidentError):
    """The user lacks the role or the zone."""


class IncidentConflictError(IncidentError):
    """The request does not fit the incident's (or the crew's) current state."""


@dataclass
class Incident:
    """One event, its state, where it is and what is linked to it."""

    id: int
    title: str
    zone: str
    priority: Priority
    state: State
    created_ts: int
    created_by: str
    updated_ts: int
    location: tuple[float, float] | None = None
    source: str = "manual"
    """``manual``, ``alarm`` or ``report``: how it was created."""
    crew: str | None = None
    skill: str | None = None
    """The skill the job needs (``lighting``), for dispatch."""
    links: list[dict[str, Any]] = field(default_factory=list)
    """Alarms, reports and actions, oldest first: ``{kind, ref, ts, user, comment}``."""

    @property
    def open(self) -> bool:
        """True while someone still has to act."""
        return self.state in OPEN_STATES

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "title": self.title,
            "zone": self.zone,
            "priority": str(self.priority),
            "state": self.state.value,
            "created_ts": self.created_ts,
            "created_by": self.created_by,
            "updated_ts": self.updated_ts,
            "location": list(self.location) if self.location else None,
            "source": self.source,
            "crew": self.crew,
            "skill": self.skill,
            "links": list(self.links),
        }


P = ParamSpec("P")
R = TypeVar("R")


def _one_at_a_time(
    method: Callable[Concatenate[IncidentBook, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[IncidentBook, P], Coroutine[Any, Any, R]]:
    """Run a change under the book's lock: two operators moving one incident at once
    must not both pass the check of its state before either is journaled."""

    @functools.wraps(method)
    async def locked(self: IncidentBook, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._lock:
            return await method(self, *args, **kwargs)

    return locked


Observer = Callable[[Incident, State | None, User], Awaitable[None]]
"""Told of every change once it is journaled: the incident, the state before (None: created)."""


class IncidentBook:
    """Every incident: held in memory, written to the store first.

    Call :meth:`open` once the store is open. ``observers`` are awaited
    after each change (citizen reports follow their incident this way).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.incidents: dict[int, Incident] = {}
        self.observers: list[Observer] = []
        self._next_id = 1
        self._lock = anyio.Lock()

    async def open(self) -> None:
        """Create the tables if needed and load every incident."""
        rows = await self.store.call(_load)
        for incident in rows:
            self.incidents[incident.id] = incident
        self._next_id = max(self.incidents, default=0) + 1

    def get(self, incident_id: int) -> Incident:
        """An incident by id; IncidentError if unknown."""
        try:
            return self.incidents[incident_id]
        except KeyError:
            raise IncidentError(f"unknown incident {incident_id}") from None

    def open_incidents(self) -> list[Incident]:
        """Incidents still needing someone, most urgent and oldest first."""
        found = [i for i in self.incidents.values() if i.open]
        return sorted(found, key=lambda i: (-i.priority, i.created_ts))

    def for_alarm(self, alarm_id: str) -> Incident | None:
        """The open incident an alarm is linked to, if any."""
        for incident in self.incidents.values():
            if incident.state != State.CLOSED and any(
                link["kind"] == "alarm" and link["ref"] == alarm_id for link in incident.links
            ):
                return incident
        return None

    @staticmethod
    def authorise(user: User, zone: str, action: str, role: Role = Role.OPERATOR) -> None:
        """Raise IncidentPermissionError unless ``user`` has ``role`` in ``zone``."""
        if not user.has_role(role):
            raise IncidentPermissionError(f"{user.name} may not {action}: it needs the {role} role")
        if not user.in_zone(zone):
            raise IncidentPermissionError(f"{user.name} may not {action} in zone {zone!r}")

    @_one_at_a_time
    async def create(
        self,
        user: User,
        *,
        title: str,
        zone: str,
        priority: Priority | str = Priority.MEDIUM,
        location: tuple[float, float] | None = None,
        source: str = "manual",
        skill: str | None = None,
        comment: str = "",
        links: Iterable[tuple[str, str]] = (),
    ) -> Incident:
        """Open a new incident (operator in ``zone``); journaled before it exists."""
        self.authorise(user, zone, "open an incident")
        links = list(links)
        for kind, ref in links:
            found = self.for_alarm(ref) if kind == "alarm" else None
            if found is not None:
                raise IncidentConflictError(f"alarm {ref} is already in incident {found.id}")
        if not title.strip():
            raise IncidentError("title: an incident needs a title")
        try:
            level = Priority.parse(priority)
        except ValueError as error:
            raise IncidentError(f"priority: {error}") from None
        ts = now_ms()
        incident = Incident(
            self._next_id,
            title.strip(),
            zone,
            level,
            State.NEW,
            ts,
            user.name,
            ts,
            location,
            source,
            skill=skill,
        )
        self._next_id += 1
        incident.links = [_link(kind, ref, ts, user, comment) for kind, ref in links]
        await self._journal(incident, user, f"incident {incident.id} opened: {title}", comment)
        await self.store.call(lambda db: _save(db, incident, incident.links))
        self.incidents[incident.id] = incident
        await self._tell(incident, None, user)
        return incident

    async def from_alarm(
        self,
        alarm: Alarm,
        user: User,
        comment: str = "",
        *,
        location: tuple[float, float] | None = None,
    ) -> Incident:
        """The incident of an alarm in one call: its message, zone, priority and device."""
        found = self.for_alarm(alarm.id)
        if found is not None:
            raise IncidentConflictError(f"alarm {alarm.id} is already in incident {found.id}")
        message = alarm.message.get("fr") or alarm.message.get("en") or alarm.id
        return await self.create(
            user,
            title=message,
            zone=alarm.zone,
            priority=alarm.priority,
            location=location,
            source="alarm",
            skill=alarm.family or None,
            comment=comment,
            links=[("alarm", alarm.id)],
        )

    @_one_at_a_time
    async def link(
        self, incident_id: int, kind: str, ref: str, user: User, comment: str = ""
    ) -> Incident:
        """Add an alarm, report or action (``kind``) to an incident; journaled."""
        incident = self.get(incident_id)
        self.authorise(user, incident.zone, f"add to incident {incident_id}")
        if kind not in ("alarm", "report", "action", "note"):
            raise IncidentError(f"kind: expected alarm, report, action or note, got {kind!r}")
        if incident.state == State.CLOSED:
            raise IncidentConflictError(f"incident {incident_id} is closed")
        entry = _link(kind, ref, now_ms(), user, comment)
        await self._journal(incident, user, f"incident {incident_id}: {kind} {ref}", comment)
        await self.store.call(lambda db: _save(db, incident, [entry]))
        incident.links.append(entry)
        return incident

    @_one_at_a_time
    async def move(
        self,
        incident_id: int,
        state: State | str,
        user: User,
        comment: str = "",
        *,
        crew: str | None = None,
    ) -> Incident:
        """Change an incident's state (operator in its zone), journaled with the comment."""
        incident = self.get(incident_id)
        try:
            target = State(state)
        except ValueError:
            choices = ", ".join(s.value for s in State)
            raise IncidentError(f"state: expected one of {choices}, got {state!r}") from None
        self.authorise(user, incident.zone, f"move incident {incident_id}")
        if target not in MOVES[incident.state]:
            allowed = ", ".join(sorted(s.value for s in MOVES[incident.state])) or "none"
            raise IncidentConflictError(
                f"incident {incident_id} is {incident.state.value}: it may go to {allowed},"
                f" not {target.value}"
            )
        before = incident.state
        ts = now_ms()
        await self._journal(
            incident,
            user,
            f"incident {incident_id}: {before.value} -> {target.value}",
            comment,
            {"from": before.value, "to": target.value, "crew": crew or incident.crew},
        )
        entry = _link("state", target.value, ts, user, comment)
        incident.state = target
        incident.updated_ts = ts
        if crew is not None:
            incident.crew = crew
        if target == State.NEW:
            incident.crew = None
        await self.store.call(lambda db: _save(db, incident, [entry]))
        incident.links.append(entry)
        await self._tell(incident, before, user)
        return incident

    async def _journal(
        self,
        incident: Incident,
        user: User,
        message: str,
        comment: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        await self.store.journal(
            JournalEntry(
                kind="incident",
                message=message,
                user=user.name,
                data={
                    "incident": incident.id,
                    "zone": incident.zone,
                    "comment": comment,
                    **(extra or {}),
                },
            )
        )

    async def _tell(self, incident: Incident, before: State | None, user: User) -> None:
        for observer in self.observers:
            try:
                await observer(incident, before, user)
            except Exception:
                # The change is journaled and stored: an observer's bug must not undo it.
                log.exception("incident %d: an observer failed", incident.id)


def _link(kind: str, ref: str, ts: int, user: User, comment: str) -> dict[str, Any]:
    return {"kind": kind, "ref": ref, "ts": ts, "user": user.name, "comment": comment}


def _tables(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops_incidents (id INTEGER PRIMARY KEY, title TEXT,"
        " zone TEXT, priority INTEGER, state TEXT, created_ts INTEGER, created_by TEXT,"
        " updated_ts INTEGER, lat REAL, lon REAL, source TEXT, crew TEXT, skill TEXT)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops_incident_links (incident INTEGER, kind TEXT, ref TEXT,"
        " ts INTEGER, user TEXT, comment TEXT)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS ops_incident_links_i ON ops_incident_links (incident)")


def _save(db: sqlite_utils.Database, incident: Incident, links: list[dict[str, Any]]) -> None:
    lat, lon = incident.location or (None, None)
    with db.conn:
        db.execute(
            "INSERT OR REPLACE INTO ops_incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                incident.id,
                incident.title,
                incident.zone,
                int(incident.priority),
                incident.state.value,
                incident.created_ts,
                incident.created_by,
                incident.updated_ts,
                lat,
                lon,
                incident.source,
                incident.crew,
                incident.skill,
            ],
        )
        db.conn.executemany(
            "INSERT INTO ops_incident_links VALUES (?,?,?,?,?,?)",
            [(incident.id, x["kind"], x["ref"], x["ts"], x["user"], x["comment"]) for x in links],
        )


def _load(db: sqlite_utils.Database) -> list[Incident]:
    _tables(db)
    links: dict[int, list[dict[str, Any]]] = {}
    for row in db.execute(
        "SELECT incident, kind, ref, ts, user, comment FROM ops_incident_links ORDER BY rowid"
    ):
        links.setdefault(row[0], []).append(
            {"kind": row[1], "ref": row[2], "ts": row[3], "user": row[4], "comment": row[5]}
        )
    found = []
    for row in db.execute("SELECT * FROM ops_incidents ORDER BY id"):
        found.append(
            Incident(
                row[0],
                row[1],
                row[2],
                Priority(row[3]),
                State(row[4]),
                row[5],
                row[6],
                row[7],
                (row[8], row[9]) if row[8] is not None else None,
                row[10],
                row[11],
                row[12],
                links.get(row[0], []),
            )
        )
    return found
