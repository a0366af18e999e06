"""A street-lighting cabinet simulator: a Modbus/TCP gateway with N cabinets of M circuits.

Each cabinet is one Modbus unit laid out by the ``lighting_cabinet`` profile.
It behaves like the equipment: a circuit's level ramps towards its setpoint
(at the cabinet's ramp rate) while the circuit is on and mains is present,
power follows the level and the lamps still working, energy integrates into a
32-bit counter, lamps fail at random (``failure_rate``) or when told to, and
the door contact, mains supply and breaker can be toggled.

    async with LightingSimulator(cabinets=2, circuits=8) as sim:
        ...                      # clients connect to sim.host, sim.port
        sim.fail_lamps(unit=1, circuit=3)
        sim.set_door(unit=2, open=True)

``python -m cityvisor.hal.sim.lighting --port 5020`` serves one until Ctrl-C.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from cityvisor.hal.modbus_profile import Profile

from .modbus_server import ModbusSimulator, run_simulator_cli

__all__ = ["CabinetState", "CircuitState", "LightingSimulator", "main"]

_ENERGY_WRAP = 2**32  # the energy register is a 32-bit Wh counter


@dataclass
class CircuitState:
    """What one circuit is doing (the simulator's truth; registers mirror it)."""

    name: str
    lamps: int
    lamp_power: float
    """Watts per lamp at 100 %."""
    on: bool = False
    setpoint: float = 100.0
    level: float = 0.0
    power: float = 0.0
    energy_wh: float = 0.0
    failed: int = 0

    @property
    def working(self) -> int:
        """Lamps still working."""
        return self.lamps - self.failed


@dataclass
class CabinetState:
    """What one cabinet (one Modbus unit) is doing."""

    unit: int
    circuits: list[CircuitState]
    door_open: bool = False
    mains_present: bool = True
    breaker_tripped: bool = False
    surge_arrester_fault: bool = False
    temperature: float = 18.0
    mains_voltage: float = 230.0
    ramp_rate: float = 20.0


class LightingSimulator(ModbusSimulator):
    """Lighting cabinets behind one Modbus/TCP gateway.

    ``cabinets`` is a count (units ``first_unit..``) or the unit ids.
    ``failure_rate`` is the chance per lit lamp per hour of failing (the
    demo uses a visible one; tests force failures with :meth:`fail_lamps`).
    ``ramp_rate`` is the initial ramp rate in % per second (clients may
    write it).
    """

    kind = "lighting"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cabinets: int | Sequence[int] = 1,
        circuits: int = 8,
        lamps_per_circuit: int = 20,
        lamp_power: float = 60.0,
        ramp_rate: float = 20.0,
        failure_rate: float = 0.0,
        first_unit: int = 1,
        profile: Profile | str = "lighting_cabinet",
        tick: float = 0.05,
        seed: int | None = None,
        serial: str | None = None,
    ) -> None:
        units = (
            list(range(first_unit, first_unit + cabinets))
            if isinstance(cabinets, int)
            else list(cabinets)
        )
        super().__init__(
            host,
            port,
            profile=profile,
            units=units,
            members={"circuit": circuits},
            tick=tick,
            seed=seed,
            serial=serial,
        )
        self.failure_rate = failure_rate
        self.circuit_names = self.profile.member_names("circuit", circuits)
        self.cabinets: dict[int, CabinetState] = {
            unit: CabinetState(
                unit,
                [CircuitState(name, lamps_per_circuit, lamp_power) for name in self.circuit_names],
                ramp_rate=ramp_rate,
            )
            for unit in self.units
        }

    # -- operator-side API (what happens in the street) -------------------

    def cabinet(self, unit: int) -> CabinetState:
        """The state of one cabinet."""
        return self.cabinets[unit]

    def circuit(self, unit: int, circuit: int | str) -> CircuitState:
        """One circuit, by number (1 = first) or name (``"c1"``)."""
        circuits = self.cabinets[unit].circuits
        if isinstance(circuit, int):
            return circuits[circuit - 1]
        return circuits[self.circuit_names.index(circuit)]

    def set_door(self, unit: int, open: bool = True) -> None:
        """Open or close the cabinet door (the door contact follows)."""
        self.cabinets[unit].door_open = open

    def set_mains(self, unit: int, present: bool = True) -> None:
        """Cut or restore the mains supply: without it every circuit goes dark."""
        self.cabinets[unit].mains_present = present

    def trip_breaker(self, unit: int, tripped: bool = True) -> None:
        """Trip (or reset) the cabinet's main breaker."""
        self.cabinets[unit].breaker_tripped = tripped

    def set_temperature(self, unit: int, celsius: float) -> None:
        """Set the temperature inside the cabinet."""
        self.cabinets[unit].temperature = celsius

    def fail_lamps(self, unit: int, circuit: int | str, count: int = 1) -> None:
        """Make ``count`` more lamps of a circuit fail now."""
        state = self.circuit(unit, circuit)
        state.failed = min(state.lamps, state.failed + count)

    def repair(self, unit: int, circuit: int | str | None = None) -> None:
        """Replace the failed lamps of one circuit, or of the whole cabinet."""
        targets = self.cabinets[unit].circuits if circuit is None else [self.circuit(unit, circuit)]
        for state in targets:
            state.failed = 0

    def set_energy(self, unit: int, circuit: int | str, kwh: float) -> None:
        """Set a circuit's energy counter (to test large and wrapping values)."""
        self.circuit(unit, circuit).energy_wh = kwh * 1000.0

    # -- simulation -------------------------------------------------------

    async def setup(self, unit: int) -> None:
        """Publish the initial state, including the writable registers' defaults."""
        cabinet = self.cabinets[unit]
        await self.set(unit, "ramp_rate", cabinet.ramp_rate)
        for state in cabinet.circuits:
            await self.set(unit, f"{state.name}/on", state.on)
            await self.set(unit, f"{state.name}/setpoint", state.setpoint)
        await self._publish(unit)

    async def tick(self, unit: int, dt: float) -> None:
        """Read the commands, move levels, integrate energy, fail lamps, publish."""
        cabinet = self.cabinets[unit]
        cabinet.ramp_rate = await self.get(unit, "ramp_rate")
        powered = cabinet.mains_present and not cabinet.breaker_tripped
        for state in cabinet.circuits:
            state.on = await self.get(unit, f"{state.name}/on")
            state.setpoint = min(100.0, max(0.0, await self.get(unit, f"{state.name}/setpoint")))
            target = state.setpoint if state.on and powered else 0.0
            step = cabinet.ramp_rate * dt
            state.level += max(-step, min(step, target - state.level))
            if self.failure_rate and state.level > 0 and state.working:
                chance = self.failure_rate / 3600.0 * dt * state.working
                if self.random.random() < chance:
                    state.failed += 1
            state.power = state.working * state.lamp_power * state.level / 100.0
            state.energy_wh += state.power * dt / 3600.0
        await self._publish(unit)

    async def _publish(self, unit: int) -> None:
        cabinet = self.cabinets[unit]
        await self.set(unit, "door_open", cabinet.door_open)
        await self.set(unit, "mains_present", cabinet.mains_present)
        await self.set(unit, "temperature", cabinet.temperature)
        await self.set(unit, "breaker_tripped", cabinet.breaker_tripped)
        await self.set(unit, "surge_arrester_fault", cabinet.surge_arrester_fault)
        await self.set(unit, "mains_voltage", cabinet.mains_voltage if cabinet.mains_present else 0)
        for state in cabinet.circuits:
            name = state.name
            await self.set(unit, f"{name}/level", round(state.level, 1))
            await self.set(unit, f"{name}/power", state.power)
            await self.set(unit, f"{name}/energy", (int(state.energy_wh) % _ENERGY_WRAP) / 1000)
            await self.set(unit, f"{name}/lamp_failures", state.failed)
            await self.set(unit, f"{name}/lamps", state.lamps)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve lighting cabinets until interrupted (``cityvisor sim lighting``)."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--cabinets", type=int, default=2, help="cabinets (units 1..N)")
        parser.add_argument("--circuits", type=int, default=8, help="circuits per cabinet")
        parser.add_argument(
            "--failure-rate", type=float, default=0.01, help="failures per lit lamp per hour"
        )

    def build(args: argparse.Namespace) -> LightingSimulator:
        return LightingSimulator(
            args.host,
            args.port,
            cabinets=args.cabinets,
            circuits=args.circuits,
            failure_rate=args.failure_rate,
            seed=args.seed,
        )

    return run_simulator_cli(
        "Simulated street-lighting cabinets over Modbus/TCP", add_arguments, build, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
