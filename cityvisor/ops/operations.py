"""The operations layer of one hub: procedures, incidents, crews, reports and the crisis cell together.

:class:`Operations` is built from the hub and ``[plugins.ops]``; its
:meth:`run` (the plugin's service, under the hub's task group) opens the
tables, loads the procedure files in a thread and hands them to the alarm
manager, serves the OsmAnd tracker port, and purges citizens' personal data
once an hour.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User

from .crews import Crew, CrewState, Fleet, Position, Proposal, TrackerRefusedError, parse_position
from .crisis import CrisisCell
from .incidents import Incident, IncidentBook, IncidentConflictError, IncidentError, State
from .procedures import ProcedureFile, load_directory
from .reports import ReportDesk
from .settings import OpsSettings

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub

__all__ = ["Operations", "TrackerRefusedError", "procedures_directory"]

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0
"""Seconds between two purges of expired personal data."""


def procedures_directory(config: Any, settings: OpsSettings) -> Path | None:
    """The procedures directory, relative to the deployment file."""
    if settings.procedures is None:
        return None
    path = Path(settings.procedures)
    if not path.is_absolute():
        path = Path(str(config.source)).parent / path
    return path


class Operations:
    """Procedures, incidents, fleet, citizen reports and crisis cell of one hub."""

    def __init__(self, hub: Hub, settings: OpsSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.procedures: dict[str, ProcedureFile] = {}
        self.book = IncidentBook(hub.store)
        self.fleet = Fleet.of(
            (
                Crew(c.id, c.name, frozenset(c.skills), c.tracker, frozenset(c.zones))
                for c in settings.crews
            ),
            settings.road_speed_kmh,
        )
        self._tokens = {c.tracker: c.token for c in settings.crews}
        located = [
            (device.info.location, device.zone)
            for device in hub.devices.values()
            if device.info.location is not None
        ]
        zones = [z.id for z in hub.config.zones]
        default_zone = settings.open311.default_zone or (zones[0] if zones else "city")
        self.desk = ReportDesk(hub.store, self.book, settings.open311, located, default_zone)
        self.cell = CrisisCell(hub.store, Role.parse(settings.crisis_role))
        self.book.observers.append(self._crew_follows)
        self.ready = anyio.Event()
        """Set once the tables are open, the procedures loaded and the trackers' port bound."""
        self.traccar: Any = None
        """The Traccar poller, when ``[plugins.ops.traccar]`` is set."""
        self.tracker_port: int | None = None
        """The port the OsmAnd listener is bound to, once it runs."""

    # -- running ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the tables and load the procedures (in a thread: a city has hundreds)."""
        await self.book.open()
        await self.desk.open()
        await self.cell.open_store()
        directory = procedures_directory(self.hub.config, self.settings)
        if directory is not None:
            self.procedures = await anyio.to_thread.run_sync(load_directory, directory)
            for procedure in self.procedures.values():
                self.hub.alarms.add_procedure(procedure.to_procedure())
            log.info("%d procedures loaded from %s", len(self.procedures), directory)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start, then serve the tracker port and purge personal data, until cancelled."""
        await self.start()
        async with anyio.create_task_group() as tg:
            trackers = self.settings.trackers
            if trackers.port is not None:
                from .http import serve_trackers

                await tg.start(serve_trackers, self, trackers.host, trackers.port)
            tg.start_soon(self._purge_forever)
            if self.settings.traccar is not None:
                from .traccar import TraccarPoller

                self.traccar = TraccarPoller(self.fleet, self.settings.traccar)
                tg.start_soon(self.traccar.run)
            self.ready.set()
            task_status.started()

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.desk.purge()
            except Exception:
                log.exception("purging expired personal data failed")
            await anyio.sleep(PURGE_EVERY)

    # -- trackers --------------------------------------------------------------

    def ingest(self, params: Mapping[str, str], token: str) -> tuple[Crew, Position]:
        """Take one OsmAnd position; PositionError names a bad field, TrackerRefusedError a bad token."""
        tracker, position = parse_position(params)
        expected = self._tokens.get(tracker)
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise TrackerRefusedError(f"unknown tracker or wrong token for {tracker[:64]!r}")
        return self.fleet.update(tracker, position), position

    # -- dispatch --------------------------------------------------------------

    def location_of(self, incident: Incident) -> tuple[float, float] | None:
        """Where the incident is: its own location, else its first alarm's device's."""
        if incident.location is not None:
            return incident.location
        for link in incident.links:
            if link["kind"] != "alarm":
                continue
            try:
                alarm = self.hub.alarms.get(link["ref"])
            except KeyError:
                continue
            device = self.hub.devices.get(alarm.device_id or "")
            if device is not None and device.info.location is not None:
                return device.info.location
        return None

    def propose(self, incident: Incident, skill: str | None = None) -> list[Proposal]:
        """The available crews with the skill, nearest first (great-circle distance)."""
        location = self.location_of(incident)
        if location is None:
            raise IncidentError(f"incident {incident.id} has no location to dispatch to")
        return self.fleet.propose(location, skill or incident.skill, incident.zone)

    async def dispatch(
        self, incident_id: int, crew_id: str, user: User, comment: str = ""
    ) -> Incident:
        """Send a crew the operator chose: the incident is assigned, the crew dispatched (journaled)."""
        incident = self.book.get(incident_id)
        crew = self.fleet.crews.get(crew_id)
        if crew is None:
            raise IncidentError(f"crew: unknown crew {crew_id!r}")
        if crew.state != CrewState.AVAILABLE:
            raise IncidentConflictError(f"crew: {crew_id} is {crew.state.value}, not available")
        if not crew.works_in(incident.zone):
            raise IncidentError(f"crew: {crew_id} does not work in zone {incident.zone!r}")
        self.book.authorise(user, incident.zone, f"dispatch a crew to incident {incident_id}")
        crew.state = CrewState.DISPATCHED
        crew.incident = incident.id
        crew.eta_ms = self.fleet.eta_ms(crew, self.location_of(incident))
        try:
            return await self.book.move(incident_id, State.ASSIGNED, user, comment, crew=crew.id)
        except Exception:
            crew.state, crew.incident, crew.eta_ms = CrewState.AVAILABLE, None, None
            raise

    async def _crew_follows(self, incident: Incident, before: State | None, user: User) -> None:
        crew = next((c for c in self.fleet.crews.values() if c.incident == incident.id), None)
        if crew is None:
            return
        if incident.state == State.ON_SITE:
            crew.state, crew.eta_ms = CrewState.ON_SITE, None
        elif incident.state in (State.RESOLVED, State.CLOSED, State.NEW):
            crew.state, crew.incident, crew.eta_ms = CrewState.AVAILABLE, None, None
            await self.hub.store.journal(
                JournalEntry(
                    kind="crew",
                    message=f"crew {crew.id} available again (incident {incident.id} "
                    f"{incident.state.value})",
                    user=user.name,
                    data={"crew": crew.id, "incident": incident.id, "zone": incident.zone},
                )
            )
