"""Dusk-to-dawn lighting schedules: the night's events as a pure function, and the service.

A cabinet's ``schedule`` table (in its device config) switches its circuits
on at civil dusk and off at civil dawn at the deployment's coordinates
(``[site] latitude, longitude, timezone``), and dims them through the night
at local clock times. Two layers:

- :func:`night_events`, :func:`state_at` and :func:`next_change` compute,
  for a place and a moment, what the circuits should be doing and when that
  changes next. They are pure (astral and arithmetic), so tests check them
  against astral and against sanity bounds on fixed dates.
- :class:`ScheduleService` is the thin loop the plugin's ``cityvisor_startup``
  returns: whenever a cabinet's wanted state changes, it sends the orders
  through the command bus as the SYSTEM user (origin ``schedule``), so every
  scheduled order is validated, interlocked, verified and journaled like an
  operator's. Its clock and sleep are injectable: tests run a whole night in
  milliseconds.

Times are computed in UTC (aware datetimes): a sleep across a daylight-saving
change is then exactly as long as it should be.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import astral
import astral.sun
import pydantic

from cityvisor.core.commands import CommandBus, CommandError, CommandRequest
from cityvisor.core.devices import DeviceType
from cityvisor.core.points import PointDB
from cityvisor.core.users import SYSTEM
from cityvisor.hal.modbus_driver import shared_profile

__all__ = [
    "DimmingStep",
    "LightingState",
    "NightSchedule",
    "Place",
    "ScheduleService",
    "ScheduledEvent",
    "config_problems",
    "next_change",
    "night_events",
    "service_for",
    "state_at",
]

log = logging.getLogger(__name__)

_STRICT = pydantic.ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
_NOON = dt.time(12)
LEVEL_TOLERANCE = 1.0
"""A circuit within this many % of a step's level is not sent the order again."""


class DimmingStep(pydantic.BaseModel):
    """One step of the night dimming profile: from ``at`` (local time), dim to ``level``."""

    model_config = _STRICT

    at: dt.time
    """Local clock time (``"23:00"``); a time before noon belongs to the next morning."""
    level: float = pydantic.Field(ge=0, le=100)
    """Dimming level from that time on, in %."""


class NightSchedule(pydantic.BaseModel):
    """A cabinet's ``schedule`` table: on at dusk, dimming steps through the night, off at dawn."""

    model_config = _STRICT

    dusk_level: float = pydantic.Field(100.0, ge=0, le=100)
    """Level the circuits switch on at, at dusk, in %."""
    steps: list[DimmingStep] = [
        DimmingStep(at=dt.time(23), level=50.0),
        DimmingStep(at=dt.time(5, 30), level=100.0),
    ]
    """Night dimming: ``[{at = "23:00", level = 50}, {at = "05:30", level = 100}]`` by default.
    A step that falls outside the night (before dusk or after dawn) is skipped that night."""
    dusk_offset: float = pydantic.Field(0.0, ge=-180, le=180)
    """Minutes after civil dusk to switch on (negative: before it)."""
    dawn_offset: float = pydantic.Field(0.0, ge=-180, le=180)
    """Minutes after civil dawn to switch off (negative: before it)."""
    circuits: list[str] | None = None
    """The circuits the schedule drives (``["c1", "c2"]``); all of them by default."""


class LightingSettings(pydantic.BaseModel):
    """``[plugins.lighting]``: what the lighting family shares between cabinets."""

    model_config = _STRICT

    schedules: dict[str, NightSchedule] = {}
    """Named schedules (``[plugins.lighting.schedules.residential]``) that cabinets
    follow with ``schedule = "residential"``: one table to change for a whole district."""


def resolve_schedule(value: NightSchedule | str | None, settings: Any) -> NightSchedule | None:
    """A cabinet's schedule: its own table, or the shared one it names (None if unknown)."""
    if isinstance(value, str):
        schedules = settings.schedules if settings is not None else {}
        return schedules.get(value)
    return value


@dataclass(frozen=True)
class Place:
    """Where the city is: coordinates in degrees and its IANA time zone."""

    latitude: float
    longitude: float
    timezone: str = "Europe/Paris"


@dataclass(frozen=True)
class LightingState:
    """What the circuits should be doing: off, or on at a level (%)."""

    on: bool
    level: float | None = None


OFF = LightingState(False)


@dataclass(frozen=True)
class ScheduledEvent:
    """A moment (aware, UTC) when the wanted state changes, and why (``dusk``, ``23:00``...)."""

    at: dt.datetime
    state: LightingState
    cause: str


