"""NTCIP 1202 against the simulated controller: net-snmp's tools as a central, and our client.

The simulator is a real SNMP agent on a free UDP port of 127.0.0.1; net-snmp's
``snmpget``/``snmpset`` talk to it with numeric OIDs, as a central that knows
the MIB would. Phases run ten times faster than real time (``time_scale``).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from pysnmp.proto import rfc1902

from cityvisor.hal import ntcip
from cityvisor.hal.ntcip import (
    Junction,
    JunctionError,
    NtcipController,
    PriorityStatus,
    UnitControlStatus,
    UnitFlashStatus,
    load_junction,
)
from cityvisor.hal.sim.signal_controller import SimulatedController
from cityvisor.hal.snmp import CommunityCredentials, SnmpManager, SnmpSetRefusedError
from tests.hal.snmpd import find_program

pytestmark = pytest.mark.anyio

WAIT = 15.0


def net_snmp(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``snmpget``/``snmpset`` with numeric output and no MIB files (blocking)."""
    return subprocess.run(
        [find_program(program), "-v2c", "-On", "-Oqv", "-t", "2", "-r", "1", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MIBS": ""},
        timeout=20,
        check=False,
    )


async def run_tool(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: net_snmp(program, *args))


async def polled_until(read: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool]) -> Any:
    """Read the controller every 50 ms (a central polls) until ``predicate`` holds."""
    with anyio.fail_after(WAIT):
        for _attempt in itertools.count():
            value = await read()
            if predicate(value):
                return value
            await anyio.sleep(0.05)
    raise AssertionError("unreachable")


@pytest.fixture
async def controller() -> AsyncIterator[SimulatedController]:
    async with SimulatedController("tsc-test", time_scale=10, detectors={1: 2, 2: 4}) as sim:
        yield sim


def agent(sim: SimulatedController) -> str:
    host, port = sim.address
    return f"{host}:{port}"


# --------------------------------------------------------------------------- junction profiles


def test_the_bundled_junctions_declare_symmetric_conflicts():
    crossroads = load_junction("crossroads")
    assert crossroads.conflicts[4] == {2, 6}  # declared as 2 = [4, 8] and 6 = [4, 8]
    assert crossroads.conflicting(2, {4, 6}) == [4]
    dual = load_junction("dual_ring")
    for stage in dual.stages:
        assert not any(dual.conflicting(p, stage) for p in stage)


def test_a_stage_of_conflicting_phases_is_refused_with_its_key():
    text = """
stages = [[2, 4]]
[phases.2]
[phases.4]
[conflicts]
2 = [4]
[plans.1]
greens = [10]
"""
    with pytest.raises(
        JunctionError, match=r"bad\.toml: stages\[0\]: phase 2 conflicts with \[4\]"
    ):
        Junction.from_toml(text, source="bad.toml")


def test_a_conflict_on_an_unknown_phase_is_refused():
    text = "stages = [[2]]\n[phases.2]\n[conflicts]\n2 = [9]\n[plans.1]\ngreens = [5]\n"
    with pytest.raises(JunctionError, match=r"conflicts\.2: unknown phase\(s\) \[9\]"):
        Junction.from_toml(text, source="j.toml")


def test_an_unknown_junction_names_the_bundled_ones():
    with pytest.raises(JunctionError, match="crossroads"):
        load_junction("roundabout")


# --------------------------------------------------------------------------- net-snmp as a central


async def test_snmpget_reads_phase_greens_and_the_running_pattern(controller):
    result = await run_tool(
        "snmpget",
        "-c",
        "public",
        agent(controller),
        f"{ntcip.PHASE_STATUS_GREENS}.1",
        ntcip.COORD_PATTERN_STATUS,
        ntcip.UNIT_CONTROL_STATUS,
    )
    assert result.returncode == 0, result.stderr
    greens, pattern, control = result.stdout.split()
    assert ntcip.phases_of(int(greens), 1) in ({2, 6}, {4, 8}, set())
    assert int(pattern) == 1  # the controller's own schedule
    assert int(control) == UnitControlStatus.TIMEBASE


async def test_snmpset_calls_a_plan_and_the_controller_runs_it(controller):
    result = await run_tool(
        "snmpset", "-c", "private", agent(controller), ntcip.SYSTEM_PATTERN_CONTROL, "i", "2"
    )
    assert result.returncode == 0, result.stderr
    result = await run_tool(
        "snmpget", "-c", "public", agent(controller), ntcip.COORD_PATTERN_STATUS
    )
    assert result.stdout.strip() == "2"
    assert controller.control_status is UnitControlStatus.SYSTEM_CONTROL


async def test_snmpset_of_an_unknown_plan_is_wrong_value(controller):
    result = await run_tool(
        "snmpset", "-c", "private", agent(controller), ntcip.SYSTEM_PATTERN_CONTROL, "i", "9"
    )
    assert result.returncode != 0
    assert "wrongValue" in result.stderr
    assert controller.running_pattern == 1


