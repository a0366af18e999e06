"""The demo city's field side: three crews driving, citizens reporting now and then.

:class:`DrivingCrews` moves each crew's vehicle towards a waypoint (the
incident it is sent to, else a random street of its commune) and posts its
position every few seconds to the trackers' port in the OsmAnd HTTP protocol,
as Traccar Client does. :class:`Citizens` posts an Open311 GeoReport v2
request to the HMI's server every few minutes. Both talk HTTP to the hub,
like the real trackers and apps they stand for.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from .zones import ZONES

__all__ = ["CREWS", "SERVICES", "Citizens", "DrivingCrews", "ops_settings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCrew:
    """A demo crew, its skills, its tracker and the commune it starts in."""

    id: str
    name: str
    skills: tuple[str, ...]
    tracker: str
    zone: str


CREWS = (
    DemoCrew(
        "eclairage-1", "Équipe éclairage 1", ("lighting", "access"), "van-eclairage-1", "dijon"
    ),
    DemoCrew(
        "voirie-1", "Équipe voirie 1", ("bollards", "roads", "lighting"), "van-voirie-1", "chenove"
    ),
    DemoCrew(
        "reseau-1", "Équipe réseau 1", ("switches", "cameras", "network"), "van-reseau-1", "talant"
    ),
)
"""The three crews the demo city runs."""

SERVICES = (
    {"code": "lampadaire", "name": "Lampadaire éteint", "group": "Éclairage", "skill": "lighting"},
    {"code": "voirie", "name": "Chaussée abîmée", "group": "Voirie", "skill": "roads"},
    {"code": "tags", "name": "Tags, graffitis", "group": "Propreté", "skill": "roads"},
)
"""The citizens' services of the demo city."""

DESCRIPTIONS = {
    "lampadaire": "Le lampadaire devant le numéro 12 ne s'allume plus.",
    "voirie": "Nid-de-poule dangereux pour les vélos.",
    "tags": "Tags sur le mur de l'école.",
}


def _token(crew: DemoCrew, seed: int) -> str:
    # Simulated trackers: the token protects nothing, it only shows how one is set.
    return f"demo-{crew.tracker}-{seed:08d}"


def ops_settings(seed: int) -> dict[str, Any]:
    """The demo's ``[plugins.ops]`` table."""
    return {
        "enabled": True,
        "road_speed_kmh": 30,
        "trackers": {"host": "127.0.0.1", "port": 0},
        "crews": [
            {
                "id": crew.id,
                "name": crew.name,
                "skills": list(crew.skills),
                "tracker": crew.tracker,
                "token": _token(crew, seed),
            }
            for crew in CREWS
        ],
        "open311": {"services": [dict(s) for s in SERVICES], "rate_per_hour": 600},
    }


class DrivingCrews:
    """Vehicles driving around the demo city, posting OsmAnd positions every ``period`` s."""

    def __init__(self, tracker_url: str, ops: Any, *, seed: int = 0, period: float = 3.0) -> None:
        self.url = tracker_url
        self.ops = ops
        self.seed = seed
        self.period = period
        self.random = random.Random(seed)
        self.positions = {c.id: self._near(c.zone) for c in CREWS}
        self.targets = {c.id: self._near(c.zone) for c in CREWS}
        self.sent = 0

    def _near(self, zone_id: str) -> tuple[float, float]:
        zone = next(z for z in ZONES if z.id == zone_id)
        return (
            zone.centre[0] + self.random.uniform(-0.01, 0.01),
            zone.centre[1] + self.random.uniform(-0.015, 0.015),
        )

    def _step(self, crew: DemoCrew, speed_m_s: float) -> tuple[float, float]:
        lat, lon = self.positions[crew.id]
        state = self.ops.fleet.crews[crew.id]
        incident = self.ops.book.incidents.get(state.incident) if state.incident else None
        target = self.ops.location_of(incident) if incident is not None else None
        if target is None:
            target = self.targets[crew.id]
        d_lat = (target[0] - lat) * 111_195
        d_lon = (target[1] - lon) * 111_195 * math.cos(math.radians(lat))
        distance = math.hypot(d_lat, d_lon)
        step = speed_m_s * self.period
        if distance <= step:
            if incident is None:
                self.targets[crew.id] = self._near(self.random.choice(ZONES).id)
            return target
        ratio = step / distance
        return lat + (target[0] - lat) * ratio, lon + (target[1] - lon) * ratio

    async def run(self) -> None:
        """Drive until cancelled; a refused position is logged, never fatal."""
        async with aiohttp.ClientSession() as http:
            while True:
                for crew in CREWS:
                    state = self.ops.fleet.crews[crew.id]
                    moving = state.state.value in ("available", "dispatched")
                    speed = 9.0 if moving else 0.0
                    if moving:
                        self.positions[crew.id] = self._step(crew, speed)
                    lat, lon = self.positions[crew.id]
                    params = {
                        "id": crew.tracker,
                        "lat": f"{lat:.6f}",
                        "lon": f"{lon:.6f}",
                        "timestamp": str(int(time.time())),
                        "speed": f"{speed / (1852 / 3600):.1f}",
                        "token": _token(crew, self.seed),
                    }
                    try:
                        async with http.get(self.url, params=params) as response:
                            if response.status != 200:
                                log.warning("tracker %s: %s", crew.tracker, await response.text())
                            else:
                                self.sent += 1
                    except aiohttp.ClientError as error:
                        log.warning("tracker %s: %s", crew.tracker, error)
                await anyio.sleep(self.period)


class Citizens:
    """Citizens posting an Open311 request every ``mean_gap`` seconds on average."""

    def __init__(
        self, hmi_url: str, *, seed: int = 0, mean_gap: float = 180.0, first_after: float = 8.0
    ) -> None:
        self.url = f"{hmi_url}/open311/v2/requests.json"
        self.first_after = first_after
        self.random = random.Random(seed + 311)
        self.mean_gap = mean_gap
        self.sent = 0

    async def run(self) -> None:
        """Report until cancelled."""
        async with aiohttp.ClientSession() as http:
            await anyio.sleep(self.first_after)
            while True:
                service = self.random.choice(SERVICES)
                zone = self.random.choice(ZONES)
                street = self.random.choice(zone.streets)
                form = {
                    "service_code": service["code"],
                    "lat": f"{zone.centre[0] + self.random.uniform(-0.006, 0.006):.6f}",
                    "long": f"{zone.centre[1] + self.random.uniform(-0.009, 0.009):.6f}",
                    "address_string": f"{street}, {zone.name}",
                    "description": DESCRIPTIONS[service["code"]],
                }
                try:
                    async with http.post(self.url, data=form) as response:
                        if response.status == 201:
                            self.sent += 1
                        else:
                            log.warning("citizen report refused: %s", await response.text())
                except aiohttp.ClientError as error:
                    log.warning("citizen report: %s", error)
                await anyio.sleep(self.random.expovariate(1 / self.mean_gap))
