"""Rules through a real hub and the demo tanks: onsets, durations, actions, failures."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from cityvisor.automation import failure_alarm_id
from cityvisor.core.users import Role, User
from cityvisor.plugins import automation, demo
from cityvisor.plugins import ops as ops_plugin
from cityvisor.plugins.ops import operations
from cityvisor.testing import running_hub, send_command, wait_for_alarm, wait_for_point

from .conftest import LEVEL_A, LEVEL_B, HubFactory, firings, rules_ready, write_config

pytestmark = pytest.mark.anyio


async def move(hub, device: str, setpoint: float) -> None:
    """Drive a tank to a level and wait until it is there."""
    base = hub.devices[device].base_id
    await wait_for_point(hub, f"{base}/online", lambda v: v.value is True)
    result = await send_command(hub, device, "set_level", setpoint=setpoint)
    assert result.ok, result
    await wait_for_point(hub, f"{base}/level", lambda v: abs(v.value - setpoint) < 0.5)


ONSET = f"""
[[rule]]
name = "tank-a-high"
when = "{LEVEL_A} > 80"

[[rule.then]]
notify = "Tank A is high"
"""


async def test_fires_once_per_onset_not_while_it_holds(hub_with_rules: HubFactory) -> None:
    async with hub_with_rules(ONSET) as hub:
        await move(hub, "tank-a", 90)
        await move(hub, "tank-a", 95)  # still above: no new firing
        await anyio.sleep(0.5)
        fired = await firings(hub, "tank-a-high")
        assert len(fired) == 1
        assert fired[0].user == "automation"
        assert fired[0].data["values"][LEVEL_A] > 80
        await move(hub, "tank-a", 50)
        await move(hub, "tank-a", 90)
        await anyio.sleep(0.3)
        assert len(await firings(hub, "tank-a-high")) == 2
        notes = await hub.store.query_journal(kinds=["note"])
        assert [n.message for n in notes].count("Tank A is high") == 2


HELD = f"""
[[rule]]
name = "tank-b-high-long"
when = "{LEVEL_B} > 80 for 1.5 s"

[[rule.then]]
notify = "Tank B high for 1.5 s"

[[rule.then]]
device = "tank-n1"
command = "set_level"
arguments = {{ setpoint = 20 }}
"""


async def test_a_short_excursion_does_not_fire_a_for_condition(hub_with_rules: HubFactory) -> None:
    async with hub_with_rules(HELD) as hub:
        await move(hub, "tank-b", 90)
        await anyio.sleep(0.5)
        await move(hub, "tank-b", 40)
        await anyio.sleep(1.5)
        assert await firings(hub, "tank-b-high-long") == []
        await move(hub, "tank-b", 90)
        # Nothing changes while it holds: the engine's own timer fires it.
        await wait_for_point(hub, "nord/demo/tank-n1/setpoint", lambda v: v.value == 20)
        await anyio.sleep(1.0)
        assert len(await firings(hub, "tank-b-high-long")) == 1


GROUP_AND_FAILURE = f"""
[[rule]]
name = "drain-north"
when = "{LEVEL_A} > 80 and not {LEVEL_B} > 80"

[[rule.then]]
group = "set_level"
zone = "nord"
tag = "reservoir"
arguments = {{ setpoint = 30 }}

[[rule]]
name = "refill-b"
when = "{LEVEL_A} > 80"

[[rule.then]]
device = "tank-b"
command = "set_level"
arguments = {{ setpoint = 70 }}

[[rule.then]]
notify = "after the refused command"
"""


async def test_group_command_and_an_interlock_refusal_raises_the_rules_alarm(
    hub_with_rules: HubFactory,
) -> None:
    async with hub_with_rules(GROUP_AND_FAILURE) as hub:
        # tank-b under maintenance: its set_level is interlocked.
        await move(hub, "tank-b", 40)
        result = await send_command(hub, "tank-b", "toggle_maintenance")
        assert result.ok, result
        await wait_for_point(hub, "centre/demo/tank-b/maintenance", lambda v: v.value is True)
        await move(hub, "tank-a", 90)
        for tank in ("tank-n1", "tank-n2"):
            await wait_for_point(hub, f"nord/demo/{tank}/setpoint", lambda v: v.value == 30)
        alarm = await wait_for_alarm(hub, failure_alarm_id("refill-b"), lambda a: a.active)
        assert alarm.active
        assert not hub.alarms.get(failure_alarm_id("drain-north")).active
        commands = await hub.store.query_journal(kinds=["command"], user="automation", limit=500)
        assert any(e.device == "tank-b" for e in commands)
        # The refusal did not stop the rule's next action, nor the other rule.
        notes = await hub.store.query_journal(kinds=["note"])
        assert [n.message for n in notes] == ["after the refused command"]
        assert len(await firings(hub, "drain-north")) == 1


CRISIS = """
[[rule]]
name = "crisis-lights"
when = "crisis open"

[[rule.then]]
group = "set_level"
zone = "nord"
arguments = { setpoint = 15 }
"""


async def test_opening_a_crisis_fires_a_crisis_rule(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, CRISIS, extra="[plugins.ops]\nenabled = true\n[plugins.ops.trackers]\nport = 0\n"
    )
    async with running_hub(path, tmp_path, plugins=[demo, ops_plugin, automation]) as hub:
        await rules_ready(hub)
        await move(hub, "tank-n1", 60)
        await anyio.sleep(0.3)
        assert await firings(hub, "crisis-lights") == []
        ops = operations(hub)
        assert ops is not None
        await ops.cell.open(User("chief", Role.SUPERVISOR), "flood", "River up")
        await wait_for_point(hub, "nord/demo/tank-n1/setpoint", lambda v: v.value == 15)
        assert len(await firings(hub, "crisis-lights")) == 1


async def test_rule_files_that_do_not_load_fail_the_service_not_the_hub(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[rule]]\nname = "broken"\nwhen = "a/b >"\n')
    async with running_hub(path, tmp_path, plugins=[demo, automation]) as hub:
        await wait_for_point(hub, "centre/demo/tank-a/online", lambda v: v.value is True)
        with anyio.fail_after(5):
            while not hub.service_failures["automation"]:  # noqa: ASYNC110  (a counter)
                await anyio.sleep(0.05)
        found = automation.engine(hub)
        assert found is not None and not found.ready.is_set() and found.rules == {}
        assert (await send_command(hub, "tank-a", "set_level", setpoint=70)).ok