async def test_the_read_community_cannot_set(controller):
    result = await run_tool(
        "snmpset", "-c", "public", agent(controller), ntcip.SYSTEM_PATTERN_CONTROL, "i", "255"
    )
    assert result.returncode != 0
    assert "noAccess" in result.stderr
    assert controller.flash_status is UnitFlashStatus.NOT_FLASH


async def test_conflicting_holds_from_a_central_trip_the_conflict_monitor(controller):
    # A central that ignores the conflict table: phases 2 and 4 held at once.
    both = str(ntcip.bitmap({2, 4}, 1))
    result = await run_tool(
        "snmpset", "-c", "private", agent(controller), f"{ntcip.PHASE_CONTROL_HOLD}.1", "i", both
    )
    assert result.returncode == 0, result.stderr
    result = await run_tool(
        "snmpget",
        "-c",
        "public",
        agent(controller),
        ntcip.UNIT_FLASH_STATUS,
        f"{ntcip.PHASE_STATUS_GREENS}.1",
    )
    flash, greens = result.stdout.split()
    assert int(flash) == UnitFlashStatus.FAULT_MONITOR
    assert int(greens) == 0
    assert controller.conflicts_detected == 1
    controller.reset_fault()
    assert controller.flash_status is UnitFlashStatus.NOT_FLASH


# --------------------------------------------------------------------------- the simulator's phases


def test_the_controller_never_shows_two_conflicting_greens():
    """Random holds, plan calls and priority requests, a clock run for an hour of cycles."""
    now = [0.0]
    sim = SimulatedController("tsc", "dual_ring", time_scale=5, clock=lambda: now[0], seed=3)
    junction = sim.junction
    setters = sim.mib.setters
    hold = setters[(*ntcip_oid(ntcip.PHASE_CONTROL_HOLD), 1)]
    pattern = setters[ntcip_oid(ntcip.SYSTEM_PATTERN_CONTROL)]
    rng = random.Random(12)
    for _step in range(3000):
        now[0] += rng.uniform(0.05, 1.5)
        action = rng.random()
        if action < 0.05:
            # Only holds the table allows: the central's rule; the monitor must stay quiet.
            first = rng.choice(list(junction.phases))
            partners = [p for p in junction.phases if not junction.conflicting(p, {first})]
            held = {first, rng.choice(partners)}
            if not any(junction.conflicting(p, held) for p in held):
                hold(rfc1902.Integer32(ntcip.bitmap(held, 1)))()
        elif action < 0.08:
            hold(rfc1902.Integer32(0))()
        elif action < 0.1:
            pattern(rfc1902.Integer32(rng.choice([0, 1, 2, 254])))()
        sim.advance()
        greens = sim.phase_colours()[0]
        assert not any(junction.conflicting(p, greens) for p in greens), (now[0], greens)
    assert sim.conflicts_detected == 0
    assert len({greens for _t, greens in sim.green_history}) == len(junction.stages)


def ntcip_oid(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


async def test_the_client_reads_status_holds_and_detectors(controller):
    async with SnmpManager() as manager:
        client = manager.client(*controller.address, credentials=CommunityCredentials("private"))
        tsc = NtcipController(client, [2, 4, 6, 8], detectors=[1, 2])
        controller.set_detector_fault(2)
        status = await tsc.read_status()
        assert status.detector_faults == {2}
        assert status.occupancy[2] is None and 0 <= status.occupancy[1] <= 100
        await tsc.set_holds({4})
        status = await polled_until(tsc.read_status, lambda s: s.greens == {4, 8})
        assert status.holds == {4}
        assert status.control == UnitControlStatus.SYSTEM_CONTROL
        await anyio.sleep(1.0)  # ten seconds of the junction: still green, held
        assert (await tsc.read_status()).greens == {4, 8}


async def test_a_priority_request_is_served_at_the_buses_arrival(controller):
    async with SnmpManager() as manager:
        client = manager.client(*controller.address, credentials=CommunityCredentials("private"))
        tsc = NtcipController(client, [2, 4, 6, 8])
        slot = await tsc.request_priority(41, vehicle="bus-12", phase=4, eta=10)
        request = controller.requests[slot]
        assert (request.vehicle, request.phase, request.status) == (
            "bus-12",
            4,
            PriorityStatus.QUEUED,
        )
        await polled_until(tsc.priority_statuses, lambda s: s[slot] == PriorityStatus.SERVED)
        # Served means phase 4 was green when the bus arrived.
        arrival = request.arrives_at
        assert any(4 in greens and t <= arrival + 0.5 for t, greens in controller.green_history)


async def test_a_request_for_an_unknown_phase_is_refused_whole(controller):
    async with SnmpManager() as manager:
        client = manager.client(*controller.address, credentials=CommunityCredentials("private"))
        tsc = NtcipController(client, [2, 4, 6, 8])
        with pytest.raises(SnmpSetRefusedError, match="wrongValue"):
            await tsc.request_priority(1, vehicle="bus-3", phase=5, eta=10)
        # All or nothing: not even the vehicle of the refused row was written.
        assert all(r.vehicle == "" for r in controller.requests.values())
