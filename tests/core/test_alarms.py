"""The alarm manager: ISA-18.2 states, delays, hiding, procedures, KPIs, journal and restart.

Every test runs a real PointDB and a real SQLite store on disk, on both
anyio backends; the restart tests (alarm state is the store's contract) run
on PostgreSQL too. Delays are kept to a few tens of milliseconds and waited for
through the manager's own transitions, never with long sleeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from cityvisor import DeviceConfig, DeviceInfo, DeviceType, Quality, alarm, point
from cityvisor.core.alarms import (
    Alarm,
    AlarmActionError,
    AlarmEvent,
    AlarmManager,
    AlarmPermissionError,
    AlarmResync,
    AlarmState,
    Procedure,
    Transition,
    UnknownAlarmError,
)
from cityvisor.core.points import PointDB, now_ms
from cityvisor.core.store import SqliteStore
from cityvisor.core.users import Role, User
from cityvisor.plugins.demo import Tank, TankConfig

from .backends import Backend

pytestmark = pytest.mark.anyio

OPERATOR = User("olga", Role.OPERATOR, frozenset({"dijon"}))
SUPERVISOR = User("sam", Role.SUPERVISOR, frozenset({"dijon"}))
VIEWER = User("vic", Role.VIEWER)
ELSEWHERE = User("chloe", Role.SUPERVISOR, frozenset({"chenove"}))


class PumpConfig(DeviceConfig):
    circuits: list[str] = ["c1", "c2"]


class Pump(DeviceType):
    """A pumping station: enough alarm kinds to exercise every rule."""

    family = "water"
    Config = PumpConfig

    pressure = point(float, unit="bar")
    running = point(bool)
    level = point(float, unit="%")
    fault = point(bool, per="circuit")
    sensor = point(float)

    high_pressure = alarm(
        "pressure",
        high=10,
        deadband=1,
        priority="high",
        message={"fr": "Pression haute", "en": "High pressure"},
        procedure="PUMP-01",
    )
    stopped = alarm("running", equals=False, on_delay=0.05, priority="low")
    low_level = alarm("level", low=10, off_delay=0.05, priority="medium")
    circuit_fault = alarm("fault", equals=True, latching=True, priority="critical")
    sensor_failed = alarm("sensor", quality_bad=True, priority="low")

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError  # never supervised in these tests


PROCEDURE = Procedure.create(
    "PUMP-01",
    {"fr": "Pression haute", "en": "High pressure"},
    [
        {"fr": "Vérifier la vanne", "en": "Check the valve"},
        {"fr": "Appeler l'astreinte", "en": "Call the on-call crew"},
    ],
    version=3,
)


class Harness:
    """A running manager with one pump, and what it reported."""

    def __init__(self, db: PointDB, manager: AlarmManager, pump: Pump, store: SqliteStore):
        self.db = db
        self.manager = manager
        self.pump = pump
        self.store = store
        self.reported: list[tuple[str, Transition]] = []
        self._changed = anyio.Event()

    def on_transition(self, alarm: Alarm, transition: Transition) -> None:
        self.reported.append((alarm.id, transition))
        self._changed.set()
        self._changed = anyio.Event()

    def set(self, relative: str, value: Any) -> None:
        self.pump.publish({relative: value})

    def alarm(self, name: str) -> Alarm:
        return self.manager.get(f"p1:{name}")

    def kinds(self, name: str) -> list[str]:
        return [t.kind for alarm_id, t in self.reported if alarm_id == f"p1:{name}"]

    async def reported_kind(self, name: str, kind: str, timeout: float = 2.0) -> Transition:
        """Wait until ``kind`` happened to alarm ``name`` (it is journaled by then)."""
        with anyio.fail_after(timeout):
            while True:
                for alarm_id, t in self.reported:
                    if alarm_id == f"p1:{name}" and t.kind == kind:
                        return t
                await self._changed.wait()

    async def journal(self, name: str | None = None, **filters: Any) -> list[Any]:
        alarm_id = f"p1:{name}" if name else None
        return list(reversed(await self.store.query_journal(alarm=alarm_id, **filters)))


def make_pump(db: PointDB, device_id: str = "p1", zone: str = "dijon") -> Pump:
    pump = Pump(DeviceInfo(device_id, Pump.type_name, zone), PumpConfig(), db)
    pump.declare_points()
    return pump


@asynccontextmanager
async def running(store: SqliteStore, **options: Any) -> AsyncIterator[Harness]:
    db = PointDB()
    pump = make_pump(db)
    harness: Harness
    manager = AlarmManager(
        db, store, on_transition=lambda a, t: harness.on_transition(a, t), **options
    )
    harness = Harness(db, manager, pump, store)
    manager.add_device(pump)
    manager.add_procedure(PROCEDURE)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        yield harness
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- definitions


async def test_a_device_gets_one_alarm_per_declaration_and_per_member(store: SqliteStore):
    async with running(store) as h:
        ids = sorted(a.id for a in h.manager.alarms())
        assert ids == [
            "p1:c1:circuit_fault",
            "p1:c2:circuit_fault",
            "p1:communication_lost",
            "p1:high_pressure",
            "p1:low_level",
            "p1:sensor_failed",
            "p1:stopped",
        ]
        fault = h.manager.get("p1:c2:circuit_fault")
        assert fault.point_id == "dijon/water/p1/c2/fault"
        assert (fault.member, fault.zone, fault.family, fault.device_id) == (
            "c2",
            "dijon",
            "water",
            "p1",
        )
        assert h.alarm("high_pressure").procedure == "PUMP-01"
        assert h.alarm("communication_lost").spec.suppressible is False


async def test_a_config_alarm_is_named_config_and_its_name(store: SqliteStore):
    async with running(store) as h:
        spec = alarm("dijon/water/p1/pressure", high=20, name="overpressure", priority="critical")
        added = h.manager.add(
            spec, "dijon/water/p1/pressure", device_id="p1", zone="dijon", family="water"
        )
        assert added.id == "config:overpressure"
        h.set("pressure", 25.0)
        await h.manager.wait_journaled()
        assert added.state is AlarmState.UNACK_ACTIVE
        with pytest.raises(ValueError, match="exists already"):
            h.manager.add(spec, "dijon/water/p1/pressure")


async def test_the_demo_tank_raises_high_water(store: SqliteStore):
    db = PointDB()
    tank = Tank(DeviceInfo("t1", Tank.type_name, "dijon"), TankConfig(), db)
    tank.declare_points()
    manager = AlarmManager(db, store)
    manager.add_device(tank)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        tank.publish({"level": 95.0})
        await manager.wait_journaled()
        assert [a.id for a in manager.annunciated()] == ["t1:high_water"]
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- the ISA-18.2 states


async def test_raise_acknowledge_clear(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        assert high.state is AlarmState.NORMAL
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert high.state is AlarmState.UNACK_ACTIVE and high.active and not high.acked
        assert high.raised_at is not None and high.value == 12.0
        assert [a.id for a in h.manager.annunciated()] == ["p1:high_pressure"]

        await h.manager.acknowledge("p1:high_pressure", OPERATOR, "crew called")
        assert high.state is AlarmState.ACK_ACTIVE
        assert high.acked_by == "olga"

        h.set("pressure", 5.0)
        await h.manager.wait_journaled()
        assert high.state is AlarmState.NORMAL and not high.active
        assert h.manager.annunciated() == []

        journal = await h.journal("high_pressure")
        assert [(e.kind, e.data["kind"]) for e in journal] == [
            ("alarm", "raised"),
            ("ack", "acknowledged"),
            ("alarm", "cleared"),
        ]
        ack = journal[1]
        assert ack.user == "olga" and "crew called" in ack.message
        assert ack.data["from_state"] == "unack_active" and ack.data["to_state"] == "ack_active"
        assert journal[0].data["value"] == 12.0 and journal[0].device == "p1"


async def test_an_alarm_that_clears_unacknowledged_waits_for_its_ack(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        h.set("pressure", 12.0)
        h.set("pressure", 2.0)
        await h.manager.wait_journaled()
        assert high.state is AlarmState.RTN_UNACK and not high.active
        assert high.annunciated
        await h.manager.acknowledge("p1:high_pressure", OPERATOR)
        assert high.state is AlarmState.NORMAL
        assert h.kinds("high_pressure") == ["raised", "cleared", "acknowledged"]


async def test_acknowledging_what_needs_no_ack_is_refused_with_a_reason(store: SqliteStore):
    async with running(store) as h:
        with pytest.raises(AlarmActionError, match="normal: there is nothing to acknowledge"):
            await h.manager.acknowledge("p1:high_pressure", OPERATOR)
        h.set("pressure", 12.0)
        await h.manager.acknowledge("p1:high_pressure", OPERATOR)
        with pytest.raises(AlarmActionError, match="acknowledged already"):
            await h.manager.acknowledge("p1:high_pressure", OPERATOR)
        with pytest.raises(UnknownAlarmError, match="p1:nothing"):
            await h.manager.acknowledge("p1:nothing", OPERATOR)


async def test_actions_need_the_role_and_the_zone(store: SqliteStore):
    async with running(store) as h:
        h.set("pressure", 12.0)
        with pytest.raises(AlarmPermissionError, match="operator role"):
            await h.manager.acknowledge("p1:high_pressure", VIEWER)
        with pytest.raises(AlarmPermissionError, match="zone 'dijon'"):
            await h.manager.acknowledge("p1:high_pressure", ELSEWHERE)
        with pytest.raises(AlarmPermissionError, match="supervisor role"):
            await h.manager.shelve("p1:high_pressure", OPERATOR, 60, "nuisance")
        with pytest.raises(AlarmPermissionError, match="supervisor role"):
            await h.manager.set_out_of_service("p1:high_pressure", OPERATOR, True, "broken")
        with pytest.raises(AlarmPermissionError):
            await h.manager.add_maintenance(
                OPERATOR, device_id="p1", start_ms=now_ms(), end_ms=now_ms() + 1000, reason="x"
            )
        assert h.alarm("high_pressure").state is AlarmState.UNACK_ACTIVE


async def test_limit_alarms_clear_only_past_their_deadband(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")  # high=10, deadband=1
        h.set("pressure", 10.0)
        assert not high.active  # the limit itself is not above the limit
        h.set("pressure", 10.5)
        assert high.active
        h.set("pressure", 9.5)
        assert high.active  # inside the deadband: no chattering
        h.set("pressure", 8.9)
        assert not high.active
        h.set("pressure", 10.4)
        assert high.active
        await h.manager.wait_journaled()
        assert h.kinds("high_pressure") == ["raised", "cleared", "raised"]


async def test_on_delay_ignores_a_short_blip_and_raises_what_lasts(store: SqliteStore):
    async with running(store) as h:
        stopped = h.alarm("stopped")  # running == False for 0.05 s
        h.set("running", True)
        h.set("running", False)
        h.set("running", True)  # back before the delay ran out
        await anyio.sleep(0.08)
        assert not stopped.active and h.kinds("stopped") == []
        h.set("running", False)
        assert not stopped.active  # not yet
        started = anyio.current_time()
        await h.reported_kind("stopped", "raised")
        assert anyio.current_time() - started >= 0.045
        assert stopped.state is AlarmState.UNACK_ACTIVE


async def test_off_delay_keeps_the_alarm_until_the_condition_stayed_away(store: SqliteStore):
    async with running(store) as h:
        low = h.alarm("low_level")  # level < 10, clears after 0.05 s above
        h.set("level", 5.0)
        assert low.active
        h.set("level", 50.0)
        h.set("level", 5.0)  # back below before the off delay ran out
        await anyio.sleep(0.08)
        assert low.active and h.kinds("low_level") == ["raised"]
        h.set("level", 50.0)
        assert low.active
        await h.reported_kind("low_level", "cleared")
        assert low.state is AlarmState.RTN_UNACK


async def test_a_latching_alarm_stays_until_acknowledged(store: SqliteStore):
    async with running(store) as h:
        fault = h.manager.get("p1:c1:circuit_fault")
        h.set("c1/fault", True)
        h.set("c1/fault", False)
        await h.manager.wait_journaled()
        assert fault.state is AlarmState.UNACK_ACTIVE and fault.latched and not fault.active
        assert fault.annunciated
        await h.manager.acknowledge(fault.id, OPERATOR)
        assert fault.state is AlarmState.NORMAL and not fault.latched

        # Acknowledged while active, then cleared: still shown (latched) until reset by an ack.
        h.set("c1/fault", True)
        await h.manager.acknowledge(fault.id, OPERATOR)
        h.set("c1/fault", False)
        await h.manager.wait_journaled()
        assert fault.state is AlarmState.ACK_ACTIVE and fault.latched and fault.annunciated
        await h.manager.acknowledge(fault.id, OPERATOR, "reset")
        assert fault.state is AlarmState.NORMAL


class SlowPump(DeviceType):
    """Delays of minutes, as real stations have them."""

    family = "water"
    running = point(bool)
    stopped = alarm("running", equals=False, on_delay=600, off_delay=120)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mockclock")],
)
async def test_minutes_long_delays_and_shelves_run_on_the_loop_s_clock(store: SqliteStore):
    # The mock clock jumps whenever every task waits, even on the store's thread:
    # so wait for what the manager reports, and check that it was never early.
    db = PointDB()
    pump = SlowPump(DeviceInfo("s1", SlowPump.type_name, "dijon"), DeviceConfig(), db)
    pump.declare_points()
    reported: list[str] = []
    changed = anyio.Event()

    def on_transition(alarm: Alarm, transition: Transition) -> None:
        nonlocal changed
        reported.append(transition.kind)
        changed.set()
        changed = anyio.Event()

    async def wait_for(kind: str) -> float:
        # No timeout here: it would be one more deadline for the clock to jump to
        # (pytest's own timeout catches a hang).
        while kind not in reported:
            await changed.wait()
        return anyio.current_time()

    manager = AlarmManager(db, store, on_transition=on_transition)
    manager.add_device(pump)
    stopped = manager.get("s1:stopped")
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        start = anyio.current_time()
        pump.publish({"running": False})
        await anyio.sleep(599)
        assert not stopped.active
        assert await wait_for("raised") - start >= 600

        await manager.shelve("s1:stopped", SUPERVISOR, 3600, "pump replaced")
        start = anyio.current_time()
        assert await wait_for("unshelved") - start >= 3600
        assert stopped.annunciated

        pump.publish({"running": True})
        start = anyio.current_time()
        assert await wait_for("cleared") - start >= 120
        assert stopped.state is AlarmState.RTN_UNACK
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- hiding


async def test_shelving_hides_an_alarm_until_it_expires(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        h.set("pressure", 12.0)
        await h.manager.shelve("p1:high_pressure", SUPERVISOR, 0.1, "sensor being replaced")
        assert high.shelved and high.shelved_by == "sam"
        assert high.shelved_until is not None and high.shelved_until > now_ms()
        assert h.manager.annunciated() == []
        assert high.as_json()["display_state"] == "shelved"
        with pytest.raises(AlarmActionError, match="shelved already"):
            await h.manager.shelve("p1:high_pressure", SUPERVISOR, 10, "again")

        unshelved = await h.reported_kind("high_pressure", "unshelved")
        assert unshelved.user is None and unshelved.data == {"expired": True}
        assert not high.shelved and high.shelved_until is None
        assert [a.id for a in h.manager.annunciated()] == ["p1:high_pressure"]
        kinds = [(e.kind, e.data["kind"]) for e in await h.journal("high_pressure")]
        assert kinds == [("alarm", "raised"), ("shelve", "shelved"), ("shelve", "unshelved")]


async def test_an_alarm_raised_while_shelved_is_annunciated_when_unshelved(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        await h.manager.shelve("p1:high_pressure", SUPERVISOR, 3600, "known nuisance")
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert high.active and high.state is AlarmState.NORMAL and not high.annunciated
        raised = (await h.journal("high_pressure"))[-1]
        assert raised.data["kind"] == "raised" and raised.data["annunciated"] is False
        assert "(shelved)" in raised.message

        await h.manager.unshelve("p1:high_pressure", OPERATOR)
        assert high.state is AlarmState.UNACK_ACTIVE and high.annunciated
        assert h.kinds("high_pressure") == ["shelved", "raised", "unshelved", "raised"]
        with pytest.raises(AlarmActionError, match="not shelved"):
            await h.manager.unshelve("p1:high_pressure", OPERATOR)


async def test_shelving_needs_a_reason_and_a_bounded_duration(store: SqliteStore):
    async with running(store) as h:
        with pytest.raises(AlarmActionError, match="needs a reason"):
            await h.manager.shelve("p1:high_pressure", SUPERVISOR, 60, "  ")
        with pytest.raises(AlarmActionError, match="duration"):
            await h.manager.shelve("p1:high_pressure", SUPERVISOR, 8 * 86400, "too long")
        with pytest.raises(AlarmActionError, match="duration"):
            await h.manager.shelve("p1:high_pressure", SUPERVISOR, 0, "zero")
        assert not h.alarm("high_pressure").shelved


async def test_losing_communication_suppresses_the_device_s_other_alarms(store: SqliteStore):
    async with running(store) as h:
        high, comm = h.alarm("high_pressure"), h.alarm("communication_lost")
        h.set("online", True)
        h.set("pressure", 12.0)
        await h.manager.acknowledge("p1:high_pressure", OPERATOR)

        # What the supervisor does when the driver fails: points bad, then offline.
        h.pump.mark(Quality.bad("comm_failure"))
        h.set("online", False)
        await h.manager.wait_journaled()
        assert comm.state is AlarmState.UNACK_ACTIVE and not comm.suppressed
        assert high.suppressed and high.state is AlarmState.ACK_ACTIVE
        # A quality alarm does not fire because the device is unreachable.
        assert not h.alarm("sensor_failed").active
        assert [a.id for a in h.manager.annunciated()] == ["p1:communication_lost"]
        # Quiet alarms are suppressed silently; the one that had something to say is journaled.
        assert h.kinds("stopped") == [] and h.kinds("high_pressure")[-1] == "suppressed"

        # While suppressed, conditions keep being tracked but nothing is annunciated.
        h.pump.publish({"level": 2.0})
        await h.manager.wait_journaled()
        assert h.alarm("low_level").active and not h.alarm("low_level").annunciated

        h.set("online", True)
        await h.manager.wait_journaled()
        assert comm.state is AlarmState.RTN_UNACK
        assert not high.suppressed and high.state is AlarmState.ACK_ACTIVE  # the ack is kept
        low = h.alarm("low_level")
        assert low.state is AlarmState.UNACK_ACTIVE and low.annunciated  # re-evaluated
        assert h.kinds("low_level") == ["raised", "unsuppressed", "raised"]


async def test_a_real_sensor_failure_raises_its_quality_alarm(store: SqliteStore):
    async with running(store) as h:
        h.pump.publish({"sensor": 1.0})
        h.pump.publish({"sensor": 1.0}, quality=Quality.bad("sensor_failure"))
        await h.manager.wait_journaled()
        assert h.alarm("sensor_failed").state is AlarmState.UNACK_ACTIVE


async def test_out_of_service_hides_an_alarm_until_returned(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        with pytest.raises(AlarmActionError, match="needs a reason"):
            await h.manager.set_out_of_service("p1:high_pressure", SUPERVISOR, True, "")
        await h.manager.set_out_of_service("p1:high_pressure", SUPERVISOR, True, "gauge removed")
        assert high.out_of_service and high.out_of_service_reason == "gauge removed"
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert high.active and not high.annunciated
        with pytest.raises(AlarmActionError, match="out of service already"):
            await h.manager.set_out_of_service("p1:high_pressure", SUPERVISOR, True, "again")
        await h.manager.set_out_of_service("p1:high_pressure", SUPERVISOR, False)
        assert not high.out_of_service and high.state is AlarmState.UNACK_ACTIVE
        journal = await h.journal("high_pressure", kinds=["out_of_service"])
        assert [(e.data["kind"], e.user) for e in journal] == [
            ("out_of_service", "sam"),
            ("in_service", "sam"),
        ]


async def test_planned_maintenance_hides_what_happens_during_the_window(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        window = await h.manager.add_maintenance(
            SUPERVISOR,
            device_id="p1",
            start_ms=now_ms() - 1000,
            end_ms=now_ms() + 3_600_000,
            reason="pump overhaul",
        )
        assert window.created_by == "sam" and h.manager.maintenance_windows() == [window]
        assert high.maintenance
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert high.active and not high.annunciated
        assert high.as_json()["display_state"] == "maintenance"
        raised = (await h.journal("high_pressure"))[-1]
        assert raised.data["annunciated"] is False and "(maintenance)" in raised.message

        await h.manager.remove_maintenance(window.id, SUPERVISOR)
        assert not high.maintenance and high.state is AlarmState.UNACK_ACTIVE
        assert h.manager.maintenance_windows() == []
        kinds = [e.data["kind"] for e in await h.journal(kinds=["maintenance"])]
        assert kinds == ["maintenance_added", "maintenance_ended", "maintenance_removed"]
        with pytest.raises(UnknownAlarmError):
            await h.manager.remove_maintenance(window.id, SUPERVISOR)


async def test_a_maintenance_window_opens_and_closes_on_time(store: SqliteStore):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        start = now_ms() + 50
        await h.manager.add_maintenance(
            SUPERVISOR, zone="dijon", start_ms=start, end_ms=start + 100, reason="works"
        )
        assert not high.maintenance
        h.set("pressure", 12.0)  # raised before the window: it must be seen
        await h.reported_kind("high_pressure", "maintenance_started")
        assert high.maintenance and not high.annunciated
        await h.reported_kind("high_pressure", "maintenance_ended")
        assert not high.maintenance and high.annunciated
        assert h.manager.maintenance_windows() == []
        await h.manager.wait_journaled()
        removed = (await h.journal(kinds=["maintenance"]))[-1]
        assert removed.data["kind"] == "maintenance_removed" and removed.data["data"]["expired"]


async def test_maintenance_needs_one_target_a_reason_and_a_future_end(store: SqliteStore):
    async with running(store) as h:
        now = now_ms()
        with pytest.raises(AlarmActionError, match="one device or one zone"):
            await h.manager.add_maintenance(
                SUPERVISOR, device_id="p1", zone="dijon", start_ms=now, end_ms=now + 1, reason="x"
            )
        with pytest.raises(AlarmActionError, match="needs a reason"):
            await h.manager.add_maintenance(
                SUPERVISOR, device_id="p1", start_ms=now, end_ms=now + 1000, reason=""
            )
        with pytest.raises(AlarmActionError, match="in the future"):
            await h.manager.add_maintenance(
                SUPERVISOR, device_id="p1", start_ms=now - 2000, end_ms=now - 1000, reason="x"
            )
        with pytest.raises(AlarmPermissionError):
            await h.manager.add_maintenance(
                ELSEWHERE, zone="dijon", start_ms=now, end_ms=now + 1000, reason="x"
            )


# --------------------------------------------------------------------------- procedures


async def test_procedure_steps_are_ticked_journaled_and_reset_by_a_new_occurrence(
    store: SqliteStore,
):
    async with running(store) as h:
        high = h.alarm("high_pressure")
        h.set("pressure", 12.0)
        await h.manager.tick_step("p1:high_pressure", 0, OPERATOR)
        checklist = high.as_json()["checklist"]
        assert checklist["procedure"] == "PUMP-01" and checklist["version"] == 3
        assert checklist["steps"]["0"]["done"] is True and checklist["steps"]["0"]["by"] == "olga"
        entry = (await h.journal("high_pressure", kinds=["procedure_step"]))[-1]
        assert entry.user == "olga"
        assert entry.data["data"]["procedure"] == "PUMP-01"
        assert entry.data["data"]["version"] == 3 and entry.data["data"]["step"] == 0

        with pytest.raises(AlarmActionError, match="steps 0 to 1"):
            await h.manager.tick_step("p1:high_pressure", 2, OPERATOR)
        with pytest.raises(AlarmActionError, match="no procedure"):
            await h.manager.tick_step("p1:stopped", 0, OPERATOR)

        h.set("pressure", 2.0)
        assert high.checklist  # the occurrence is not over until it is raised again
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert high.checklist == {} and high.as_json()["checklist"]["steps"] == {}


# --------------------------------------------------------------------------- KPIs


async def test_a_flood_starts_and_ends_with_hysteresis_and_is_journaled(store: SqliteStore):
    async with (
        running(store, flood_start=3, flood_end=1, flood_window=0.3) as h,
        h.manager.subscribe() as sub,
    ):
        others = [make_pump(h.db, f"p{i}") for i in range(2, 6)]
        for pump in others:
            h.manager.add_device(pump)
        h.set("pressure", 12.0)
        for pump in others:
            pump.publish({"pressure": 12.0})
        await h.manager.wait_journaled()
        kpis = h.manager.kpis()
        assert kpis["zones"]["dijon"]["flood"] is True and kpis["in_flood"] == ["dijon"]
        assert kpis["zones"]["dijon"]["raised"] == 5
        # The flood ends by itself once the raises leave the window.
        with anyio.fail_after(3):
            async for message in sub:
                if isinstance(message, AlarmEvent) and message.transition.kind == "flood_ended":
                    assert message.alarm is None
                    assert message.transition.data["zone"] == "dijon"
                    break
        assert not h.manager.kpis()["zones"]["dijon"]["flood"]
        floods = await h.journal(kinds=["flood"])
        assert [e.data["kind"] for e in floods] == ["flood_started", "flood_ended"]
        assert floods[0].data["data"]["zone"] == "dijon"
        assert h.manager.kpis()["zones"]["dijon"]["time_in_flood_s"] > 0


async def test_kpis_name_bad_actors_chattering_and_stale_alarms(store: SqliteStore):
    async with running(store) as h:
        for _ in range(3):
            h.set("pressure", 12.0)
            h.set("pressure", 2.0)
        h.set("level", 2.0)
        await h.manager.wait_journaled()
        kpis = h.manager.kpis()
        assert kpis["bad_actors"][0] == {"alarm": "p1:high_pressure", "raised": 3}
        assert kpis["chattering"] == ["p1:high_pressure"]
        assert kpis["stale"] == []
        tomorrow = now_ms() + 25 * 3_600_000
        assert h.manager.kpis(now_ms=tomorrow)["stale"] == ["p1:low_level"]
        assert kpis["by_priority"]["high"] == {"annunciated": 1, "unacked": 1}
        assert h.manager.counts_by_priority()["medium"] == {"annunciated": 1, "unacked": 1}


async def test_queries_filter_by_zone_activity_and_priority(store: SqliteStore):
    async with running(store) as h:
        h.manager.add_device(make_pump(h.db, "q1", zone="chenove"))
        h.set("pressure", 12.0)
        h.set("c1/fault", True)
        await h.manager.wait_journaled()
        assert {a.id for a in h.manager.alarms(active_only=True)} == {
            "p1:high_pressure",
            "p1:c1:circuit_fault",
        }
        assert len(h.manager.alarms(zone="chenove")) == 7
        assert [a.id for a in h.manager.alarms(priority="critical", active_only=True)] == [
            "p1:c1:circuit_fault"
        ]
        # Highest priority first.
        assert [a.id for a in h.manager.annunciated()] == [
            "p1:c1:circuit_fault",
            "p1:high_pressure",
        ]


# --------------------------------------------------------------------------- journal first


async def test_nothing_is_reported_before_it_is_in_the_journal(store: SqliteStore):
    path = store.path
    seen: list[tuple[str, int]] = []

    def check(alarm: Alarm, transition: Transition) -> None:
        # Another connection, as a crash-recovering process would read the file.
        with closing(sqlite3.connect(path)) as reader:
            rows = reader.execute(
                "SELECT count(*) FROM journal WHERE alarm = ? AND json_extract(data, '$.kind') = ?",
                (alarm.id, transition.kind),
            ).fetchone()[0]
            state = reader.execute(
                "SELECT json_extract(state, '$.state') FROM alarm_state WHERE key = ?", (alarm.id,)
            ).fetchone()
        seen.append((transition.kind, rows))
        assert rows >= 1
        assert state is not None

    db = PointDB()
    pump = make_pump(db)
    manager = AlarmManager(db, store, on_transition=check)
    manager.add_device(pump)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        async with manager.subscribe() as sub:
            first = await sub.receive()
            assert isinstance(first, AlarmResync) and first.alarms == []
            pump.publish({"pressure": 12.0})
            event = await sub.receive()
            assert isinstance(event, AlarmEvent) and event.transition.kind == "raised"
            assert event.alarm is not None and event.alarm["state"] == "unack_active"
            journal = await store.query_journal(alarm="p1:high_pressure")
            assert [e.data["kind"] for e in journal] == ["raised"]
            await manager.acknowledge("p1:high_pressure", OPERATOR)
            journal = await store.query_journal(alarm="p1:high_pressure")
            assert journal[0].data["kind"] == "acknowledged" and journal[0].user == "olga"
            event = await sub.receive()
            assert isinstance(event, AlarmEvent) and event.transition.user == "olga"
        tg.cancel_scope.cancel()
    assert seen == [("raised", 1), ("acknowledged", 1)]


async def test_a_lagging_subscriber_is_resynced_without_blocking(store: SqliteStore):
    async with running(store) as h, h.manager.subscribe(max_buffer=2) as sub:
        for i in range(10):
            h.set("pressure", 12.0 if i % 2 == 0 else 2.0)
        await h.manager.wait_journaled()
        assert sub.overflowed and sub.lost > 0
        messages = [await sub.receive(), await sub.receive()]
        assert isinstance(messages[0], AlarmResync) and messages[0].lost == 0
        with anyio.fail_after(2):
            resync = await sub.receive()
        assert isinstance(resync, AlarmResync) and resync.lost > 0
        assert [a["id"] for a in resync.alarms] == ["p1:high_pressure"]
        assert not sub.overflowed
        h.set("pressure", 12.0)
        with anyio.fail_after(2):
            event = await sub.receive()
        assert isinstance(event, AlarmEvent)


async def test_a_failing_on_transition_callback_does_not_stop_the_alarms(store: SqliteStore):
    calls: list[str] = []

    def broken(alarm: Alarm, transition: Transition) -> None:
        calls.append(transition.kind)
        raise RuntimeError("plugin bug")

    db = PointDB()
    pump = make_pump(db)
    manager = AlarmManager(db, store, on_transition=broken)
    manager.add_device(pump)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        pump.publish({"pressure": 12.0})
        await manager.wait_journaled()
        await manager.acknowledge("p1:high_pressure", OPERATOR)
        assert calls == ["raised", "acknowledged"]
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- restart


async def test_alarm_state_survives_a_restart(backend: Backend):
    # Alarm state is the store's contract: on both backends.
    store: Any = backend.new()
    await store.open()
    start = now_ms()
    async with running(store) as h:
        h.set("pressure", 12.0)
        await h.manager.acknowledge("p1:high_pressure", OPERATOR)
        await h.manager.tick_step("p1:high_pressure", 1, OPERATOR)
        h.set("level", 2.0)
        h.set("level", 50.0)  # rtn_unack (off delay), then shelved
        await h.reported_kind("low_level", "cleared")
        await h.manager.shelve("p1:low_level", SUPERVISOR, 3600, "tank drained for works")
        await h.manager.set_out_of_service("p1:stopped", SUPERVISOR, True, "no motor")
        h.set("c1/fault", True)
        h.set("c1/fault", False)  # latched, unacknowledged
        window = await h.manager.add_maintenance(
            SUPERVISOR,
            zone="dijon",
            start_ms=start + 3_600_000,
            end_ms=start + 7_200_000,
            reason="x",
        )
    await store.close()

    reopened = backend.new()
    await reopened.open()
    try:
        async with running(reopened) as h:
            high = h.alarm("high_pressure")
            assert high.state is AlarmState.ACK_ACTIVE and high.active and high.acked_by == "olga"
            assert high.checklist[1]["by"] == "olga" and high.checklist_version == 3
            low = h.alarm("low_level")
            assert low.shelved and low.shelve_reason == "tank drained for works"
            assert low.state is AlarmState.RTN_UNACK and low.shelved_until is not None
            assert h.alarm("stopped").out_of_service
            fault = h.manager.get("p1:c1:circuit_fault")
            assert fault.latched and fault.state is AlarmState.UNACK_ACTIVE
            assert [w.id for w in h.manager.maintenance_windows()] == [window.id]
            # Conditions go on from where they were: high pressure clears with a low value.
            h.set("pressure", 2.0)
            await h.manager.wait_journaled()
            assert high.state is AlarmState.NORMAL
            assert [(alarm_id, t.kind) for alarm_id, t in h.reported] == [
                ("p1:high_pressure", "cleared")
            ]
            # The restart itself journals nothing new.
            assert len(await reopened.query_journal(kinds=["ack"])) == 1
    finally:
        await reopened.close()


async def test_a_shelve_that_expired_while_stopped_is_lifted_at_start(backend: Backend):
    # Alarm state is the store's contract: on both backends.
    store: Any = backend.new()
    await store.open()
    async with running(store) as h:
        h.set("pressure", 12.0)
        await h.manager.shelve("p1:high_pressure", SUPERVISOR, 0.05, "short")
    await store.close()
    await anyio.sleep(0.06)
    reopened = backend.new()
    await reopened.open()
    try:
        async with running(reopened) as h:
            transition = await h.reported_kind("high_pressure", "unshelved")
            assert transition.data == {"expired": True}
            assert h.alarm("high_pressure").annunciated
    finally:
        await reopened.close()


async def test_what_maintenance_hid_is_raised_when_the_window_ended_while_stopped(
    backend: Backend,
):
    store: Any = backend.new()
    await store.open()
    async with running(store) as h:
        await h.manager.add_maintenance(
            SUPERVISOR, device_id="p1", start_ms=now_ms(), end_ms=now_ms() + 300, reason="short"
        )
        h.set("level", 2.0)
        await h.manager.wait_journaled()
        assert h.alarm("low_level").active and not h.alarm("low_level").annunciated
    await store.close()
    await anyio.sleep(0.3)
    reopened = backend.new()
    await reopened.open()
    try:
        async with running(reopened) as h:
            await h.reported_kind("low_level", "raised")
            low = h.alarm("low_level")
            assert low.state is AlarmState.UNACK_ACTIVE and low.annunciated
            assert h.kinds("low_level") == ["maintenance_ended", "raised"]
            assert h.manager.maintenance_windows() == []
    finally:
        await reopened.close()


async def test_a_restored_alarm_left_active_and_unseen_is_raised(store: SqliteStore):
    path = store.path
    async with running(store) as h:
        window = await h.manager.add_maintenance(
            SUPERVISOR, device_id="p1", start_ms=now_ms(), end_ms=now_ms() + 3_600_000, reason="x"
        )
        h.set("pressure", 12.0)
        await h.manager.wait_journaled()
        assert h.alarm("high_pressure").state is AlarmState.NORMAL
    await store.close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM alarm_maintenance WHERE id = ?", (window.id,))
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        async with running(reopened) as h:
            await h.manager.wait_journaled()
            assert h.alarm("high_pressure").state is AlarmState.UNACK_ACTIVE
            assert h.kinds("high_pressure") == ["raised"]
    finally:
        await reopened.close()


class FailingOnceStore(SqliteStore):
    """A store whose first alarm write fails, as a full disk would."""

    failed = False

    async def save_alarm_states(self, items: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return await super().save_alarm_states(items)


async def test_a_failed_journal_write_is_retried_and_nothing_is_reported_before(tmp_path: Path):
    store = FailingOnceStore(tmp_path / "alarms.sqlite")
    await store.open()
    try:
        async with running(store) as h:
            h.set("pressure", 12.0)
            with anyio.fail_after(5):
                await h.manager.wait_journaled()
            assert h.manager.write_errors == 1
            assert h.kinds("high_pressure") == ["raised"]
            assert [e.data["kind"] for e in await h.journal("high_pressure")] == ["raised"]
    finally:
        await store.close()


async def test_an_unwritable_ack_comment_is_replaced_and_never_stalls_the_journal(
    backend: Backend,
):
    store: Any = backend.new()
    await store.open()
    try:
        await _unwritable_ack_comment(store)
    finally:
        await store.close()


async def _unwritable_ack_comment(store: Any) -> None:
    # A lone surrogate has no UTF-8 form: SQLite refuses the row. The edge refuses such
    # text, but the journal writer must survive it anyway: one bad row used to hold every
    # alarm write behind it for seconds, retried and counted in write_errors.
    async with running(store) as h:
        h.set("pressure", 12.0)
        h.set("level", 2.0)
        await h.manager.wait_journaled()
        with anyio.fail_after(2):
            await h.manager.acknowledge("p1:high_pressure", OPERATOR, "lone \ud800 surrogate")
            await h.manager.acknowledge("p1:low_level", OPERATOR, "plain comment")
        assert h.manager.write_errors == 0
        assert store.journal_replaced == 1
        (bad,) = [e for e in await h.journal("high_pressure") if e.data["kind"] == "acknowledged"]
        assert bad.data["replaced"]["fields"] == ["message", "data"]
        assert "UnicodeEncodeError" in bad.data["replaced"]["reason"]
        assert "lone \\ud800 surrogate" in bad.message and bad.user == "olga"
        (plain,) = [e for e in await h.journal("low_level") if e.data["kind"] == "acknowledged"]
        assert plain.message.endswith("plain comment") and "replaced" not in plain.data


async def test_actions_need_a_running_manager(store: SqliteStore):
    db = PointDB()
    manager = AlarmManager(db, store)
    manager.add_device(make_pump(db))
    with pytest.raises(RuntimeError, match="not running"):
        await manager.shelve("p1:high_pressure", SUPERVISOR, 60, "why")


def test_flood_thresholds_must_make_a_hysteresis(tmp_path: Path):
    with pytest.raises(ValueError, match="flood_end"):
        AlarmManager(PointDB(), SqliteStore(tmp_path / "x.sqlite"), flood_start=5, flood_end=10)
