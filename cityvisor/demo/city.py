"""The demo city: its simulated equipment, and the deployment file that drives it.

:class:`SimulatedCity` starts one simulator per piece of the city's
equipment (lighting gateways, a bollard PLC gateway, ONVIF cameras, SNMP
switches, OSDP reader lines), each on a port the system picks free, and
then writes the deployment file that points the hub at them: the same file
an integrator would write for real equipment, with real addresses instead.

Two sizes: :data:`FULL` (3 communes, 40 lighting cabinets with 296
circuits, 12 bollards, 20 cameras, 8 switches, 10 doors, 3 signalled
junctions, 4 flood gauges) and :data:`SMALL` (a few of each, for tests and
slow machines).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.hal.sim.camera import SimulatedCamera
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.hal.sim.osdp_reader import ReaderLine, SimulatedReader
from cityvisor.hal.sim.switch import SimulatedSwitch

from .procedures import procedure
from .river import PROCEDURES as RIVER_PROCEDURES
from .river import River
from .zones import ZONES, Zone

__all__ = ["FULL", "SMALL", "Badge", "CitySize", "Door", "SimulatedCity", "Zone", "outlines"]

HOST = "127.0.0.1"
TIME_ZONE = "Europe/Paris"
"""The demo city's time zone: its site's, and the one its cameras burn into their pictures."""
CAMERA_USER, CAMERA_PASSWORD = "cityvisor", "demo-camera"
"""The simulated cameras' account (they are simulators: the secret protects nothing)."""
SWITCH_COMMUNITY, SWITCH_WRITE_COMMUNITY = "public", "private"


@dataclass(frozen=True)
class Door:
    """A public building's door with a badge reader."""

    zone: str
    building: str
    name: str
    watch: bool = False
    """The building is closed: its camera watches for motion (an alarm if any)."""


DOORS = (
    Door("dijon", "hotel-de-ville", "Hôtel de ville, entrée"),
    Door("dijon", "bibliotheque", "Bibliothèque patrimoniale"),
    Door("dijon", "musee", "Musée des beaux-arts, accès personnel", watch=True),
    Door("dijon", "piscine", "Piscine du Carrousel", watch=True),
    Door("dijon", "ecole-jean-jaures", "École Jean-Jaurès"),
    Door("chenove", "mairie-chenove", "Mairie de Chenôve"),
    Door("chenove", "gymnase-chenove", "Gymnase Jean-Moulin", watch=True),
    Door("chenove", "ecole-chenove", "École du Centre"),
    Door("talant", "mairie-talant", "Mairie de Talant"),
    Door("talant", "mediatheque-talant", "Médiathèque"),
)


@dataclass(frozen=True)
class Badge:
    """A badge the demo enrols, with the places it opens."""

    number: str
    holder: str
    places: tuple[str, ...]
    lockdown_exception: bool = False


BADGES = (
    Badge("10:1001", "Claire Martin (services techniques)", ("zone:dijon",)),
    Badge("10:1002", "Karim Benali (mairie de Chenôve)", ("zone:chenove",)),
    Badge("10:1003", "Julie Petit (médiathèque)", ("building:mediatheque-talant",)),
    Badge("10:1004", "Service de sécurité", ("*",), lockdown_exception=True),
    Badge("10:1005", "Marc Roussel (piscine)", ("building:piscine",)),
    Badge(
        "10:1006", "Inès Faure (écoles)", ("building:ecole-jean-jaures", "building:ecole-chenove")
    ),
)
UNKNOWN_BADGES = ("66:6666", "13:1313", "200:4242")
"""Cards nobody enrolled: presented now and then, always denied."""


