"""A simulator of flood gauges: Modbus units behind one Modbus/TCP gateway, as in the street.

Built on cityvisor's :class:`~cityvisor.hal.sim.modbus_server.ModbusSimulator`:
the registers are laid out by the same profile the plugin reads. Each gauge
has a level that follows the rain (:meth:`FloodGaugeSimulator.rain`) or is
set (:meth:`~FloodGaugeSimulator.set_level`), a rate of rise computed from
it, a battery, a radar status, and its alert relay closed while the level is
at or above the alert level a client writes.

``python -m cityvisor_flood.simulator --port 5030 --gauges 3`` serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from cityvisor.hal.sim.modbus_server import ModbusSimulator, run_simulator_cli

from . import PROFILE

__all__ = ["FloodGaugeSimulator", "GaugeState", "main"]

STATUSES = ("ok", "no_echo", "fouled", "fault")


@dataclass
class GaugeState:
    """What one gauge measures (the simulator's truth; registers mirror it)."""

    level: float = 0.5
    """Metres."""
    rise: float = 0.0
    """Metres per hour the water is rising at (negative: falling)."""
    status: str = "ok"
    battery: float = 12.6


class FloodGaugeSimulator(ModbusSimulator):
    """Water-level gauges, units ``1..gauges``, behind one Modbus/TCP gateway."""

    kind = "flood gauge"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        gauges: int = 1,
        level: float = 0.5,
        tick: float = 0.1,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            host, port, profile=PROFILE, units=range(1, gauges + 1), tick=tick, seed=seed
        )
        self.gauges = {unit: GaugeState(level=level) for unit in self.units}
        self._rate: dict[int, float] = dict.fromkeys(self.units, 0.0)

    def gauge(self, unit: int) -> GaugeState:
        """The state of one gauge."""
        return self.gauges[unit]

    def set_level(self, unit: int, metres: float) -> None:
        """Put the water at ``metres`` now (and stop it moving)."""
        state = self.gauges[unit]
        state.level, state.rise = max(0.0, metres), 0.0

    def rain(self, unit: int, metres_per_hour: float) -> None:
        """Make the water rise (or fall, negative) at this rate from now on."""
        self.gauges[unit].rise = metres_per_hour

    def set_status(self, unit: int, status: str) -> None:
        """The radar's diagnosis: ``ok``, ``no_echo``, ``fouled`` or ``fault``."""
        if status not in STATUSES:
            raise ValueError(f"status is one of {STATUSES}")
        self.gauges[unit].status = status

    async def setup(self, unit: int) -> None:
        """An alert level of 2 m until a client writes another."""
        await self.set(unit, "alert_level", 2.0)
        await self._publish(unit)

    async def tick(self, unit: int, dt: float) -> None:
        """Move the water, follow the alert level, publish."""
        state = self.gauges[unit]
        state.level = max(0.0, state.level + state.rise * dt / 3600.0)
        await self._publish(unit)

    async def _publish(self, unit: int) -> None:
        state = self.gauges[unit]
        alert_level = await self.get(unit, "alert_level")
        await self.set(unit, "level", round(state.level, 2))
        await self.set(unit, "rate_of_rise", round(state.rise * 100, 1))
        await self.set(unit, "sensor_status", STATUSES.index(state.status))
        await self.set(unit, "battery", state.battery)
        await self.set(unit, "alert_relay", state.level >= alert_level)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve flood gauges until interrupted."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gauges", type=int, default=1, help="gauges (units 1..N)")
        parser.add_argument("--level", type=float, default=0.5, help="initial level, m")

    def build(args: argparse.Namespace) -> FloodGaugeSimulator:
        return FloodGaugeSimulator(
            args.host, args.port, gauges=args.gauges, level=args.level, seed=args.seed
        )

    return run_simulator_cli("Simulated flood gauges over Modbus/TCP", add_arguments, build, argv)


if __name__ == "__main__":
    raise SystemExit(main())
