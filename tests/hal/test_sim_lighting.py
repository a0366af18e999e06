"""The lighting-cabinet simulator behaves like a cabinet, seen through the Modbus HAL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from cityvisor.hal.modbus import ModbusDevice, ModbusPool, Profile
from cityvisor.hal.sim import lighting
from cityvisor.hal.sim.lighting import LightingSimulator
from tests.hal.modbus_fixtures import HOST

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cabinet(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> AsyncIterator[ModbusDevice]:
    """Cabinet 1 of the simulator, through a real Modbus/TCP connection."""
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        yield endpoint.device(1, lighting_profile, {"circuit": 8})


async def _until(
    cabinet: ModbusDevice, point: str, done: Callable[[Any], bool], timeout: float = 5
) -> list[Any]:
    """Poll ``point`` until ``done(value)``; return every value seen."""
    seen: list[Any] = []
    with anyio.fail_after(timeout):
        while True:
            value = (await cabinet.read(point))[point]
            seen.append(value)
            if done(value):
                return seen
            await anyio.sleep(0.03)


async def _levels_until(cabinet: ModbusDevice, point: str, target: float) -> list[float]:
    """Poll ``point`` until it reaches ``target``; return every value seen."""
    return await _until(cabinet, point, lambda value: value == pytest.approx(target, abs=0.05))


async def test_a_level_ramps_to_its_setpoint_and_power_follows(
    lighting_sim: LightingSimulator, cabinet: ModbusDevice
) -> None:
    await cabinet.write("ramp_rate", 100.0)  # % per second
    await cabinet.write("c1/setpoint", 80.0)
    started = anyio.current_time()
    await cabinet.write("c1/on", True)
    seen = await _levels_until(cabinet, "c1/level", 80.0)
    elapsed = anyio.current_time() - started
    assert seen == sorted(seen)  # never goes back down while ramping up
    assert any(0 < v < 80 for v in seen)  # intermediate levels are visible
    assert 0.6 <= elapsed <= 1.5  # 80 % at 100 %/s
    result = await cabinet.read("c1/power", "c2/level", "c2/power")
    assert result["c1/power"] == pytest.approx(20 * 60.0 * 0.80, rel=0.01)
    assert result["c2/level"] == 0.0 and result["c2/power"] == 0.0

    # Dimming down and switching off ramp as well.
    await cabinet.write("c1/setpoint", 30.0)
    await _levels_until(cabinet, "c1/level", 30.0)
    await cabinet.write("c1/on", False)
    seen = await _levels_until(cabinet, "c1/level", 0.0)
    assert seen == sorted(seen, reverse=True)


async def test_energy_integrates_power_over_time(
    pool: ModbusPool, lighting_profile: Profile
) -> None:
    # 100 lamps of 2 kW: 200 kW, 55.6 Wh per second: visible within a second.
    async with (
        LightingSimulator(
            HOST,
            0,
            circuits=1,
            lamps_per_circuit=100,
            lamp_power=2000.0,
            ramp_rate=1000.0,
            tick=0.02,
        ) as sim,
        pool.tcp(HOST, sim.port) as endpoint,
    ):
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
        await cabinet.write("c1/on", True)
        await _levels_until(cabinet, "c1/level", 100.0)
        first = await cabinet.read("c1/energy", "c1/power")
        started = anyio.current_time()
        await anyio.sleep(0.8)
        second = await cabinet.read("c1/energy")
        elapsed = anyio.current_time() - started
        assert first["c1/power"] == pytest.approx(200_000.0)
        gained_kwh = second["c1/energy"] - first["c1/energy"]
        assert gained_kwh == pytest.approx(200.0 * elapsed / 3600, rel=0.15)


async def test_the_energy_counter_wraps_at_32_bits(
    pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with (
        LightingSimulator(
            HOST,
            0,
            circuits=1,
            lamps_per_circuit=100,
            lamp_power=2000.0,
            ramp_rate=1000.0,
            tick=0.02,
        ) as sim,
        pool.tcp(HOST, sim.port) as endpoint,
    ):
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
        sim.set_energy(1, 1, (2**32 - 20) / 1000)  # 20 Wh before the wrap
        await sim.next_tick()
        assert (await cabinet.read("c1/energy"))["c1/energy"] == pytest.approx((2**32 - 20) / 1000)
        await cabinet.write("c1/on", True)
        await _until(cabinet, "c1/energy", lambda kwh: kwh < 1000, timeout=3)


async def test_forced_lamp_failures_are_counted_and_cut_power(
    lighting_sim: LightingSimulator, cabinet: ModbusDevice
) -> None:
    await cabinet.write("ramp_rate", 1000.0)
    await cabinet.write("c3/on", True)
    await _levels_until(cabinet, "c3/level", 100.0)
    lighting_sim.fail_lamps(1, 3, count=5)
    await lighting_sim.next_tick(2)
    result = await cabinet.read("c3/lamp_failures", "c3/power", "c4/lamp_failures")
    assert result["c3/lamp_failures"] == 5
    assert result["c3/power"] == pytest.approx(15 * 60.0)
    assert result["c4/lamp_failures"] == 0
    lighting_sim.repair(1, 3)
    await lighting_sim.next_tick(2)
    assert (await cabinet.read("c3/lamp_failures"))["c3/lamp_failures"] == 0


async def test_lamps_fail_at_random_when_asked(pool: ModbusPool, lighting_profile: Profile) -> None:
    async with (
        LightingSimulator(
            HOST, 0, circuits=2, ramp_rate=1000.0, failure_rate=3600.0, tick=0.02, seed=3
        ) as sim,
        pool.tcp(HOST, sim.port) as endpoint,
    ):
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 2})
        await cabinet.write("c1/on", True)
        await _until(cabinet, "c1/lamp_failures", lambda failed: failed >= 3, timeout=3)
        # Only lit lamps fail: circuit 2 stayed off.
        assert (await cabinet.read("c2/lamp_failures"))["c2/lamp_failures"] == 0


async def test_door_mains_and_breaker_are_seen_per_cabinet(
    lighting_sim: LightingSimulator,
    cabinet: ModbusDevice,
    pool: ModbusPool,
    lighting_profile: Profile,
) -> None:
    await cabinet.write("ramp_rate", 1000.0)
    await cabinet.write("c1/on", True)
    await _levels_until(cabinet, "c1/level", 100.0)
    lighting_sim.set_door(1, True)
    lighting_sim.set_mains(1, False)
    await lighting_sim.next_tick()
    result = await cabinet.poll()
    assert result["door_open"] is True
    assert result["mains_present"] is False
    assert result["mains_voltage"] == 0.0
    await _levels_until(cabinet, "c1/level", 0.0)  # no mains, no light

    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        other = await endpoint.device(2, lighting_profile, {"circuit": 8}).poll()
    assert other["door_open"] is False and other["mains_present"] is True

    lighting_sim.set_mains(1, True)
    lighting_sim.trip_breaker(1)
    await lighting_sim.next_tick()
    result = await cabinet.read("breaker_tripped", "surge_arrester_fault", "c1/level")
    assert result["breaker_tripped"] is True and result["surge_arrester_fault"] is False
    assert result["c1/level"] == 0.0


async def test_the_simulator_stops_cleanly_and_frees_its_port() -> None:
    sim = LightingSimulator(HOST, 0, circuits=1, tick=0.01)
    async with sim:
        port = sim.port
        await sim.next_tick(3)
    async with LightingSimulator(HOST, port, circuits=1) as again:
        assert again.port == port


def test_main_parses_its_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        lighting.main(["--help"])
    assert exited.value.code == 0
    assert "--cabinets" in capsys.readouterr().out