@dataclass(frozen=True)
class CitySize:
    """How much equipment the demo city has."""

    cabinets: Mapping[str, tuple[int, int]]
    """Per zone: (cabinets, circuits per cabinet)."""
    bollards: int
    two_person_bollards: int
    """Bollards of the pedestrian centre whose lowering needs a second person's approval."""
    bollard_cameras: int
    street_cameras: int
    switches: Mapping[str, int]
    """Per zone: fibre switches."""
    switch_ports: int
    doors: int
    """The first ``doors`` of the public buildings' doors."""

    @property
    def cameras(self) -> int:
        """Cameras: on the bollards, on every door, on the streets."""
        return self.bollard_cameras + self.doors + self.street_cameras

    @property
    def circuits(self) -> int:
        """Lighting circuits in the city."""
        return sum(count * circuits for count, circuits in self.cabinets.values())


FULL = CitySize(
    cabinets={"dijon": (16, 8), "chenove": (12, 8), "talant": (12, 6)},
    bollards=12,
    two_person_bollards=4,
    bollard_cameras=6,
    street_cameras=4,
    switches={"dijon": 4, "chenove": 2, "talant": 2},
    switch_ports=24,
    doors=10,
)
SMALL = CitySize(
    cabinets={"dijon": (1, 4), "chenove": (1, 4), "talant": (1, 2)},
    bollards=2,
    two_person_bollards=1,
    bollard_cameras=1,
    street_cameras=0,
    switches={"dijon": 1},
    switch_ports=8,
    doors=2,
)

CRITICAL_PORTS = (1, 2)
"""Ports of every switch that raise an alarm when their link drops: its two fibre uplinks."""


@dataclass
class Cabinet:
    """A lighting cabinet of the city: its device id and where its simulator is."""

    id: str
    simulator: LightingSimulator
    unit: int
    circuits: int


@dataclass
class Reader:
    """A door's simulated reader."""

    device_id: str
    door: Door
    reader: SimulatedReader


