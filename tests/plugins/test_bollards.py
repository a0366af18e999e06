"""The bollards plugin through a real hub, over Modbus/TCP, against the bollard-PLC simulator."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import cityvisor.plugins.bollards as bollards
from cityvisor.core.commands import (
    CommandOutcome,
    CommandRequest,
    CommandResult,
    GroupResult,
    InterlockedError,
)
from cityvisor.core.hub import Hub
from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point
from tests.hal.modbus_fixtures import HOST
from tests.plugins.conftest import OPERATOR, city, command_journal, device

pytestmark = pytest.mark.anyio

BASE = "nord/bollards/bol-1"
DOWN, UP, MOVING, FAULT = range(4)


def config(sim: BollardSimulator, travel_time: float = 5.0) -> str:
    """Bollard 1 of the simulator, polled every 0.1 s; orders may take ``travel_time`` s."""
    return city(
        device(
            "bol-1",
            "bollards.bollard",
            "nord",
            host=HOST,
            port=sim.port,
            unit=1,
            period=0.1,
            travel_time=travel_time,
        )
    )


async def online(hub: Hub) -> None:
    await wait_for_point(hub, f"{BASE}/online", lambda v: v.value is True)
    await wait_for_point(hub, f"{BASE}/position", lambda v: v.quality.is_good)


def order(command: str, confirmation: str | None = None) -> CommandRequest:
    return CommandRequest("bol-1", command, {}, None, OPERATOR, confirmation=confirmation)


async def test_the_bollard_points_arrive(tmp_path: Path, bollard_sim: BollardSimulator):
    async with running_hub(config(bollard_sim), tmp_path, plugins=[bollards]) as hub:
        await online(hub)
        values = {p.spec.name: p.current for p in hub.points.of_device("bol-1")}
        assert {name: v.value for name, v in values.items()} == {
            "online": True,
            "position": DOWN,
            "height": 0.0,
            "vehicle_on_loop": False,
            "mode": 0,
            "fault_code": 0,
            "command_failed": False,
            "device_fault": "",  # the device answers without refusing
        }
        assert all(v.quality.is_good for v in values.values())
        assert hub.points.get(f"{BASE}/position").spec.label(DOWN) == "down"

        bollard_sim.set_mode(1, "maintenance")
        bollard_sim.vehicle_arrives(1)
        await wait_for_point(hub, f"{BASE}/mode", lambda v: v.value == 2)
        await wait_for_point(hub, f"{BASE}/vehicle_on_loop", lambda v: v.value is True)


async def test_raise_and_lower_need_a_confirmation_and_their_feedback(
    tmp_path: Path, bollard_sim: BollardSimulator
):
    async with running_hub(config(bollard_sim), tmp_path, plugins=[bollards]) as hub:
        await online(hub)
        selected = await hub.commands.execute(order("raise"))
        assert selected.outcome is CommandOutcome.PENDING_CONFIRMATION and selected.token
        assert bollard_sim.bollard(1).direction == 0  # nothing moves before the confirmation

        raised = await hub.commands.confirm(selected.token, OPERATOR)
        assert isinstance(raised, CommandResult)
        assert raised.outcome is CommandOutcome.SUCCEEDED, raised.detail
        assert raised.feedback == UP and bollard_sim.bollard(1).position == "up"

        selected = await hub.commands.execute(order("lower"))
        lowered = await hub.commands.execute(order("lower", confirmation=selected.token))
        assert lowered.outcome is CommandOutcome.SUCCEEDED, lowered.detail
        assert bollard_sim.bollard(1).position == "down"

        outcomes = [(e.data["command"], e.data["outcome"]) for e in await command_journal(hub)]
        assert outcomes == [
            ("raise", "pending_confirmation"),
            ("raise", "succeeded"),
            ("lower", "pending_confirmation"),
            ("lower", "succeeded"),
        ]
        assert not hub.alarms.get("bol-1:blocked").active


async def test_raise_is_refused_while_a_vehicle_is_on_the_loop(
    tmp_path: Path, bollard_sim: BollardSimulator
):
    async with running_hub(config(bollard_sim), tmp_path, plugins=[bollards]) as hub:
        await online(hub)
        bollard_sim.vehicle_arrives(1)
        await wait_for_point(hub, f"{BASE}/vehicle_on_loop", lambda v: v.value is True)

        with pytest.raises(InterlockedError) as refused:
            await hub.commands.execute(order("raise"))
        assert "vehicle on the loop" in str(refused.value)
        assert refused.value.text["fr"].startswith("verrouillé : véhicule sur la boucle")

        # Selected while the loop was free, confirmed once a vehicle stopped on it: refused too.
        bollard_sim.vehicle_leaves(1)
        await wait_for_point(hub, f"{BASE}/vehicle_on_loop", lambda v: v.value is False)
        selected = await hub.commands.execute(order("raise"))
        bollard_sim.vehicle_arrives(1)
        await wait_for_point(hub, f"{BASE}/vehicle_on_loop", lambda v: v.value is True)
        with pytest.raises(InterlockedError):
            await hub.commands.confirm(selected.token, OPERATOR)
        await bollard_sim.next_tick(3)
        assert bollard_sim.bollard(1).position == "down"  # never raised onto the vehicle

        refusals = [e for e in await command_journal(hub) if e.data["outcome"] == "refused"]
        assert len(refusals) == 2
        for entry in refusals:
            assert entry.user == "olivia" and entry.device == "bol-1"
            assert entry.data["interlock"]["point"] == f"{BASE}/vehicle_on_loop"
            assert entry.data["interlock"]["value"] is True
            assert entry.data["reason"] == {
                "fr": "véhicule sur la boucle",
                "en": "vehicle on the loop",
            }


async def test_orders_are_refused_unless_the_key_switch_is_on_remote(
    tmp_path: Path, bollard_sim: BollardSimulator
):
    async with running_hub(config(bollard_sim), tmp_path, plugins=[bollards]) as hub:
        await online(hub)
        bollard_sim.set_mode(1, "local")
        await wait_for_point(hub, f"{BASE}/mode", lambda v: v.value == 1)
        with pytest.raises(InterlockedError) as refused:
            await hub.commands.execute(order("lower"))
        assert "key switch not in remote" in str(refused.value)


async def test_a_bollard_that_never_reaches_its_target_fails_the_order_and_raises_an_alarm(
    tmp_path: Path, bollard_sim: BollardSimulator
):
    async with running_hub(
        config(bollard_sim, travel_time=3.0), tmp_path, plugins=[bollards]
    ) as hub:
        await online(hub)
        selected = await hub.commands.execute(order("raise"))
        results: list[CommandResult | GroupResult] = []

        async def confirm() -> None:
            results.append(await hub.commands.confirm(selected.token, OPERATOR))

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm)
            with anyio.fail_after(5):  # half-way up, the hydraulics give out
                while bollard_sim.bollard(1).direction == 0:
                    await bollard_sim.next_tick()
            bollard_sim.inject_fault(1, code=2)
        [result] = results
        assert result.outcome is CommandOutcome.FEEDBACK_TIMEOUT
        assert result.feedback == FAULT
        assert "expected 1 within 3 s" in result.detail

        await wait_for_alarm(hub, "bol-1:blocked", lambda a: a.active)
        await wait_for_alarm(hub, "bol-1:fault", lambda a: a.active)
        assert hub.points.value(f"{BASE}/fault_code").value == 2

        # Refused while in fault; a reset clears it and the bollard settles down.
        with pytest.raises(InterlockedError, match="bollard in fault"):
            await hub.commands.execute(order("lower"))
        reset = await hub.commands.execute(order("reset"))
        assert reset.outcome is CommandOutcome.SUCCEEDED, reset.detail
        await wait_for_point(hub, f"{BASE}/position", lambda v: v.value == DOWN)
        await wait_for_alarm(hub, "bol-1:fault", lambda a: not a.active)

        # The next order that reaches its target clears the blocked alarm.
        selected = await hub.commands.execute(order("raise"))
        raised = await hub.commands.confirm(selected.token, OPERATOR)
        assert raised.outcome is CommandOutcome.SUCCEEDED
        await wait_for_alarm(hub, "bol-1:blocked", lambda a: not a.active)
