"""The hub end to end: a config file, plugins, devices, alarms, commands, shutdown, restart."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from cityvisor import hookimpl
from cityvisor.core.commands import CommandOutcome, CommandRequest
from cityvisor.core.config import load_config
from cityvisor.core.hub import JOURNAL_REPLACED_ALARM, JOURNAL_REPLACED_POINT, Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Testville"

[store]
path = "hub.sqlite"
flush_interval = 0.05

[[zones]]
id = "centre"
name = "Centre"

[[zones]]
id = "nord"
name = "Nord"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
config = { period = 0.02, fill_rate = 100, initial_level = 50 }

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "nord"
config = { period = 0.02, initial_level = 95, fail_every = 0.3 }

[[alarms]]
name = "tank-a-above-60"
point = "centre/demo/tank-a/level"
high = 60
priority = "low"
message = "Tank A above 60 %"
"""

OPERATOR = User("olivia", Role.OPERATOR, frozenset({"centre"}))
SUPERVISOR = User("sam", Role.SUPERVISOR)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "city.toml"
    path.write_text(CONFIG)
    return path


class Recorder:
    """A plugin that records the hooks the hub calls and runs a service."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str]] = []
        self.service_ran = anyio.Event()
        self.service_cancelled = False
        self.shutdown = False

    @hookimpl
    def cityvisor_alarm_transition(self, alarm, transition):
        self.transitions.append((alarm.id, transition.kind))

    @hookimpl
    def cityvisor_startup(self, hub):
        async def service():
            self.service_ran.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.service_cancelled = True

        return service

    @hookimpl
    def cityvisor_shutdown(self, hub):
        self.shutdown = True


def make_hub(tmp_path: Path, *plugins) -> Hub:
    manager = make_plugin_manager(
        builtins=("cityvisor.plugins.demo",), entry_points=False, plugins=plugins
    )
    return Hub(load_config(write_config(tmp_path)), manager)


async def wait(hub: Hub, point_id: str, predicate, timeout: float = 5.0):
    value = await hub.points.wait_for(point_id, predicate, timeout)
    assert value is not None, f"{point_id}: {hub.points.value(point_id)}"
    return value


async def test_the_hub_runs_devices_alarms_commands_and_plugin_services(tmp_path: Path):
    recorder = Recorder()
    hub = make_hub(tmp_path, recorder)
    assert set(hub.devices) == {"tank-a", "tank-b"}
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await wait(hub, "centre/demo/tank-a/online", lambda v: v.value is True)
        with anyio.fail_after(5):
            await recorder.service_ran.wait()

        # A command through the bus, with its feedback.
        result = await hub.commands.execute(
            CommandRequest("tank-a", "set_level", {"setpoint": 70.0}, None, OPERATOR)
        )
        assert result.outcome is CommandOutcome.SUCCEEDED
        await wait(hub, "centre/demo/tank-a/level", lambda v: v.value == 70.0)

        # The config alarm rises, is journaled, reaches the plugin hook.
        alarm = hub.alarms.get("config:tank-a-above-60")
        await wait_alarm(hub, alarm.id, lambda a: a.active)
        assert ("config:tank-a-above-60", "raised") in recorder.transitions
        acked = await hub.alarms.acknowledge(alarm.id, OPERATOR, "seen, watching it")
        assert acked.acked
        tg.cancel_scope.cancel()
    assert recorder.service_cancelled and recorder.shutdown
    journal = await _journal(tmp_path)
    kinds = [entry.kind for entry in journal]
    assert "command" in kinds and "ack" in kinds
    assert journal[0].message == "hub stopped"
    assert any(e.message.startswith("hub started") for e in journal)


async def test_a_failing_device_raises_its_communication_alarm_and_recovers(tmp_path: Path):
    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await wait(hub, "nord/demo/tank-b/online", lambda v: v.value is True)
        await wait(hub, "nord/demo/tank-b/level", lambda v: v.quality.reason == "comm_failure")
        communication = hub.alarms.get("tank-b:communication_lost")
        await wait_alarm(hub, communication.id, lambda a: a.active)
        # Its high-water alarm (level 95 > 90) is suppressed by design meanwhile.
        assert hub.alarms.get("tank-b:high_water") not in hub.alarms.annunciated()
        # The other tank never noticed.
        assert hub.points.value("centre/demo/tank-a/online").value is True
        await wait(hub, "nord/demo/tank-b/online", lambda v: v.value is True)
        await wait(hub, "nord/demo/tank-b/level", lambda v: v.quality.is_good)
        tg.cancel_scope.cancel()
    assert hub.supervisor.drivers["tank-b"].restarts >= 1


async def test_alarm_state_survives_a_restart(tmp_path: Path):
    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        alarm = hub.alarms.get("tank-b:high_water")
        await wait_alarm(hub, alarm.id, lambda a: a.active)
        await hub.alarms.shelve(alarm.id, SUPERVISOR, 3600, "sensor being replaced")
        tg.cancel_scope.cancel()

    again = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        restored = again.alarms.get("tank-b:high_water")
        assert restored.shelved
        assert restored.shelve_reason == "sensor being replaced"
        tg.cancel_scope.cancel()


async def test_shutdown_takes_less_than_five_seconds(tmp_path: Path):
    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await wait(hub, "centre/demo/tank-a/online", lambda v: v.value is True)
        start = anyio.current_time()
        tg.cancel_scope.cancel()
    assert anyio.current_time() - start < 5.0


async def frozen_beyond(count: int) -> None:
    """Poll the collector (it has no event to wait on) until more than ``count`` objects are frozen."""
    import gc

    for _ in range(500):
        if gc.get_freeze_count() > count:
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"no more than {count} objects frozen after 5 s")


async def test_a_large_city_is_left_out_of_the_collectors_full_passes_while_the_hub_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import gc
    import weakref

    from cityvisor.core import hub as hub_module
    from cityvisor.core.points import DataType, PointSpec

    monkeypatch.setattr(hub_module, "SETTLE_AT", 1)  # this small city counts as large
    monkeypatch.setattr(hub_module, "SETTLE_AGAIN", 3)
    monkeypatch.setattr(hub_module, "SETTLE_CHECK", 0.01)

    class Held:
        pass

    hub = make_hub(tmp_path)
    hub.points.register("extra/a", PointSpec("a", DataType.FLOAT))
    held = Held()
    ref = weakref.ref(held)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await frozen_beyond(0)
        frozen = gc.get_freeze_count()
        del held  # frozen, and still freed when nothing refers to it
        assert ref() is None
        # Points registered since (a birth, new devices): settled again.
        late = [Held() for _ in range(100)]
        for n in range(3):
            hub.points.register(f"extra/late{n}", PointSpec("a", DataType.FLOAT))
        await frozen_beyond(frozen)
        assert all(gc.is_tracked(o) for o in late)
        tg.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0


async def test_a_small_city_is_left_to_the_collector(tmp_path: Path):
    import gc

    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await anyio.sleep(0.05)
        assert gc.get_freeze_count() == 0
        tg.cancel_scope.cancel()


async def wait_alarm(hub: Hub, alarm_id: str, predicate, timeout: float = 5.0):
    """Wait, on the alarm feed, until the alarm satisfies ``predicate`` (checked at each event)."""
    with anyio.fail_after(timeout):
        async with hub.alarms.subscribe() as feed:
            async for _message in feed:
                alarm = hub.alarms.get(alarm_id)
                if predicate(alarm):
                    return alarm
    raise AssertionError("alarm feed closed")


async def _journal(tmp_path: Path):
    from cityvisor.core.store import SqliteStore

    store = SqliteStore(tmp_path / "hub.sqlite")
    await store.open()
    try:
        return await store.query_journal(limit=1000)
    finally:
        await store.close()


def test_hub_exposes_its_parts_for_plugins(tmp_path: Path):
    hub = make_hub(tmp_path)
    parts = SimpleNamespace(
        points=hub.points, alarms=hub.alarms, commands=hub.commands, store=hub.store
    )
    assert len(parts.points) > 0
    assert "tank-a:communication_lost" in hub.alarms


async def test_devices_share_resources_that_the_hub_closes_when_it_stops(tmp_path: Path):
    class Pool:
        closed = False

        async def close(self) -> None:
            Pool.closed = True

    hub = make_hub(tmp_path)
    first = hub.devices["tank-a"].resources.get("pool", Pool)
    assert hub.devices["tank-b"].resources.get("pool", Pool) is first
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        tg.cancel_scope.cancel()
    assert Pool.closed


async def test_a_replaced_journal_entry_raises_the_hubs_journal_alarm(tmp_path: Path):
    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        assert JOURNAL_REPLACED_POINT not in hub.points  # nothing to show until it happens
        written = await hub.store.journal(JournalEntry(kind="note", message="bad \udc00 text"))
        assert written.data["replaced"]["fields"] == ["message"]
        assert hub.points.value(JOURNAL_REPLACED_POINT).value == 1
        alarm = await wait_alarm(hub, JOURNAL_REPLACED_ALARM, lambda a: a.active)
        assert alarm.annunciated and str(alarm.priority) == "high"
        await hub.store.journal(JournalEntry(kind="note", message="\udc01"))
        assert hub.points.value(JOURNAL_REPLACED_POINT).value == 2
        tg.cancel_scope.cancel()


async def test_an_unacknowledged_journal_alarm_is_shown_again_after_a_restart(tmp_path: Path):
    hub = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        await hub.store.journal(JournalEntry(kind="note", message="bad \udc00 text"))
        await wait_alarm(hub, JOURNAL_REPLACED_ALARM, lambda a: a.active)
        tg.cancel_scope.cancel()

    again = make_hub(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        alarm = await wait_alarm(
            again, JOURNAL_REPLACED_ALARM, lambda a: a.display_state == "rtn_unack"
        )
        assert alarm.annunciated and not alarm.acked  # still waiting for someone to look
        assert again.points.value(JOURNAL_REPLACED_POINT).value == 0
        tg.cancel_scope.cancel()
