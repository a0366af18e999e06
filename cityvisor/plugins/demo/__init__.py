"""A self-contained demonstration device: a water tank with a valve, simulated in-process.

It needs no hardware and no network, which makes it the device type of
``config/demo.toml`` and of the core's tests. Its level follows the valve
opening at a configurable rate; a high-water alarm and a communication
fault can be provoked from the config (``fail_every``) to see the
supervisor at work.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from cityvisor import (
    DeviceConfig,
    DeviceError,
    DeviceType,
    alarm,
    command,
    hookimpl,
    interlock,
    number,
    point,
    reaches,
)


class TankConfig(DeviceConfig):
    """Settings of a simulated tank."""

    capacity: float = 100.0
    """Volume in m³."""
    fill_rate: float = 5.0
    """How fast the level moves towards the valve's target, in % per second."""
    period: float = 0.5
    """Seconds between two samples."""
    initial_level: float = 20.0
    """Level (%) the simulated tank starts at."""
    fail_every: float | None = None
    """If set, the simulated link drops every so many seconds (to exercise recovery)."""


class Tank(DeviceType):
    """A water tank whose level follows its valve setpoint."""

    family = "demo"
    type_name = "demo.tank"
    label = {"fr": "Réservoir", "en": "Tank"}
    Config = TankConfig

    # The simulated tank's own state (set from the config when it runs).
    _setpoint: float = 0.0
    _maintenance: bool = False

    level = point(
        float,
        unit="%",
        deadband=0.1,
        minimum=0,
        maximum=100,
        doc={"fr": "Niveau d'eau", "en": "Water level"},
    )
    setpoint = point(
        float,
        unit="%",
        writable=True,
        minimum=0,
        maximum=100,
        doc={"fr": "Consigne de niveau", "en": "Level setpoint"},
    )
    volume = point(float, unit="m³", deadband=0.1, doc={"fr": "Volume", "en": "Volume"})
    valve = point(labels=["closed", "filling", "draining"], doc={"fr": "Vanne", "en": "Valve"})
    maintenance = point(bool, doc={"fr": "En maintenance", "en": "Under maintenance"})

    high_water = alarm(
        "level",
        high=90,
        deadband=2,
        priority="high",
        message={"fr": "Niveau haut", "en": "High water"},
        procedure="DEMO-01",
    )
    low_water = alarm(
        "level", low=5, deadband=1, priority="low", message={"fr": "Niveau bas", "en": "Low water"}
    )

    @command(
        setpoint=number(0, 100, unit="%", doc={"fr": "Niveau visé", "en": "Target level"}),
        interlocks=[
            interlock(
                "maintenance",
                equals=False,
                reason={"fr": "Réservoir en maintenance", "en": "Tank under maintenance"},
            )
        ],
        feedback=reaches("setpoint", param="setpoint", tolerance=0.01, within=5),
        label={"fr": "Régler la consigne", "en": "Set the level"},
        doc={"fr": "Amener le niveau vers la consigne.", "en": "Move the level towards setpoint."},
    )
    async def set_level(self, setpoint: float) -> None:
        """Move the level towards ``setpoint``."""
        self._setpoint = setpoint

    @command(
        confirm=True,
        role="supervisor",
        label={"fr": "Vidanger", "en": "Drain"},
        doc={"fr": "Vider complètement le réservoir.", "en": "Empty the tank completely."},
    )
    async def drain(self) -> None:
        """Empty the tank completely (needs confirmation)."""
        self._setpoint = 0.0

    @command(
        two_person=True,
        role="supervisor",
        label={"fr": "Maintenance", "en": "Maintenance"},
        doc={
            "fr": "Mettre le réservoir en maintenance ou l'en sortir.",
            "en": "Put the tank in or out of maintenance.",
        },
    )
    async def toggle_maintenance(self) -> None:
        """Put the tank in or out of maintenance (needs a second person's approval)."""
        self._maintenance = not self._maintenance

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Simulate the tank and publish its points every ``period`` seconds."""
        config: TankConfig = self.config  # type: ignore[assignment]
        if not hasattr(self, "_level"):
            self._level = config.initial_level
            self._setpoint = config.initial_level
            self._maintenance = False
        up_since = anyio.current_time()
        task_status.started()
        while True:
            if config.fail_every and anyio.current_time() - up_since >= config.fail_every:
                raise DeviceError("simulated link failure", reason="comm_failure")
            step = config.fill_rate * config.period
            delta = max(-step, min(step, self._setpoint - self._level))
            self._level += delta
            self.publish(
                {
                    "level": round(self._level, 3),
                    "setpoint": self._setpoint,
                    "volume": round(self._level / 100 * config.capacity, 3),
                    "valve": 0 if delta == 0 else (1 if delta > 0 else 2),
                    "maintenance": self._maintenance,
                }
            )
            await anyio.sleep(config.period)


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The demo plugin's device types."""
    return [Tank]