@dataclass
class SimulatedCity:
    """The simulators of the demo city, and the deployment file that drives them.

    Build it, ``await city.start(stack)`` (every simulator is entered into
    ``stack``, which stops them when it closes), then :meth:`config` is the
    deployment file as data.
    """

    size: CitySize = FULL
    seed: int = 0
    web_host: str = HOST
    web_port: int = 8080
    cabinets: list[Cabinet] = field(default_factory=list)
    lighting: list[LightingSimulator] = field(default_factory=list)
    bollards: BollardSimulator | None = None
    bollard_ids: dict[int, str] = field(default_factory=dict)
    cameras: dict[str, SimulatedCamera] = field(default_factory=dict)
    switches: dict[str, SimulatedSwitch] = field(default_factory=dict)
    trap_ports: dict[str, int] = field(default_factory=dict)
    lines: dict[str, ReaderLine] = field(default_factory=dict)
    readers: list[Reader] = field(default_factory=list)
    river: River = field(default_factory=River)
    """The junctions and the gauges along the river (:mod:`cityvisor.demo.river`)."""

    async def start(self, stack: AsyncExitStack) -> None:
        """Start every simulator (on free loopback ports); ``stack`` stops them."""
        size = self.size
        for zone in ZONES:
            count, circuits = size.cabinets.get(zone.id, (0, 0))
            if not count:
                continue
            # One gateway per commune; a one-second tick is plenty for lamps, and keeps
            # 300 simulated circuits cheap on a small machine.
            simulator = LightingSimulator(
                HOST, 0, cabinets=count, circuits=circuits, tick=1.0, seed=self.seed
            )
            await stack.enter_async_context(simulator)
            self.lighting.append(simulator)
            for unit in simulator.units:
                cabinet_id = f"armoire-{zone.id}-{unit:02d}"
                self.cabinets.append(Cabinet(cabinet_id, simulator, unit, circuits))
        self.bollards = BollardSimulator(
            HOST,
            0,
            bollards=size.bollards,
            travel_time=4.0,
            initial="up",
            vehicle_rate=0.2,
            dwell=(8.0, 30.0),
            tick=0.2,
            seed=self.seed,
        )
        await stack.enter_async_context(self.bollards)
        self.bollard_ids = {unit: f"borne-{unit:02d}" for unit in self.bollards.units}
        for camera_id, name in self._camera_names():
            camera = SimulatedCamera(
                name,
                username=CAMERA_USER,
                password=CAMERA_PASSWORD,
                host=HOST,
                port=0,
                time_zone=TIME_ZONE,
            )
            await stack.enter_async_context(camera)
            self.cameras[camera_id] = camera
        for zone_id, count in size.switches.items():
            for number in range(1, count + 1):
                switch_id = f"switch-{zone_id}-{number}"
                # One trap listener per switch: they all send from 127.0.0.1, so a shared
                # listener could not tell them apart.
                trap_port = free_udp_port()
                switch = SimulatedSwitch(
                    switch_id,
                    ports=size.switch_ports,
                    host=HOST,
                    port=0,
                    community=SWITCH_COMMUNITY,
                    write_community=SWITCH_WRITE_COMMUNITY,
                    trap_target=(HOST, trap_port),
                    location=f"{zone_id}, local technique {number}",
                )
                await stack.enter_async_context(switch)
                self.switches[switch_id] = switch
                self.trap_ports[switch_id] = trap_port
        for door in DOORS[: size.doors]:
            # One line per building, as buildings far apart are wired: readers sharing a
            # simulated line in one busy process answer late now and then, and a late
            # answer on a shared line takes the next reader offline (libosdp's rule).
            line = self.lines[door.building] = ReaderLine.on_new_pty()
            stack.callback(line.stop)
            reader = line.add_reader(1)
            self.readers.append(Reader(f"porte-{door.building}", door, reader))
        for line in self.lines.values():
            line.start()
        self.river.seed = self.seed
        await self.river.start(stack, small=size is SMALL)

    def _camera_names(self) -> list[tuple[str, str]]:
        size = self.size
        names = [
            (f"camera-bornes-{n}", f"Caméra des bornes {n}")
            for n in range(1, size.bollard_cameras + 1)
        ]
        names += [(f"camera-{d.building}", f"Caméra {d.name}") for d in DOORS[: size.doors]]
        streets = [s for zone in ZONES for s in zone.streets[:2]]
        names += [
            (f"camera-rue-{n}", f"Caméra {streets[n - 1]}")
            for n in range(1, size.street_cameras + 1)
        ]
        return names

    # ------------------------------------------------------------------ the config

    def config(self, store_path: str = "demo.sqlite", basemap: str | None = None) -> dict[str, Any]:
        """The deployment file of the city, as data (see :func:`cityvisor.demo.tomlfile.dumps`)."""
        spread = random.Random(self.seed)
        zones = {zone.id: zone for zone in ZONES}

        def near(zone_id: str, radius: float = 0.008) -> list[float]:
            latitude, longitude = zones[zone_id].centre
            return [
                round(latitude + spread.uniform(-radius, radius), 5),
                round(longitude + spread.uniform(-radius, radius) * 1.5, 5),
            ]

        devices: list[dict[str, Any]] = []
        for cabinet in self.cabinets:
            zone = zones[cabinet.id.split("-")[1]]
            street = zone.streets[(cabinet.unit - 1) % len(zone.streets)]
            devices.append(
                {
                    "id": cabinet.id,
                    "type": "lighting.cabinet",
                    "zone": zone.id,
                    "name": f"Armoire {street} {cabinet.unit}",
                    "tags": ["eclairage"],
                    "location": near(zone.id),
                    "config": {
                        "host": HOST,
                        "port": cabinet.simulator.port,
                        "unit": cabinet.unit,
                        "circuits": cabinet.circuits,
                        "period": 2.0,
                        "schedule": {
                            "dusk_level": 100,
                            "steps": [
                                {"at": "23:00", "level": 50},
                                {"at": "05:30", "level": 100},
                            ],
                        },
                    },
                }
            )
        bollard_cameras = [c for c in self.cameras if c.startswith("camera-bornes-")]
        entries = ZONES[0].streets
        assert self.bollards is not None
        for position, (unit, bollard_id) in enumerate(self.bollard_ids.items()):
            entry = {
                "id": bollard_id,
                "type": "bollards.bollard",
                "zone": "dijon",
                "name": f"Borne {entries[position % len(entries)]} ({unit})",
                "tags": ["secteur-pieton"],
                "location": near("dijon", 0.004),
                "config": {
                    "host": HOST,
                    "port": self.bollards.port,
                    "unit": unit,
                    "period": 1.0,
                    "travel_time": 8.0,
                },
            }
            if position >= len(self.bollard_ids) - max(1, len(self.bollard_ids) // 3):
                # The last third close the underpasses (the flood playbook raises them).
                entry["tags"] = ["secteur-pieton", "tremie"]
            if bollard_cameras:
                entry["watched_by"] = [bollard_cameras[position % len(bollard_cameras)]]
            if position < self.size.two_person_bollards:
                # The heart of the pedestrian zone: opening it takes two people.
                entry["require_approval"] = ["lower"]
            devices.append(entry)
        for camera_id, camera in self.cameras.items():
            zone_id = "dijon"
            watch = False
            tags = ["video"]
            for reader in self.readers:
                if camera_id == f"camera-{reader.door.building}":
                    zone_id, watch = reader.door.zone, reader.door.watch
                    tags = ["video", "entree"]  # a public building's entrance
            devices.append(
                {
                    "id": camera_id,
                    "type": "cameras.camera",
                    "zone": zone_id,
                    "name": camera.name,
                    "tags": tags,
                    "location": near(zone_id),
                    "config": {
                        "host": HOST,
                        "port": camera.port,
                        "username": CAMERA_USER,
                        "password": CAMERA_PASSWORD,
                        "watch": watch,
                    },
                }
            )
        for switch_id, switch in self.switches.items():
            zone_id = switch_id.split("-")[1]
            devices.append(
                {
                    "id": switch_id,
                    "type": "switches.switch",
                    "zone": zone_id,
                    "name": f"Commutateur fibre {switch_id.rsplit('-', 1)[1]}, {zones[zone_id].name}",
                    "tags": ["reseau"],
                    "location": near(zone_id),
                    "config": {
                        "host": HOST,
                        "port": switch.address[1],
                        "community": SWITCH_COMMUNITY,
                        "write_community": SWITCH_WRITE_COMMUNITY,
                        "ports": len(switch.ports),
                        "critical_ports": list(CRITICAL_PORTS),
                        "poll_period": 10.0,
                        "trap_listen": f"{HOST}:{self.trap_ports[switch_id]}",
                    },
                }
            )
        for reader in self.readers:
            door = reader.door
            camera_id = f"camera-{door.building}"
            entry = {
                "id": reader.device_id,
                "type": "access.door",
                "zone": door.zone,
                "name": door.name,
                "tags": ["batiment-public"],
                "location": near(door.zone),
                "config": {
                    "port": self.lines[door.building].path,
                    "address": reader.reader.address,
                    "building": door.building,
                    "held_open_time": 30.0,
                    "strike_pulse": 5.0,
                },
            }
            if camera_id in self.cameras:
                entry["watched_by"] = [camera_id]
            devices.append(entry)
        devices += self.river.devices()
        from .fleet import ops_settings

        centre = ZONES[0].centre
        group = min(3, max(1, self.size.bollards))
        return {
            "site": {
                "name": "Ville de démonstration",
                "timezone": TIME_ZONE,
                "language": "fr",
                "latitude": centre[0],
                "longitude": centre[1],
            },
            "store": {"path": store_path, "flush_interval": 1.0, "retention": {"default": 7}},
            "web": {"host": self.web_host, "port": self.web_port}
            | ({"basemap": basemap} if basemap else {}),
            # Only the built-in families: the demo must not depend on what else is installed.
            "plugins": {
                "entry_points": False,
                "ops": ops_settings(self.seed),
                "automation": automation_settings(),
                "hydro": {"alerts": {"population": POPULATION_ALERT}},
            },
            "zones": [
                {"id": zone.id, "name": zone.name}
                for zone in ZONES
                if any(d["zone"] == zone.id for d in devices)
            ],
            "devices": devices,
            "procedures": PROCEDURES + RIVER_PROCEDURES,
            "users": [{"name": "admin", "role": "admin"}],
            # The city's open data: lamps and bollards; a vehicle on a bollard's loop
            # only as a count per hour for all the bollards together (the small city
            # has two: its floor is lowered to two).
            "opendata": {
                "enabled": True,
                "licence": "etalab-2.0",
                "minimum_group": group,
                "families": {
                    "lighting": {"update_frequency": "continuous"},
                    "bollards": {
                        "aggregate": {
                            "vehicle_on_loop": {
                                "bucket": 3600,
                                "by": "site",
                                "minimum_group": group,
                            }
                        }
                    },
                },
            },
        }


POPULATION_ALERT = {
    "stages": ["alert", "crisis"],
    "cap": {
        "broker": "127.0.0.1",
        "port": 1883,
        "topic": "cityvisor/demo/alertes",
        "sender": "alerte@demo.cityvisor.invalid",
    },
}
"""The population alert the flood playbook broadcasts: a CAP 1.2 message on the local MQTT
broker (with no broker running, its delivery is journaled as failed and retried)."""


def automation_settings() -> dict[str, Any]:
    """The demo's ``[plugins.automation]``: the rules and playbooks shipped with this package."""
    here = Path(__file__).parent
    return {
        "enabled": True,
        "rules": str(here / "rules"),
        "playbooks": str(here / "playbooks"),
    }


def outlines(config: Mapping[str, Any], margin: float = 0.003) -> dict[str, Any]:
    """The communes of a demo config as GeoJSON, for the map's offline background.

    Schematic, not the legal boundaries: each commune is the convex hull of its
    equipment, widened by ``margin`` degrees, named as the config names it.
    """
    features = []
    for zone in config.get("zones", []):
        points = sorted(
            (float(d["location"][1]), float(d["location"][0]))  # GeoJSON: longitude first
            for d in config.get("devices", [])
            if d["zone"] == zone["id"] and d.get("location")
        )
        if not points:
            continue
        hull = _convex_hull(points)
        cx = sum(x for x, _ in hull) / len(hull)
        cy = sum(y for _, y in hull) / len(hull)
        ring = []
        for x, y in hull:
            distance = max(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5, 1e-9)
            ring.append([round(x + (x - cx) / distance * margin * 1.5, 6),
                         round(y + (y - cy) / distance * margin, 6)])  # fmt: skip
        if len(ring) < 3:  # one or two pieces of equipment: a small square around them
            ring = [[round(cx + dx, 6), round(cy + dy, 6)]
                    for dx, dy in ((-margin * 1.5, -margin), (margin * 1.5, -margin),
                                   (margin * 1.5, margin), (-margin * 1.5, margin))]  # fmt: skip
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "properties": {"zone": zone["id"], "name": zone["name"], "schematic": True},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Andrew's monotone chain over sorted points: the hull, counter-clockwise."""
    if len(points) <= 2:
        return points

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in points:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(points):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def free_udp_port(host: str = HOST) -> int:
    """A UDP port nobody listens on right now (for a trap listener started soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


PROCEDURES = [
    procedure(
        "COMM-01",
        ("Perte de communication", "Communication lost"),
        (
            "Vérifier si d'autres équipements du même site sont touchés.",
            "Check whether other equipment on the same site is affected.",
        ),
        (
            "Attendre la reprise automatique (quelques minutes).",
            "Wait for the automatic recovery (a few minutes).",
        ),
        (
            "Sans reprise, ouvrir un ticket de maintenance.",
            "Without recovery, open a maintenance ticket.",
        ),
    ),
    procedure(
        "COMM-02",
        ("Défaut de l'équipement", "Device fault"),
        (
            "Noter le code que l'équipement renvoie (dans le texte de l'alarme).",
            "Note the code the equipment answers with (in the alarm's text).",
        ),
        (
            "La liaison fonctionne : envoyer le technicien de l'équipement, pas le réseau.",
            "The link works: send the equipment's technician, not the network's.",
        ),
    ),
    procedure(
        "LIGHT-02",
        ("Armoire d'éclairage ouverte", "Lighting cabinet open"),
        (
            "Vérifier qu'une intervention est prévue sur l'armoire.",
            "Check whether work is planned on the cabinet.",
        ),
        ("Sinon, envoyer la patrouille la plus proche.", "If not, send the nearest patrol."),
    ),
    procedure(
        "LIGHT-03",
        ("Armoire sans alimentation", "Cabinet without power"),
        (
            "Vérifier les armoires voisines (panne du réseau de distribution ?).",
            "Check the neighbouring cabinets (a grid outage?).",
        ),
        ("Prévenir l'astreinte éclairage public.", "Call the street-lighting on-call crew."),
    ),
    procedure(
        "LIGHT-07",
        ("Lampe en panne", "Lamp failure"),
        ("Noter l'armoire et le circuit touchés.", "Note the cabinet and circuit affected."),
        (
            "Créer un bon d'intervention pour l'équipe éclairage.",
            "Raise a work order for the lighting crew.",
        ),
    ),
    procedure(
        "BOLLARD-01",
        ("Borne en défaut", "Bollard fault"),
        (
            "Regarder la caméra de la borne : véhicule ou obstacle ?",
            "Look at the bollard's camera: a vehicle or an obstacle?",
        ),
        ("Réarmer la borne à distance.", "Reset the bollard remotely."),
        (
            "Si le défaut revient, envoyer le technicien.",
            "If the fault returns, send the technician.",
        ),
    ),
    procedure(
        "BOLLARD-02",
        ("Borne bloquée", "Bollard blocked"),
        ("Regarder la caméra de la borne.", "Look at the bollard's camera."),
        (
            "Envoyer la police municipale sécuriser l'accès.",
            "Send the municipal police to secure the entry.",
        ),
    ),
    procedure(
        "CCTV-02",
        ("Caméra sabotée", "Camera tampered with"),
        ("Vérifier l'image de la caméra.", "Check the camera's picture."),
        ("Prévenir la police municipale.", "Call the municipal police."),
    ),
    procedure(
        "CCTV-03",
        ("Mouvement dans un bâtiment fermé", "Motion in a closed building"),
        ("Regarder l'instantané joint à l'alarme.", "Look at the snapshot stored with the alarm."),
        ("En cas d'intrusion, appeler la police (17).", "If it is an intrusion, call the police."),
    ),
    procedure(
        "NET-01",
        ("Lien fibre coupé", "Fibre link down"),
        (
            "Vérifier les équipements derrière ce commutateur.",
            "Check the equipment behind this switch.",
        ),
        ("Prévenir l'exploitant du réseau fibre.", "Call the fibre network's operator."),
    ),
    procedure(
        "NET-02",
        ("Erreurs sur un port", "Errors on a port"),
        ("Surveiller le taux d'erreurs dix minutes.", "Watch the error rate for ten minutes."),
        (
            "S'il persiste, faire nettoyer les connecteurs.",
            "If it persists, have the connectors cleaned.",
        ),
    ),
    procedure(
        "ACCESS-01",
        ("Porte forcée", "Door forced"),
        ("Regarder la caméra de la porte.", "Look at the door's camera."),
        (
            "Envoyer la patrouille ; bâtiment confiné si besoin.",
            "Send the patrol; lock the building down if needed.",
        ),
    ),
    procedure(
        "ACCESS-02",
        ("Porte restée ouverte", "Door held open"),
        ("Appeler le gardien du bâtiment.", "Call the building's caretaker."),
    ),
    procedure(
        "ACCESS-03",
        ("Lecteur de badge arraché", "Badge reader tampered with"),
        ("Regarder la caméra de la porte.", "Look at the door's camera."),
        ("Envoyer la patrouille.", "Send the patrol."),
    ),
]
"""The operating procedures the families' default alarms refer to."""