def night_events(schedule: NightSchedule, place: Place, evening: dt.date) -> list[ScheduledEvent]:
    """The events of the night that begins on the evening of ``evening``, in time order.

    On at civil dusk of ``evening`` (plus ``dusk_offset``) at ``dusk_level``;
    each dimming step at its local time inside the night; off at civil dawn
    of the next day (plus ``dawn_offset``). Where the sun never goes 6°
    below the horizon (summer nights beyond about 60° of latitude) the night
    has no dusk, hence no events: the lights stay off.
    """
    zone = ZoneInfo(place.timezone)
    observer = astral.Observer(place.latitude, place.longitude)
    morning = evening + dt.timedelta(days=1)
    try:
        on_at = astral.sun.dusk(observer, evening, tzinfo=zone)
        off_at = astral.sun.dawn(observer, morning, tzinfo=zone)
    except ValueError:  # astral: "Sun never reaches 6 degrees below the horizon"
        return []
    on_at = (on_at + dt.timedelta(minutes=schedule.dusk_offset)).astimezone(dt.UTC)
    off_at = (off_at + dt.timedelta(minutes=schedule.dawn_offset)).astimezone(dt.UTC)
    if off_at <= on_at:
        return []
    events = [ScheduledEvent(on_at, LightingState(True, schedule.dusk_level), "dusk")]
    for step in schedule.steps:
        day = evening if step.at >= _NOON else morning
        # Local wall time -> UTC through the zone: 23:00 is 22:00 UTC in winter, 21:00 in summer.
        at = dt.datetime.combine(day, step.at, tzinfo=zone).astimezone(dt.UTC)
        if on_at < at < off_at:
            events.append(ScheduledEvent(at, LightingState(True, step.level), f"{step.at:%H:%M}"))
    events.sort(key=lambda event: event.at)
    events.append(ScheduledEvent(off_at, OFF, "dawn"))
    return events


def _events_around(
    schedule: NightSchedule, place: Place, when: dt.datetime
) -> list[ScheduledEvent]:
    # The nights that began yesterday, today and tomorrow (local dates) hold both
    # the last event before any moment and the next one after it.
    today = when.astimezone(ZoneInfo(place.timezone)).date()
    events: list[ScheduledEvent] = []
    for days in (-1, 0, 1):
        events += night_events(schedule, place, today + dt.timedelta(days=days))
    return events


def state_at(schedule: NightSchedule, place: Place, when: dt.datetime) -> LightingState:
    """The state the schedule wants at ``when`` (an aware datetime): its last event's state."""
    past = [e for e in _events_around(schedule, place, when) if e.at <= when]
    return past[-1].state if past else OFF


