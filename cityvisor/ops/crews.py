"""Field crews, their vehicles' positions, and dispatch to the nearest one with the skill.

A crew has skills (``lighting``, ``roads``, ``police``, ``network``) and a
vehicle, whose tracker sends positions in the OsmAnd HTTP protocol that
Traccar and phone apps speak (``GET /?id=..&lat=..&lon=..&timestamp=..&speed=..``),
to a port of its own (see :mod:`cityvisor.ops.trackers`).

Dispatch proposes the available crews with the skill, nearest first, by
**great-circle distance** (haversine) from the vehicle's last position to
the incident, and an ETA at the configured road speed: a first step, not
the distance by road. The operator confirms one; the crew's state follows
its incident (dispatched, on site, available again once resolved).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cityvisor.core.points import now_ms

__all__ = [
    "EARTH_RADIUS_M",
    "Crew",
    "CrewState",
    "Fleet",
    "Position",
    "PositionError",
    "Proposal",
    "TrackerRefusedError",
    "great_circle_m",
    "parse_position",
]

EARTH_RADIUS_M = 6_371_008.8
"""The mean Earth radius (IUGG), in metres."""
KNOT_M_S = 1852 / 3600
"""OsmAnd's ``speed`` is in knots, as Traccar's OsmAnd decoder reads it."""


def great_circle_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The haversine distance between two (lat, lon) points in degrees, in metres."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class CrewState(enum.StrEnum):
    """What a crew is doing."""

    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    ON_SITE = "on_site"
    OFF_DUTY = "off_duty"


class TrackerRefusedError(Exception):
    """A position from an unknown tracker or with a wrong token (answered 403)."""


class PositionError(ValueError):
    """A position that cannot be used; ``field`` names the parameter at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Position:
    """Where a vehicle was, when (epoch ms), and how fast (m/s, None if not sent)."""

    lat: float
    lon: float
    ts: int
    speed: float | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"lat": self.lat, "lon": self.lon, "ts": self.ts, "speed": self.speed}


def parse_position(params: Mapping[str, str]) -> tuple[str, Position]:
    """The tracker id and position of an OsmAnd request's parameters.

    ``lat``/``lon`` in degrees, ``timestamp`` in epoch seconds, epoch
    milliseconds or ISO 8601, ``speed`` in knots (optional).

    :raises PositionError: naming the first field that is missing or wrong.
    """
    tracker = params.get("id", "").strip()
    if not tracker:
        raise PositionError("id", "missing (the tracker's identifier)")
    lat = _number(params, "lat", -90, 90)
    lon = _number(params, "lon", -180, 180)
    ts = _timestamp(params.get("timestamp"))
    speed = None
    if params.get("speed") not in (None, ""):
        speed = _number(params, "speed", 0, 1000) * KNOT_M_S
    return tracker, Position(lat, lon, ts, speed)


