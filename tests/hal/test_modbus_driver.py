"""The Modbus driver against equipment that fails badly, through a real hub, over real sockets.

Each peer is one of the rogue servers of ``modbus_fixtures`` (our own bytes on
a real TCP socket) or nobody at all; pymodbus's server plays only the
well-behaved side (the lighting simulator). Each test counts what an
operator would see over a fixed window: the ``online`` point sampled, the
alarm's transitions, the driver's restarts and the log lines.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

import cityvisor.plugins.lighting as lighting
from cityvisor import DeviceType, hookimpl
from cityvisor.core.hub import Hub
from cityvisor.core.points import Quality
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point
from tests.hal.modbus_fixtures import HOST, free_port, rogue_server
from tests.plugins.conftest import city, device

pytestmark = pytest.mark.anyio

BASE = "nord/lighting/cab-1"
PERIOD = 0.2
ON_DELAY = 2.0


def cabinet(port: int, type_name: str = "lighting.cabinet") -> str:
    return city(device("cab-1", type_name, "nord", host=HOST, port=port, circuits=2, period=PERIOD))


async def sample_online(hub: Hub, window: float, samples: int = 25) -> list[object]:
    """The ``online`` point's value, sampled evenly over ``window`` seconds."""
    seen = []
    for _ in range(samples):
        await anyio.sleep(window / samples)
        seen.append(hub.points.value(f"{BASE}/online").value)
    return seen


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", ["silent", "garbage", "truncated", "close", "hangup"])
async def test_a_peer_that_never_answers_validly_goes_offline_once_and_stays_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    window = 5.0
    async with rogue_server(mode) as port:
        with caplog.at_level(logging.INFO):
            async with running_hub(cabinet(port), tmp_path, plugins=[lighting]) as hub:
                seen = await sample_online(hub, window)
                lost = hub.alarms.get("cab-1:communication_lost")
                state = hub.supervisor.drivers["cab-1"]
                assert lost.active
                assert True not in seen, seen
                assert (lost.counts["raised"], lost.counts["cleared"]) == (1, 0)
                # Retries 0.2, 0.4, 0.8, 1.6 s apart (plus each attempt's own time):
                # a storm would be 25 restarts in this window.
                assert 1 <= state.restarts <= 6, state.restarts
                level = hub.points.value(f"{BASE}/c1/level")
                assert level.quality.is_bad and level.quality.reason.startswith("comm_failure")
    # One line when the device goes offline (plus the connection's own), not one per retry.
    assert len(warnings(caplog)) <= 3, warnings(caplog)


async def test_a_refused_address_backs_off_across_restarts_and_recovers_within_one_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with caplog.at_level(logging.INFO):
        async with running_hub(cabinet(port), tmp_path, plugins=[lighting]) as hub:
            state = hub.supervisor.drivers["cab-1"]
            lost = hub.alarms.get("cab-1:communication_lost")
            seen = await sample_online(hub, 6.5)
            assert True not in seen
            # Refused at once, retried 0.2, 0.4, 0.8, 1.6, 3.2 s apart: the endpoint's
            # count survived each restart, and the supervisor did not add its own.
            assert 3 <= state.restarts <= 6, state.restarts
            step = state.next_attempt_in
            assert step >= 1.6, state.history
            assert len(warnings(caplog)) <= 3, warnings(caplog)

            async with LightingSimulator(HOST, port, cabinets=1, circuits=2, tick=0.02):
                back = anyio.current_time()
                await wait_for_point(hub, f"{BASE}/online", lambda v: v.value is True, step + 5)
                # Once the equipment answers: at most the step being waited, one poll.
                # (Plus a second and a half for the connection on a loaded machine.)
                assert anyio.current_time() - back < step + PERIOD + 1.5
                await wait_for_alarm(hub, "cab-1:communication_lost", lambda a: not a.active)
                assert state.failing == 0

            # Lost again: a success reset the backoff, so the first retry is quick.
            await wait_for_point(hub, f"{BASE}/online", lambda v: v.value is False)
            assert state.next_attempt_in <= 0.5, state.history
            assert (lost.counts["raised"], lost.counts["cleared"]) == (2, 1)
    back_online = [r.getMessage() for r in caplog.records if "online again" in r.getMessage()]
    assert len(back_online) == 1, back_online


class QuickFaultCabinet(lighting.LightingCabinet):
    """A cabinet whose device-fault alarm waits 2 s instead of 10 (the test's patience)."""

    type_name = "lighting.quick_fault_cabinet"
    device_fault_alarm = replace(
        lighting.LightingCabinet.alarm_specs["device_fault"], on_delay=ON_DELAY
    )


class QuickFaultPlugin:
    @hookimpl
    def cityvisor_device_types(self) -> list[type[DeviceType]]:
        return [QuickFaultCabinet]


async def test_a_device_refusing_every_request_raises_its_fault_alarm_not_communication_lost(
    tmp_path: Path,
) -> None:
    async with rogue_server("exception") as port:
        config = cabinet(port, "lighting.quick_fault_cabinet")
        async with running_hub(config, tmp_path, plugins=[QuickFaultPlugin()]) as hub:
            await wait_for_point(hub, f"{BASE}/online", lambda v: v.value is True)
            failure = Quality.bad("device_failure:server_device_failure")
            assert hub.points.value(f"{BASE}/c1/level").quality == failure
            text = "exception 4 (server_device_failure)"
            faulty = await wait_for_point(hub, f"{BASE}/device_fault", lambda v: v.value == text)
            fault = await wait_for_alarm(hub, "cab-1:device_fault", lambda a: a.active)
            assert fault.raised_at is not None
            assert fault.raised_at - faulty.received_ts >= ON_DELAY * 1000 - 50  # its on-delay
            assert fault.message["en"] == "Device fault: exception 4 (server_device_failure)"
            assert "exception 4" in fault.message["fr"]
            seen = await sample_online(hub, 3.0, samples=15)
            assert set(seen) == {True}  # it answers: no restart, no communication alarm
            lost = hub.alarms.get("cab-1:communication_lost")
            assert lost.counts["raised"] == 0
            assert fault.counts["raised"] == 1 and fault.counts["cleared"] == 0
            assert hub.supervisor.drivers["cab-1"].restarts == 0


async def test_a_device_busy_for_less_than_the_on_delay_raises_no_fault(
    tmp_path: Path, lighting_sim: LightingSimulator
) -> None:
    config = city(
        device("cab-1", "lighting.quick_fault_cabinet", "nord", host=HOST, port=lighting_sim.port,
               circuits=2, period=PERIOD)
    )  # fmt: skip
    async with running_hub(config, tmp_path, plugins=[QuickFaultPlugin()]) as hub:
        await wait_for_point(hub, f"{BASE}/c1/level", lambda v: v.quality.is_good)
        lighting_sim.set_busy(1)  # every request answered with exception 6
        await wait_for_point(
            hub, f"{BASE}/device_fault", lambda v: v.value == "exception 6 (device_busy)"
        )
        await anyio.sleep(0.5)  # busy for well under the on-delay
        lighting_sim.set_busy(1, False)
        await wait_for_point(hub, f"{BASE}/device_fault", lambda v: v.value == "")
        await anyio.sleep(ON_DELAY)
        assert hub.alarms.get("cab-1:device_fault").counts["raised"] == 0