def next_change(schedule: NightSchedule, place: Place, when: dt.datetime) -> ScheduledEvent | None:
    """The first event strictly after ``when``, or None if none comes within a day or so."""
    return next((e for e in _events_around(schedule, place, when) if e.at > when), None)


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC (the service's default clock)."""
    return dt.datetime.now(dt.UTC)


class ScheduleService:
    """Sends each scheduled cabinet the state its schedule wants, whenever that changes.

    At start it applies the current state (lights come on after a restart in
    the night), then sleeps until the next event, at most ``recheck``
    seconds at a time (a clock set forward, a cabinet back online are seen
    within that). A cabinet that is offline is skipped without a journaled
    refusal and served when it is back. Orders that would change nothing (a
    circuit already off) are not sent. Failed orders are journaled by the
    bus and not retried: the operator sees them.
    """

    def __init__(
        self,
        commands: CommandBus,
        points: PointDB,
        cabinets: Sequence[tuple[DeviceType, NightSchedule]],
        place: Place,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
        recheck: float = 60.0,
        concurrency: int = 16,
    ) -> None:
        self.commands = commands
        self.points = points
        self.cabinets = list(cabinets)
        self.place = place
        self.clock = clock
        self.sleep = sleep
        self.recheck = recheck
        self.applied: dict[str, LightingState] = {}
        """The state last sent to each cabinet."""
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def run(self) -> None:
        """Apply the schedules until cancelled."""
        while True:
            now = self.clock()
            async with anyio.create_task_group() as tg:
                for cabinet, schedule in self.cabinets:
                    wanted = state_at(schedule, self.place, now)
                    before = self.applied.get(cabinet.id)
                    if wanted != before and self._online(cabinet):
                        self.applied[cabinet.id] = wanted
                        tg.start_soon(self._apply, cabinet, schedule, wanted, before, now)
            changes = [
                event.at
                for _, schedule in self.cabinets
                if (event := next_change(schedule, self.place, now)) is not None
            ]
            delay = self.recheck
            if changes:
                delay = min(delay, (min(changes) - self.clock()).total_seconds())
            await self.sleep(max(0.0, delay))

    def _online(self, cabinet: DeviceType) -> bool:
        value = self.points.value(cabinet.point_id("online"))
        return value.value is True and value.quality.is_good

    async def _apply(
        self,
        cabinet: DeviceType,
        schedule: NightSchedule,
        wanted: LightingState,
        before: LightingState | None,
        now: dt.datetime,
    ) -> None:
        event = [e for e in _events_around(schedule, self.place, now) if e.at <= now]
        cause = "schedule: " + (event[-1].cause if event else "day")
        orders: list[tuple[str, dict[str, Any], str, Any]] = []
        if not wanted.on:
            orders.append(("switch_off", {}, "on", False))
        else:
            if before is None or not before.on:
                orders.append(("switch_on", {}, "on", True))
            # Judged on the setpoint: the level itself may still be ramping towards it.
            orders.append(("set_level", {"level": wanted.level}, "setpoint", wanted.level))
        circuits = schedule.circuits or cabinet.members("circuit")
        async with self._limiter:
            for command, arguments, point, target in orders:
                for circuit in circuits:
                    if self._already(cabinet.point_id(point, circuit), target):
                        continue
                    request = CommandRequest(
                        cabinet.id, command, arguments, circuit, SYSTEM, cause, "schedule"
                    )
                    try:
                        result = await self.commands.execute(request)
                    except CommandError as error:  # journaled by the bus already
                        log.warning("%s %s/%s refused: %s", command, cabinet.id, circuit, error)
                        continue
                    if not result.ok:
                        log.warning("%s %s/%s: %s", command, cabinet.id, circuit, result.detail)

    def _already(self, point_id: str, target: Any) -> bool:
        current = self.points.value(point_id)
        if not current.quality.is_good or current.value is None:
            return False
        if isinstance(target, float):
            return bool(abs(current.value - target) <= LEVEL_TOLERANCE)
        return bool(current.value == target)


def service_for(hub: Any, cabinets: Sequence[DeviceType]) -> Callable[[], Awaitable[None]] | None:
    """The service running the schedules of ``cabinets``, or None if none has a schedule.

    Without the site's coordinates there is no dusk to follow: the schedules
    are not run (``cityvisor check-config`` reports it) and the log says so.
    """
    settings = hub.config.settings("lighting")
    scheduled = [
        (c, s)
        for c in cabinets
        if (s := resolve_schedule(getattr(c.config, "schedule", None), settings)) is not None
    ]
    if not scheduled:
        return None
    site = hub.config.site
    if site.latitude is None or site.longitude is None:
        log.error("lighting schedules are not run: [site] has no latitude and longitude")
        return None
    place = Place(site.latitude, site.longitude, site.timezone)
    return ScheduleService(hub.commands, hub.points, scheduled, place).run


def config_problems(config: Any, type_name: str) -> list[str]:
    """Schedules need the site's coordinates; a named schedule must exist and fit the cabinet."""
    settings = config.settings("lighting")
    shared = settings.schedules if settings is not None else {}
    problems = []
    for index, entry in enumerate(config.devices):
        if entry.type != type_name or entry.config.get("schedule") is None:
            continue
        where = f"devices[{index}].config.schedule"
        if config.site.latitude is None:
            problems.append(f"{where}: a dusk-to-dawn schedule needs [site] latitude and longitude")
        name = entry.config["schedule"]
        if not isinstance(name, str):
            continue
        schedule = shared.get(name)
        if schedule is None:
            known = ", ".join(sorted(shared)) or "none"
            problems.append(
                f"{where}: no schedule {name!r} in [plugins.lighting.schedules] (known: {known})"
            )
            continue
        try:
            profile = shared_profile(entry.config.get("profile", "lighting_cabinet"))
            names = set(profile.member_names("circuit", entry.config.get("circuits", 8)))
        except Exception:  # a bad profile or circuit count is reported by the device's own check
            continue
        unknown = sorted(set(schedule.circuits or ()) - names)
        if unknown:
            problems.append(
                f"{where}: schedule {name!r} drives circuit(s) {', '.join(unknown)} "
                "that this cabinet does not have"
            )
    return problems
