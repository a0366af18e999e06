"""The demo city's junctions and river: signal controllers, and gauges along the Ouche.

Three junctions run on simulated NTCIP controllers (a bus lane on each main
street), and four water-level gauges watch the Ouche and an underpass
through one simulated Modbus/TCP gateway, where a storm comes now and then
and its flood wave runs down the river, so the map's gauges rise, cross
their thresholds and fall again while the demo runs.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from cityvisor.hal.sim.gauge import HydroGaugeSimulator
from cityvisor.hal.sim.signal_controller import SimulatedController

from .procedures import procedure

__all__ = ["GAUGES", "JUNCTIONS", "PROCEDURES", "River"]

HOST = "127.0.0.1"
COMMUNITY, WRITE_COMMUNITY = "public", "private"


@dataclass(frozen=True)
class Junction:
    """A junction of the demo city."""

    id: str
    zone: str
    name: str
    location: tuple[float, float]
    layout: str


JUNCTIONS = (
    Junction(
        "carrefour-darcy",
        "dijon",
        "Place Darcy / boulevard de Sévigné",
        (47.3226, 5.0335),
        "dual_ring",
    ),
    Junction(
        "carrefour-wilson",
        "dijon",
        "Place Wilson / rue Chabot-Charny",
        (47.3167, 5.0449),
        "crossroads",
    ),
    Junction(
        "carrefour-carraz",
        "chenove",
        "Avenue Roland-Carraz / rue de Longvic",
        (47.2947, 5.0102),
        "crossroads",
    ),
)


@dataclass(frozen=True)
class Gauge:
    """A gauge on the river (or in an underpass), upstream first."""

    id: str
    zone: str
    name: str
    location: tuple[float, float]
    thresholds: tuple[float, float, float]
    """Vigilance, alert, crisis (m)."""


GAUGES = (
    Gauge(
        "ouche-pont-des-chartreux",
        "dijon",
        "Ouche, pont des Chartreux",
        (47.3218, 5.0214),
        (1.4, 2.0, 2.6),
    ),
    Gauge(
        "ouche-port-du-canal", "dijon", "Ouche, port du canal", (47.3133, 5.0288), (1.4, 2.0, 2.6)
    ),
    Gauge("ouche-chenove", "chenove", "Ouche, pont de Chenôve", (47.2995, 5.0185), (1.5, 2.1, 2.8)),
    Gauge("tremie-gare", "dijon", "Trémie de la gare", (47.3231, 5.0277), (0.9, 1.3, 1.8)),
)


@dataclass
class River:
    """The simulators of the junctions and the river; :meth:`devices` points the hub at them."""

    seed: int = 0
    time_scale: float = 1.0
    """How much faster than real time the junctions cycle and the floods run (tests)."""
    controllers: dict[str, SimulatedController] = field(default_factory=dict)
    gauges: HydroGaugeSimulator | None = None

    async def start(self, stack: AsyncExitStack, *, small: bool = False) -> None:
        """Start the simulators (``small``: one junction, two gauges); ``stack`` stops them."""
        for junction in JUNCTIONS[: 1 if small else None]:
            controller = SimulatedController(
                junction.id,
                junction.layout,
                community=COMMUNITY,
                write_community=WRITE_COMMUNITY,
                detectors={1: 2, 2: 4},
                seed=self.seed,
                time_scale=self.time_scale,
            )
            self.controllers[junction.id] = await stack.enter_async_context(controller)
        count = 2 if small else len(GAUGES)
        # A storm every ten minutes on average, its wave 1 to 2.2 m high: every
        # threshold is crossed now and then, and falls back.
        simulator = HydroGaugeSimulator(
            HOST,
            0,
            gauges=count,
            level=0.6,
            tick=1.0 / self.time_scale,
            seed=self.seed,
            time_scale=self.time_scale,
            storms_every=600,
            storm_peak=(1.0, 2.2),
        )
        self.gauges = await stack.enter_async_context(simulator)

    def devices(self) -> list[dict[str, Any]]:
        """The ``[[devices]]`` entries of the junctions and gauges."""
        devices: list[dict[str, Any]] = []
        for junction in JUNCTIONS:
            controller = self.controllers.get(junction.id)
            if controller is None:
                continue
            devices.append(
                {
                    "id": junction.id,
                    "type": "signals.controller",
                    "zone": junction.zone,
                    "name": junction.name,
                    "tags": ["feux", "priorite-bus"],
                    "location": list(junction.location),
                    "config": {
                        "host": HOST,
                        "port": controller.address[1],
                        "community": COMMUNITY,
                        "write_community": WRITE_COMMUNITY,
                        "junction": junction.layout,
                        "detectors": [1, 2],
                        "poll_period": 1.0,
                    },
                }
            )
        assert self.gauges is not None
        for unit, gauge in zip(self.gauges.units, GAUGES, strict=False):
            vigilance, alert, crisis = gauge.thresholds
            devices.append(
                {
                    "id": gauge.id,
                    "type": "hydro.modbus_gauge",
                    "zone": gauge.zone,
                    "name": gauge.name,
                    "tags": ["crue"],
                    "location": list(gauge.location),
                    "config": {
                        "host": HOST,
                        "port": self.gauges.port,
                        "unit": unit,
                        "period": 5.0,
                        "area": gauge.name,
                        "thresholds": {
                            "vigilance": vigilance,
                            "alert": alert,
                            "crisis": crisis,
                            "hysteresis": 0.05,
                        },
                    },
                }
            )
        return devices


PROCEDURES = [
    procedure(
        "TRAFFIC-01",
        ("Carrefour en clignotant", "Junction in flash"),
        (
            "Vérifier si le clignotant a été commandé (journal).",
            "Check whether flash was ordered (journal).",
        ),
        (
            "Sinon, envoyer la patrouille régler la circulation.",
            "If not, send a patrol to direct traffic.",
        ),
    ),
    procedure(
        "TRAFFIC-02",
        ("Moniteur de conflit déclenché", "Conflict monitor tripped"),
        (
            "Envoyer la police municipale au carrefour.",
            "Send the municipal police to the junction.",
        ),
        (
            "Appeler le mainteneur des feux : réarmement sur place.",
            "Call the signals contractor: reset on site.",
        ),
    ),
    procedure(
        "TRAFFIC-03",
        ("Carrefour en commande locale", "Junction under local control"),
        ("Vérifier qu'une intervention est prévue.", "Check that work is planned."),
    ),
    procedure(
        "TRAFFIC-04",
        ("Boucle de détection en défaut", "Vehicle detector fault"),
        (
            "Créer un bon d'intervention pour le mainteneur.",
            "Raise a work order for the contractor.",
        ),
    ),
    procedure(
        "FLOOD-01",
        ("Vigilance crue", "Flood vigilance"),
        ("Suivre la montée sur la courbe du limnimètre.", "Follow the rise on the gauge's trend."),
        ("Prévenir l'astreinte voirie.", "Call the roads on-call crew."),
    ),
    procedure(
        "FLOOD-02",
        ("Alerte crue", "Flood alert"),
        (
            "Fermer les trémies et les berges menacées.",
            "Close the threatened underpasses and banks.",
        ),
        (
            "Prévenir la préfecture (l'alerte part d'elle-même si elle est déclarée).",
            "Tell the prefecture (the alert goes by itself when declared).",
        ),
    ),
    procedure(
        "FLOOD-03",
        ("Crise crue", "Flood crisis"),
        ("Ouvrir la cellule de crise.", "Open the crisis cell."),
        (
            "Activer la priorité bus des communes touchées pour les évacuations.",
            "Enable bus priority in the communes affected, for evacuations.",
        ),
    ),
    procedure(
        "FLOOD-04",
        ("Limnimètre en défaut", "Gauge fault"),
        ("Créer un bon d'intervention pour le capteur.", "Raise a work order for the sensor."),
    ),
]
"""The procedures the signals and hydro alarms refer to."""
