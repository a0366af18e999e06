"""A retractable-bollard PLC simulator: N bollards (Modbus units) behind one gateway.

Each bollard is laid out by the ``bollard_plc`` profile. It behaves like the
equipment: a raise or lower order (a coil, or the command register) starts a
stroke that takes ``travel_time`` seconds, during which the position reads
``moving`` before it reads ``up`` or ``down``; vehicles arrive on and leave
the induction loop (at random, or when told); faults can be injected and are
cleared by a reset order; orders are obeyed only with the key switch in
``remote``.

The PLC does **not** refuse to raise onto a vehicle: that interlock is the
hub's job (its command bus checks ``vehicle_on_loop``), and a simulator that
did it would hide a missing interlock.

``python -m cityvisor.hal.sim.bollard --port 5021`` serves one until Ctrl-C.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from cityvisor.hal.modbus_profile import Profile

from .modbus_server import ModbusSimulator, run_simulator_cli

__all__ = ["FAULT_CODES", "BollardSimulator", "BollardState", "main"]

POSITIONS = ("down", "up", "moving", "fault")
MODES = ("remote", "local", "maintenance")
COMMANDS = ("none", "raise", "lower", "reset")
FAULT_CODES = {1: "motor", 2: "hydraulic_pressure", 3: "obstruction", 4: "power"}
"""Fault codes the simulated PLC reports (0 is no fault)."""


@dataclass
class BollardState:
    """What one bollard is doing (the simulator's truth; registers mirror it)."""

    unit: int
    travel_time: float
    height: float = 0.0
    """0 % fully down, 100 % fully up."""
    direction: int = 0
    """+1 rising, -1 lowering, 0 still."""
    fault_code: int = 0
    mode: str = "remote"
    vehicle: bool = False
    vehicle_leaves_at: float | None = None
    cycles: int = 0

    @property
    def position(self) -> str:
        """``down``, ``up``, ``moving`` or ``fault``, as the position register reads."""
        if self.fault_code:
            return "fault"
        if self.direction:
            return "moving"
        return "up" if self.height >= 100.0 else "down"


class BollardSimulator(ModbusSimulator):
    """Bollard PLCs behind one Modbus/TCP gateway.

    ``bollards`` is a count (units ``first_unit..``) or the unit ids;
    ``travel_time`` the initial stroke time in seconds (clients may write
    it); ``vehicle_rate`` the vehicles arriving per minute on each loop,
    each staying ``dwell`` seconds (a random time in that range).
    """

    kind = "bollard"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bollards: int | Sequence[int] = 1,
        travel_time: float = 3.0,
        initial: str = "down",
        vehicle_rate: float = 0.0,
        dwell: tuple[float, float] = (2.0, 10.0),
        first_unit: int = 1,
        profile: Profile | str = "bollard_plc",
        tick: float = 0.05,
        seed: int | None = None,
        serial: str | None = None,
    ) -> None:
        units = (
            list(range(first_unit, first_unit + bollards))
            if isinstance(bollards, int)
            else list(bollards)
        )
        super().__init__(
            host, port, profile=profile, units=units, tick=tick, seed=seed, serial=serial
        )
        if initial not in ("down", "up"):
            raise ValueError("a bollard starts 'down' or 'up'")
        self.vehicle_rate = vehicle_rate
        self.dwell = dwell
        self.bollards: dict[int, BollardState] = {
            unit: BollardState(unit, travel_time, height=100.0 if initial == "up" else 0.0)
            for unit in self.units
        }

    # -- street-side API ---------------------------------------------------

    def bollard(self, unit: int) -> BollardState:
        """The state of one bollard."""
        return self.bollards[unit]

    def vehicle_arrives(self, unit: int) -> None:
        """A vehicle stops on the loop (until :meth:`vehicle_leaves`)."""
        state = self.bollards[unit]
        state.vehicle = True
        state.vehicle_leaves_at = None

    def vehicle_leaves(self, unit: int) -> None:
        """The vehicle on the loop drives away."""
        state = self.bollards[unit]
        state.vehicle = False
        state.vehicle_leaves_at = None

    def inject_fault(self, unit: int, code: int = 1) -> None:
        """Make the PLC report a fault (see FAULT_CODES): the bollard stops where it is."""
        if code <= 0:
            raise ValueError("fault codes are positive; clear a fault with a reset order")
        state = self.bollards[unit]
        state.fault_code = code
        state.direction = 0

    def set_mode(self, unit: int, mode: str) -> None:
        """Turn the key switch: ``remote`` (orders obeyed), ``local`` or ``maintenance``."""
        if mode not in MODES:
            raise ValueError(f"mode is one of {MODES}")
        self.bollards[unit].mode = mode

    # -- simulation -------------------------------------------------------

    async def setup(self, unit: int) -> None:
        """Publish the initial state and the writable registers' defaults."""
        state = self.bollards[unit]
        await self.set(unit, "travel_time", state.travel_time)
        await self.set(unit, "command", 0)
        await self._publish(unit)

    async def tick(self, unit: int, dt: float) -> None:
        """Take orders, move, let vehicles come and go, publish."""
        state = self.bollards[unit]
        state.travel_time = max(0.1, await self.get(unit, "travel_time"))
        order = await self._take_order(unit)
        if order == "reset" and state.fault_code:
            state.fault_code = 0
            if 0.0 < state.height < 100.0:
                state.direction = -1  # a bollard stopped mid-stroke settles down, the safe side
        elif order in ("raise", "lower") and not state.fault_code and state.mode == "remote":
            if order == "raise" and state.height < 100.0:
                state.direction = 1
            elif order == "lower" and state.height > 0.0:
                state.direction = -1
        if state.direction and not state.fault_code:
            state.height += state.direction * 100.0 * dt / state.travel_time
            if state.height >= 100.0:
                state.height, state.direction = 100.0, 0
                state.cycles += 1
            elif state.height <= 0.0:
                state.height, state.direction = 0.0, 0
        self._traffic(state, dt)
        await self._publish(unit)

    async def _take_order(self, unit: int) -> str:
        """The order clients wrote since the last tick, acknowledged (cleared) as a PLC does."""
        order = "none"
        for coil in ("reset_fault", "lower", "raise"):
            if await self.get(unit, coil):
                await self.set(unit, coil, False)
                order = "reset" if coil == "reset_fault" else coil
        command = int(await self.get(unit, "command"))
        if command:
            await self.set(unit, "command", 0)
            if 0 < command < len(COMMANDS):
                order = COMMANDS[command]
        return order

    def _traffic(self, state: BollardState, dt: float) -> None:
        now = anyio.current_time()
        if state.vehicle and state.vehicle_leaves_at is not None and now >= state.vehicle_leaves_at:
            state.vehicle = False
            state.vehicle_leaves_at = None
        elif (
            not state.vehicle
            and self.vehicle_rate > 0
            and self.random.random() < self.vehicle_rate / 60.0 * dt
        ):
            state.vehicle = True
            state.vehicle_leaves_at = now + self.random.uniform(*self.dwell)

    async def _publish(self, unit: int) -> None:
        state = self.bollards[unit]
        await self.set(unit, "position", POSITIONS.index(state.position))
        await self.set(unit, "height", round(state.height, 1))
        await self.set(unit, "fault_code", state.fault_code)
        await self.set(unit, "mode", MODES.index(state.mode))
        await self.set(unit, "cycles", state.cycles % 2**32)
        await self.set(unit, "vehicle_on_loop", state.vehicle)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve bollard PLCs until interrupted (``cityvisor sim bollards``)."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bollards", type=int, default=3, help="bollards (units 1..N)")
        parser.add_argument("--travel-time", type=float, default=3.0, help="stroke time, s")
        parser.add_argument(
            "--vehicle-rate", type=float, default=2.0, help="vehicles per minute per loop"
        )

    def build(args: argparse.Namespace) -> BollardSimulator:
        return BollardSimulator(
            args.host,
            args.port,
            bollards=args.bollards,
            travel_time=args.travel_time,
            vehicle_rate=args.vehicle_rate,
            seed=args.seed,
        )

    return run_simulator_cli("Simulated bollard PLCs over Modbus/TCP", add_arguments, build, argv)


if __name__ == "__main__":
    raise SystemExit(main())
