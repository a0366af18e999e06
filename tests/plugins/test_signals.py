"""The signals family through a real hub and the simulated NTCIP controller.

Junctions run ten times faster than real time; every wait is on an event (a
point value, an alarm) with a generous timeout, since the machine is shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityvisor import Role, User
from cityvisor.core.commands import CommandOutcome, InterlockedError
from cityvisor.hal.ntcip import UnitFlashStatus
from cityvisor.hal.sim.signal_controller import SimulatedController
from cityvisor.plugins import signals
from cityvisor.plugins.signals import PHASE_STATES, SignalController
from cityvisor.testing import (
    check_device_type,
    running_hub,
    send_command,
    wait_for_alarm,
    wait_for_point,
)
from tests.hal.snmpd import free_udp_port
from tests.plugins.conftest import city, command_journal, device

pytestmark = pytest.mark.anyio

WAIT = 15.0
GREEN = PHASE_STATES.index("green")
OPERATOR = User("olivia", Role.OPERATOR, frozenset({"*"}))


def controller_config(sim: SimulatedController, **settings: Any) -> dict[str, Any]:
    host, port = sim.address
    config = {"host": host, "port": port, "write_community": "private", "poll_period": 0.2}
    config |= {"timeout": 0.5, "detectors": [1, 2], "feedback_time": 10.0}
    return config | settings


@pytest.fixture
async def junctions() -> AsyncIterator[list[SimulatedController]]:
    """Two crossroads controllers; detector 1 on phase 2, detector 2 on phase 4."""
    async with (
        SimulatedController("tsc-a", time_scale=10, detectors={1: 2, 2: 4}, seed=1) as a,
        SimulatedController("tsc-b", time_scale=10, detectors={1: 2, 2: 4}, seed=2) as b,
    ):
        yield [a, b]


def deployment(junctions: list[SimulatedController]) -> str:
    a, b = junctions
    return city(
        device("j-a", "signals.controller", "nord", **controller_config(a)),
        device("j-b", "signals.controller", "nord", **controller_config(b)),
    )


POINT = "nord/signals/j-a/"


async def test_the_controller_keeps_the_plugin_contract():
    port = free_udp_port()
    config = {"host": "127.0.0.1", "port": port, "poll_period": 0.2, "timeout": 0.3}
    await check_device_type(
        SignalController,
        config | {"detectors": [1]},
        lambda: SimulatedController(port=port, time_scale=10, detectors={1: 2}),
    )


async def test_phases_cycle_live_and_the_map_sees_them(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "p2/state", lambda v: v.value == GREEN, timeout=WAIT)
        await wait_for_point(hub, POINT + "p4/state", lambda v: v.value == GREEN, timeout=WAIT)
        assert hub.points.value(POINT + "p2/state").value != GREEN
        assert hub.points.value(POINT + "plan").value == 1
        assert hub.points.value(POINT + "plan_name").value == "Day"
        assert hub.points.value(POINT + "central_control").value is False
        occupancy = hub.points.value(POINT + "d1/occupancy")
        assert occupancy.quality.is_good and 0 <= occupancy.value <= 100


async def test_a_conflicting_hold_is_refused_with_its_reason(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        result = await send_command(hub, "j-a", "hold_phase", "p2", user=OPERATOR)
        assert result.ok, result
        await wait_for_point(hub, POINT + "p2/state", lambda v: v.value == GREEN, timeout=WAIT)
        await wait_for_point(hub, POINT + "p4/hold_conflict", lambda v: v.value == "p2")
        with pytest.raises(InterlockedError) as refused:
            await send_command(hub, "j-a", "hold_phase", "p4", user=OPERATOR)
        assert "a conflicting phase is already held" in refused.value.message
        assert "p4/hold_conflict = 'p2'" in refused.value.message
        assert not junctions[0].holds & {4}
        # A compatible phase may be held with it.
        assert (await send_command(hub, "j-a", "hold_phase", "p6", user=OPERATOR)).ok
        journal = await command_journal(hub)
        outcomes = [(e.data["command"], e.data["member"], e.data["outcome"]) for e in journal]
        assert ("hold_phase", "p4", CommandOutcome.REFUSED.value) in outcomes
        assert junctions[0].conflicts_detected == 0
        assert (await send_command(hub, "j-a", "return_to_schedule", user=OPERATOR)).ok
        assert junctions[0].holds == set()


async def test_a_hold_racing_the_interlock_is_refused_by_the_fresh_read(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        junctions[0].holds = {2}  # held an instant ago, by another central: no poll saw it yet
        result = await send_command(hub, "j-a", "hold_phase", "p8", user=OPERATOR)
        assert not result.ok
        assert "phase 8 conflicts with held phase(s) 2" in str(result.as_json())
        assert junctions[0].holds == {2}
        assert junctions[0].flash_status is UnitFlashStatus.NOT_FLASH


async def test_flash_and_back_raise_and_clear_the_flash_alarm(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        assert (await send_command(hub, "j-a", "go_to_flash", user=OPERATOR)).ok
        await wait_for_alarm(hub, "j-a:in_flash", lambda a: a.active, timeout=WAIT)
        assert hub.points.value(POINT + "p2/state").value == PHASE_STATES.index("flash")
        assert not hub.alarms.get("j-a:conflict_monitor").active
        assert (await send_command(hub, "j-a", "select_plan", plan=2, user=OPERATOR)).ok
        await wait_for_alarm(hub, "j-a:in_flash", lambda a: not a.active, timeout=WAIT)
        assert hub.points.value(POINT + "plan").value == 2
        assert hub.points.value(POINT + "central_control").value is True
        result = await send_command(hub, "j-a", "select_plan", plan=7, user=OPERATOR)
        assert not result.ok and "no plan 7" in str(result.as_json())


async def test_the_conflict_monitor_alarm_is_critical(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        junctions[0].holds = {2, 4}
        junctions[0]._monitor(frozenset())  # what the controller does on such holds
        alarm = await wait_for_alarm(hub, "j-a:conflict_monitor", lambda a: a.active, timeout=WAIT)
        assert alarm.priority.name == "CRITICAL"


async def test_bus_priority_switched_off_for_a_commune_refuses_requests(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        for name in ("j-a", "j-b"):
            await wait_for_point(
                hub, f"nord/signals/{name}/online", lambda v: v.value is True, timeout=WAIT
            )
        admin = User("crise", Role.SUPERVISOR, frozenset({"*"}))
        group = await hub.commands.execute_group("disable_bus_priority", {}, admin, zone="nord")
        assert group.summary.get("succeeded") == 2, group.as_json()
        with pytest.raises(InterlockedError, match="bus priority is off"):
            await send_command(
                hub, "j-b", "request_priority", vehicle="bus-7", approach="west", eta=20
            )
        group = await hub.commands.execute_group("enable_bus_priority", {}, admin, zone="nord")
        assert group.summary.get("succeeded") == 2, group.as_json()
        result = await send_command(
            hub, "j-b", "request_priority", vehicle="bus-7", approach="west", eta=20
        )
        assert result.ok, result
        request = next(r for r in junctions[1].requests.values() if r.vehicle == "bus-7")
        assert request.phase == 2  # the bus lane of the west approach
        result = await send_command(
            hub, "j-b", "request_priority", vehicle="bus-8", approach="sky", eta=20
        )
        assert not result.ok and "no approach 'sky'" in str(result.as_json())


async def test_a_broken_loop_raises_the_detector_alarm(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        junctions[0].set_detector_fault(2)
        await wait_for_alarm(hub, "j-a:d2:detector_failed", lambda a: a.active, timeout=WAIT)
        await wait_for_point(hub, POINT + "d2/occupancy", lambda v: not v.quality.is_good)


async def test_the_ring_diagram_is_served_live_and_only_to_the_junctions_readers(
    tmp_path: Path, junctions
):
    from cityvisor.plugins import web
    from cityvisor.testing import api_client

    config = deployment(junctions) + '\n[web]\nport = 0\n[security]\nzone_reading = "own"\n'
    async with running_hub(config, tmp_path, plugins=[signals, web]) as hub:
        await wait_for_point(hub, POINT + "p2/state", lambda v: v.value == GREEN, timeout=WAIT)
        async with api_client(hub, "nord-op", role="operator", zones=["nord"]) as client:
            status, ring = await client.get("/api/v1/signals/j-a/ring")
            assert status == 200, ring
            assert ring["junction"] == "crossroads" and ring["stages"] == [[2, 6], [4, 8]]
            assert ring["greens"] == [30, 20] and ring["plan"] == 1
            p2 = next(p for p in ring["phases"] if p["number"] == 2)
            assert p2["state"] == "green" and p2["bus"] and p2["conflicts"] == [4, 8]
            # The device's detail links the page, and the link leads to it.
            status, detail = await client.get("/api/v1/devices/j-a")
            assert status == 200, detail
            (page_link,) = detail["pages"]
            assert page_link["url"] == "/plugins/signals/ring?device=j-a"
            assert page_link["label"] == {"fr": "Diagramme des phases", "en": "Phase ring diagram"}
            status, page = await client.get(page_link["url"])
            assert status == 200 and 'src="/plugins/signals/ring.js"' in page
            status, script = await client.get("/plugins/signals/ring.js")
            assert status == 200 and "export function draw" in script
            status, _body = await client.get("/api/v1/signals/j-z/ring")
            assert status == 404
        async with api_client(hub, "sud-op", role="operator", zones=["sud"]) as client:
            status, body = await client.get("/api/v1/signals/j-a/ring")
            assert status == 404, body  # another zone's junction is unknown to them


async def test_central_orders_wait_while_a_technician_has_the_junction(tmp_path: Path, junctions):
    async with running_hub(deployment(junctions), tmp_path, plugins=[signals]) as hub:
        await wait_for_point(hub, POINT + "online", lambda v: v.value is True, timeout=WAIT)
        junctions[0].set_local_control(True)
        await wait_for_alarm(hub, "j-a:local_takeover", lambda a: a.active, timeout=WAIT)
        with pytest.raises(InterlockedError, match="under local control"):
            await send_command(hub, "j-a", "select_plan", plan=2, user=OPERATOR)
        with pytest.raises(InterlockedError, match="under local control"):
            await send_command(hub, "j-a", "hold_phase", "p2", user=OPERATOR)
        assert junctions[0].called_pattern == 0 and junctions[0].holds == set()
