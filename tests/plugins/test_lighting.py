"""The lighting plugin through a real hub, over Modbus/TCP, against the cabinet simulator."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import anyio
import pytest

import cityvisor.plugins.lighting as lighting
from cityvisor.core.commands import CommandOutcome, CommandRequest, InterlockedError
from cityvisor.core.config import check_config, load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.points import PointValue, Quality
from cityvisor.hal.modbus import Table
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point
from tests.hal.modbus_fixtures import HOST, free_port
from tests.plugins.conftest import OPERATOR, city, command_journal, device

pytestmark = pytest.mark.anyio

TYPE = "lighting.cabinet"


def cabinet(id: str, zone: str, sim: LightingSimulator, unit: int, **config: object) -> str:
    """A 4-circuit cabinet of the simulator, polled every 0.1 s."""
    settings = {"host": HOST, "port": sim.port, "unit": unit, "circuits": 4, "period": 0.1}
    return device(id, TYPE, zone, **{**settings, **config})


async def online(hub: Hub, *point_ids: str) -> None:
    """Wait until each device is online and its first poll is published."""
    for point_id in point_ids:
        await wait_for_point(hub, f"{point_id}/online", lambda v: v.value is True)
        await wait_for_point(hub, f"{point_id}/c1/level", lambda v: v.quality.is_good)


async def run(hub: Hub, command: str, member: str, **arguments: object):
    return await hub.commands.execute(CommandRequest("cab-1", command, arguments, member, OPERATOR))


async def test_values_arrive_with_the_right_scaling(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    lighting_sim.set_energy(1, 2, 70_000.5)  # 70,000,500 Wh: only a 32-bit counter holds it
    lighting_sim.set_temperature(1, -7.5)
    await lighting_sim.set(1, "c1/setpoint", 42.5)
    await lighting_sim.set(1, "c1/on", True)
    async with running_hub(
        city(cabinet("cab-1", "nord", lighting_sim, 1)), tmp_path, plugins=[lighting]
    ) as hub:
        base = "nord/lighting/cab-1"
        await online(hub, base)
        level = await wait_for_point(hub, f"{base}/c1/level", lambda v: v.value == 42.5)
        assert level.quality.is_good
        # 20 lamps of 60 W at 42.5 %; the simulator rounds the level it integrates.
        await wait_for_point(hub, f"{base}/c1/power", lambda v: abs(v.value - 510.0) < 1.0)
        values = {
            p.id.removeprefix(base + "/"): p.current.value for p in hub.points.of_device("cab-1")
        }
        assert values["c1/on"] is True and values["c2/on"] is False
        assert values["c1/setpoint"] == pytest.approx(42.5)
        assert values["c2/energy"] == pytest.approx(70_000.5, abs=0.001)
        assert values["temperature"] == pytest.approx(-7.5)
        assert values["mains_voltage"] == pytest.approx(230.0)
        assert values["door_open"] is False and values["mains_present"] is True
        assert values["breaker_tripped"] is False
        assert values["c3/lamp_failures"] == 0
        # Every declared point is read, with good quality; the profile's other
        # registers (installed lamps, ramp rate) are not read at all.
        assert all(p.current.quality.is_good for p in hub.points.of_device("cab-1"))
        assert set(hub.devices["cab-1"].modbus.specs) >= {"c1/lamps", "ramp_rate"}
        read = {pid for block in hub.devices["cab-1"].modbus.plan.blocks for pid, _ in block.points}
        assert "c1/lamps" not in read and "ramp_rate" not in read
        assert len(hub.devices["cab-1"].modbus.plan) == 4  # one block read per table


async def test_switch_and_dim_a_circuit_with_feedback(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    async with running_hub(
        city(cabinet("cab-1", "nord", lighting_sim, 1)), tmp_path, plugins=[lighting]
    ) as hub:
        await online(hub, "nord/lighting/cab-1")

        result = await run(hub, "switch_on", "c3")
        assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
        await lighting_sim.next_tick(2)  # the simulated controller takes in its registers
        assert lighting_sim.circuit(1, 3).on is True

        result = await run(hub, "set_level", "c3", level=40)
        assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
        assert result.feedback == pytest.approx(40.0, abs=1.0)
        assert await lighting_sim.raw(1, Table.HOLDING, 2) == [400]  # 0.1 % per count
        await wait_for_point(hub, "nord/lighting/cab-1/c3/level", lambda v: v.value == 40.0)

        result = await run(hub, "switch_off", "c3")
        assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
        await lighting_sim.next_tick(2)
        assert lighting_sim.circuit(1, 3).on is False
        await wait_for_point(hub, "nord/lighting/cab-1/c3/level", lambda v: v.value == 0.0)

        outcomes = [
            (e.data["command"], e.data["member"], e.data["outcome"])
            for e in await command_journal(hub)
        ]
        assert outcomes == [
            ("switch_on", "c3", "succeeded"),
            ("set_level", "c3", "succeeded"),
            ("switch_off", "c3", "succeeded"),
        ]


async def test_dimming_a_circuit_that_is_off_is_refused(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    async with running_hub(
        city(cabinet("cab-1", "nord", lighting_sim, 1)), tmp_path, plugins=[lighting]
    ) as hub:
        await online(hub, "nord/lighting/cab-1")
        with pytest.raises(InterlockedError) as refused:
            await run(hub, "set_level", "c2", level=40)
        assert "circuit is off" in str(refused.value)
        assert lighting_sim.circuit(1, 2).setpoint == 100.0
        [entry] = await command_journal(hub)
        assert entry.data["outcome"] == "refused"
        assert entry.data["interlock"]["point"] == "nord/lighting/cab-1/c2/on"


async def test_dim_every_circuit_of_a_zone_gives_a_result_per_circuit(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    config = city(
        cabinet("cab-1", "nord", lighting_sim, 1),
        cabinet("cab-2", "nord", lighting_sim, 2),
        cabinet("cab-3", "sud", lighting_sim, 3),
    )
    async with running_hub(config, tmp_path, plugins=[lighting]) as hub:
        await online(
            hub, *(f"{z}/lighting/cab-{n}" for z, n in (("nord", 1), ("nord", 2), ("sud", 3)))
        )

        switched = await hub.commands.execute_group("switch_on", {}, OPERATOR, zone="nord")
        assert switched.outcome is CommandOutcome.SUCCEEDED, switched.summary
        dimmed = await hub.commands.execute_group("set_level", {"level": 40}, OPERATOR, zone="nord")
        assert dimmed.outcome is CommandOutcome.SUCCEEDED, dimmed.summary
        assert dimmed.targets == 8
        assert sorted((r.device_id, r.member) for r in dimmed.results) == [
            (cabinet, f"c{n}") for cabinet in ("cab-1", "cab-2") for n in range(1, 5)
        ]
        assert all(r.feedback == pytest.approx(40.0, abs=1.0) for r in dimmed.results)
        # A ramp passing through 40 % already counts as reached: the registers say
        # what was ordered, the simulated controller takes them in at its next tick.
        await lighting_sim.next_tick(2)
        for unit in (1, 2):
            assert [c.setpoint for c in lighting_sim.cabinet(unit).circuits] == [40.0] * 4
        untouched = lighting_sim.cabinet(3).circuits
        assert [(c.on, c.setpoint) for c in untouched] == [(False, 100.0)] * 4

        entries = await command_journal(hub)
        group = [e for e in entries if e.data.get("selector") and e.data["command"] == "set_level"]
        assert len(group) == 1 and group[0].data["summary"] == {"succeeded": 8}
        assert sum(1 for e in entries if e.data.get("group") == dimmed.id) == 9  # 8 targets + order


async def test_lamp_failure_door_and_mains_raise_their_alarms(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    async with running_hub(
        city(cabinet("cab-1", "nord", lighting_sim, 1)), tmp_path, plugins=[lighting]
    ) as hub:
        await online(hub, "nord/lighting/cab-1")
        for alarm_id in ("cab-1:c2:lamp_failure", "cab-1:cabinet_open", "cab-1:mains_lost"):
            assert not hub.alarms.get(alarm_id).active

        lighting_sim.fail_lamps(1, 2, count=3)
        await wait_for_alarm(hub, "cab-1:c2:lamp_failure", lambda a: a.active)
        assert hub.points.value("nord/lighting/cab-1/c2/lamp_failures").value == 3
        assert not hub.alarms.get("cab-1:c1:lamp_failure").active

        lighting_sim.set_door(1, open=True)
        await wait_for_alarm(hub, "cab-1:cabinet_open", lambda a: a.active)

        lighting_sim.set_mains(1, present=False)
        await wait_for_alarm(hub, "cab-1:mains_lost", lambda a: a.active)

        lighting_sim.set_door(1, open=False)
        lighting_sim.set_mains(1, present=True)
        await wait_for_alarm(hub, "cab-1:cabinet_open", lambda a: not a.active)
        await wait_for_alarm(hub, "cab-1:mains_lost", lambda a: not a.active)


async def test_a_stopped_simulator_makes_every_point_bad_then_recovers_without_a_restart(
    tmp_path: Path,
):
    period = 2.5  # two periods: the 5 s the test allows for the loss to show
    port = free_port()
    config = city(
        *(
            device(
                f"cab-{u}", TYPE, "nord", host=HOST, port=port, unit=u, circuits=4, period=period
            )
            for u in (1, 2)
        )
    )
    async with running_hub(config, tmp_path, plugins=[lighting]) as hub:
        async with LightingSimulator(HOST, port, cabinets=2, circuits=4, tick=0.02):
            await online(hub, "nord/lighting/cab-1", "nord/lighting/cab-2")
        # The gateway went away.
        points = [
            p
            for d in ("cab-1", "cab-2")
            for p in hub.points.of_device(d)
            if p.spec.name != "online"
        ]

        def comm_failure(value: PointValue) -> bool:
            return value.quality == Quality.bad("comm_failure")

        with anyio.fail_after(2 * period):
            for entry in points:
                assert await hub.points.wait_for(entry.id, comm_failure, 2 * period)
        for device_id in ("cab-1", "cab-2"):
            await wait_for_alarm(hub, f"{device_id}:communication_lost", lambda a: a.active)

        async with LightingSimulator(HOST, port, cabinets=2, circuits=4, tick=0.02):
            for entry in points:
                await wait_for_point(hub, entry.id, lambda v: v.quality.is_good, timeout=15)
            for device_id in ("cab-1", "cab-2"):
                await wait_for_alarm(hub, f"{device_id}:communication_lost", lambda a: not a.active)


async def test_exception_responses_give_bad_quality_with_their_reason(
    tmp_path: Path, lighting_sim: LightingSimulator
):
    # A vendor's profile that maps the temperature where this controller has nothing.
    profile = (resources.files("cityvisor.hal.profiles") / "lighting_cabinet.toml").read_text()
    vendor = tmp_path / "acme.toml"
    vendor.write_text(
        profile.replace('name = "lighting_cabinet"', 'name = "acme"').replace(
            '[points.temperature]\ntable = "input"\naddress = 0',
            '[points.temperature]\ntable = "input"\naddress = 300',
        )
    )
    config = city(cabinet("cab-1", "nord", lighting_sim, 1, profile=str(vendor)))
    async with running_hub(config, tmp_path, plugins=[lighting]) as hub:
        base = "nord/lighting/cab-1"
        await online(hub, base)
        temperature = await wait_for_point(hub, f"{base}/temperature", lambda v: v.quality.is_bad)
        assert temperature.quality == Quality.bad("config_error:illegal_data_address")
        assert hub.points.value(f"{base}/door_open").quality.is_good

        lighting_sim.set_busy(1)  # every request answered with exception 6
        busy = Quality.bad("device_failure:device_busy")
        await wait_for_point(hub, f"{base}/c1/level", lambda v: v.quality == busy)
        assert hub.points.value(f"{base}/online").value is True  # answered: no restart
        lighting_sim.set_busy(1, False)
        await wait_for_point(hub, f"{base}/c1/level", lambda v: v.quality.is_good)
        assert hub.supervisor.drivers["cab-1"].restarts == 0


def test_check_config_names_what_a_cabinet_cannot_have(tmp_path: Path):
    config = city(
        device("cab-1", TYPE, "nord", host=HOST, circuits=20),
        device("cab-2", TYPE, "nord", host=HOST, profile="/nowhere/acme.toml"),
        device("cab-3", TYPE, "nord", host=HOST, circuits=2, schedule={"circuits": ["c1", "c7"]}),
        device(
            "cab-4", TYPE, "nord", host=HOST, schedule={"steps": [{"at": "23:00", "level": 50}]}
        ),
        device("cab-5", TYPE, "nord", host=HOST, profile="bollard_plc"),
        coordinates=False,
    )
    path = tmp_path / "city.toml"
    path.write_text(config)
    problems = check_config(
        load_config(path), make_plugin_manager(builtins=[lighting.__name__], entry_points=False)
    )
    assert len(problems) == 6, problems
    too_many, unreadable, no_such_circuit, no_circuits, *no_coordinates = problems
    assert "devices[0].config: " in too_many and "at most 16" in too_many
    assert "devices[1].config: " in unreadable and "/nowhere/acme.toml" in unreadable
    assert "devices[2].config: " in no_such_circuit and "no circuit c7" in no_such_circuit
    assert "devices[4].config: " in no_circuits and "no [members.circuit]" in no_circuits
    for index, problem in zip((2, 3), no_coordinates, strict=True):
        assert f"devices[{index}].config.schedule: " in problem and "latitude" in problem
