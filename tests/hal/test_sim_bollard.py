"""The bollard-PLC simulator behaves like a bollard, seen through the Modbus HAL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from cityvisor.hal.modbus import ModbusDevice, ModbusPool, Profile, Table
from cityvisor.hal.sim import bollard
from cityvisor.hal.sim.bollard import BollardSimulator
from tests.hal.modbus_fixtures import HOST

pytestmark = pytest.mark.anyio

DOWN, UP, MOVING, FAULT = range(4)


@pytest.fixture
async def plc(
    bollard_sim: BollardSimulator, pool: ModbusPool, bollard_profile: Profile
) -> AsyncIterator[ModbusDevice]:
    """Bollard 1 of the simulator, through a real Modbus/TCP connection."""
    async with pool.tcp(HOST, bollard_sim.port) as endpoint:
        yield endpoint.device(1, bollard_profile)


async def _positions_until(plc: ModbusDevice, target: int) -> list[int]:
    """Poll the position until it reads ``target``; return every position seen."""
    seen: list[int] = []
    with anyio.fail_after(5):
        while True:
            position = (await plc.read("position"))["position"]
            seen.append(position)
            if position == target:
                return seen
            await anyio.sleep(0.02)


async def test_a_bollard_travels_in_its_configured_time(plc: ModbusDevice) -> None:
    await plc.write("travel_time", 0.6)
    assert (await plc.read("travel_time"))["travel_time"] == pytest.approx(0.6)
    started = anyio.current_time()
    await plc.write("raise", True)
    seen = await _positions_until(plc, UP)
    elapsed = anyio.current_time() - started
    assert MOVING in seen
    assert 0.5 <= elapsed <= 1.0
    result = await plc.poll()
    assert result["height"] == 100.0
    assert result["raise"] is False  # the PLC acknowledged the order
    assert result["cycles"] == 1

    # The command register works too, and the PLC sets it back to "none".
    await plc.write("command", 2)  # lower
    seen = await _positions_until(plc, DOWN)
    assert MOVING in seen
    assert (await plc.read("command"))["command"] == 0


async def test_the_plc_does_not_refuse_to_raise_onto_a_vehicle(
    bollard_sim: BollardSimulator, plc: ModbusDevice
) -> None:
    # The interlock belongs to the hub's command bus; the simulator must not hide its absence.
    bollard_sim.vehicle_arrives(1)
    await bollard_sim.next_tick()
    assert (await plc.read("vehicle_on_loop"))["vehicle_on_loop"] is True
    await plc.write("raise", True)
    await _positions_until(plc, UP)
    bollard_sim.vehicle_leaves(1)
    await bollard_sim.next_tick()
    assert (await plc.read("vehicle_on_loop"))["vehicle_on_loop"] is False


async def test_vehicles_come_and_go_on_their_own_when_asked(
    pool: ModbusPool, bollard_profile: Profile
) -> None:
    async with (
        BollardSimulator(HOST, 0, vehicle_rate=600.0, dwell=(0.1, 0.2), tick=0.02, seed=1) as sim,
        pool.tcp(HOST, sim.port) as endpoint,
    ):
        plc = endpoint.device(1, bollard_profile)
        seen = set()
        with anyio.fail_after(5):
            while seen != {True, False}:
                seen.add((await plc.read("vehicle_on_loop"))["vehicle_on_loop"])
                await anyio.sleep(0.02)


async def test_an_injected_fault_stops_the_bollard_until_reset(
    bollard_sim: BollardSimulator, plc: ModbusDevice
) -> None:
    await plc.write("raise", True)
    await _positions_until(plc, MOVING)
    bollard_sim.inject_fault(1, 3)
    await bollard_sim.next_tick()
    result = await plc.read("position", "fault_code", "height")
    assert result["position"] == FAULT and result["fault_code"] == 3
    stuck = result["height"]
    assert 0 < stuck < 100

    await plc.write("raise", True)  # refused while faulted
    await bollard_sim.next_tick(3)
    assert (await plc.read("height"))["height"] == stuck

    await plc.write("reset_fault", True)
    await _positions_until(plc, DOWN)  # a half-raised bollard settles down, the safe side
    assert (await plc.read("fault_code", "height")) == {"fault_code": 0, "height": 0.0}


async def test_orders_are_ignored_unless_the_key_switch_is_on_remote(
    bollard_sim: BollardSimulator, plc: ModbusDevice
) -> None:
    bollard_sim.set_mode(1, "local")
    await bollard_sim.next_tick()
    assert (await plc.read("mode"))["mode"] == 1
    await plc.write("raise", True)
    await bollard_sim.next_tick(3)
    assert (await plc.read("position", "raise")) == {"position": DOWN, "raise": False}


async def test_cycles_are_32_bit_with_the_least_significant_word_first(
    bollard_sim: BollardSimulator, plc: ModbusDevice
) -> None:
    bollard_sim.bollard(1).cycles = 70_000  # 0x0001_1170
    await bollard_sim.next_tick()
    assert await bollard_sim.raw(1, Table.INPUT, 4, 2) == [0x1170, 0x0001]
    assert (await plc.read("cycles"))["cycles"] == 70_000


async def test_bollards_behind_one_gateway_move_independently(
    bollard_sim: BollardSimulator, pool: ModbusPool, bollard_profile: Profile
) -> None:
    async with pool.tcp(HOST, bollard_sim.port) as endpoint:
        one, two = (endpoint.device(unit, bollard_profile) for unit in (1, 2))
        await two.write("raise", True)
        await _positions_until(two, UP)
        assert (await one.read("position"))["position"] == DOWN
    assert bollard_sim.connections == 1


def test_main_parses_its_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bollard.main(["--help"])
    assert exited.value.code == 0
    assert "--travel-time" in capsys.readouterr().out