def _number(params: Mapping[str, str], name: str, low: float, high: float) -> float:
    raw = params.get(name)
    if raw is None or raw == "":
        raise PositionError(name, "missing")
    try:
        value = float(raw)
    except ValueError:
        raise PositionError(name, f"expected a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise PositionError(name, f"expected a number from {low:g} to {high:g}, got {raw[:40]!r}")
    return value


def _timestamp(raw: str | None) -> int:
    if raw is None or raw == "":
        return now_ms()
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise PositionError(
                "timestamp", f"expected epoch seconds or ISO 8601, got {raw[:40]!r}"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp() * 1000)
    if not math.isfinite(value) or value < 0:
        raise PositionError("timestamp", f"expected epoch seconds, got {raw[:40]!r}")
    # Seconds until year 5138; larger values are milliseconds.
    ms = int(value if value > 1e11 else value * 1000)
    if ms > now_ms() + 24 * 3600_000:
        raise PositionError("timestamp", f"more than a day in the future: {raw[:40]!r}")
    return ms


@dataclass
class Crew:
    """A field crew: its skills, its vehicle's tracker, what it does and where it is."""

    id: str
    name: str
    skills: frozenset[str]
    tracker: str
    zones: frozenset[str] = frozenset({"*"})
    """Zones the crew works in (``*``: all)."""
    state: CrewState = CrewState.AVAILABLE
    incident: int | None = None
    position: Position | None = None
    eta_ms: int | None = None
    """When the crew is expected on site (epoch ms), while dispatched."""

    def works_in(self, zone: str) -> bool:
        """True if the crew may be sent to ``zone``."""
        return "*" in self.zones or zone in self.zones

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the tracker's token never appears here)."""
        return {
            "id": self.id,
            "name": self.name,
            "skills": sorted(self.skills),
            "tracker": self.tracker,
            "zones": sorted(self.zones),
            "state": self.state.value,
            "incident": self.incident,
            "position": self.position.as_json() if self.position else None,
            "eta_ms": self.eta_ms,
        }


@dataclass(frozen=True)
class Proposal:
    """A crew that could go: its great-circle distance and ETA to the incident."""

    crew: Crew
    distance_m: float
    eta_s: float

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "crew": self.crew.id,
            "name": self.crew.name,
            "distance_m": round(self.distance_m, 1),
            "eta_s": round(self.eta_s, 1),
            "distance": "great-circle",
        }


@dataclass
class Fleet:
    """Every crew, indexed by tracker, with the last position of each vehicle.

    ``road_speed_m_s`` turns a distance into an ETA. Positions older than
    the last one received are kept out (trackers resend buffered points).
    """

    crews: dict[str, Crew] = field(default_factory=dict)
    road_speed_m_s: float = 30 / 3.6
    positions_received: int = 0
    positions_out_of_order: int = 0
    _by_tracker: dict[str, Crew] = field(default_factory=dict)

    @classmethod
    def of(cls, crews: Iterable[Crew], road_speed_kmh: float = 30.0) -> Fleet:
        """A fleet of ``crews``."""
        fleet = cls(road_speed_m_s=road_speed_kmh / 3.6)
        for crew in crews:
            fleet.add(crew)
        return fleet

    def add(self, crew: Crew) -> None:
        """Add a crew (its id and its tracker must be new)."""
        if crew.id in self.crews or crew.tracker in self._by_tracker:
            raise ValueError(f"crew {crew.id}: duplicate crew id or tracker {crew.tracker!r}")
        self.crews[crew.id] = crew
        self._by_tracker[crew.tracker] = crew

    def by_tracker(self, tracker: str) -> Crew | None:
        """The crew whose vehicle carries ``tracker``."""
        return self._by_tracker.get(tracker)

    def update(self, tracker: str, position: Position) -> Crew:
        """Record a vehicle's position (KeyError for an unknown tracker)."""
        crew = self._by_tracker[tracker]
        self.positions_received += 1
        if crew.position is not None and position.ts < crew.position.ts:
            self.positions_out_of_order += 1
            return crew
        crew.position = position
        return crew

    def propose(
        self, location: tuple[float, float], skill: str | None, zone: str, limit: int = 5
    ) -> list[Proposal]:
        """Available crews with ``skill`` working in ``zone``, nearest first (great-circle)."""
        found = []
        for crew in self.crews.values():
            if crew.state != CrewState.AVAILABLE or crew.position is None:
                continue
            if skill and skill not in crew.skills:
                continue
            if not crew.works_in(zone):
                continue
            distance = great_circle_m((crew.position.lat, crew.position.lon), location)
            found.append(Proposal(crew, distance, distance / self.road_speed_m_s))
        found.sort(key=lambda p: p.distance_m)
        return found[:limit]

    def eta_ms(self, crew: Crew, location: tuple[float, float] | None) -> int | None:
        """When ``crew`` should reach ``location`` from where it is now."""
        if crew.position is None or location is None:
            return None
        distance = great_circle_m((crew.position.lat, crew.position.lon), location)
        return now_ms() + int(distance / self.road_speed_m_s * 1000)
