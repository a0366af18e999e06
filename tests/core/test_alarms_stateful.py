"""The alarm state machine explored by Hypothesis: the ISA-18.2 rules hold whatever happens.

Two levels:

- :class:`AlarmRules` drives the pure :func:`next_status` of one device
  (its communication alarm, a plain alarm and a latching one) with every
  event an operator or the field can cause, and checks the invariants
  after every step: legal states only, an acknowledgement is never lost,
  an unacknowledged alarm is never silently acknowledged, nothing active
  and visible goes unannunciated, suppression follows communication.
- :func:`test_the_manager_agrees_with_the_state_machine` runs random
  sequences through a real AlarmManager, PointDB and SQLite store, and
  checks that it ends where the pure model says, and that the journal holds
  exactly what was reported, in the same order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cityvisor import DeviceConfig, DeviceInfo, DeviceType, alarm, point
from cityvisor.core.alarms import (
    AlarmActionError,
    AlarmManager,
    AlarmState,
    AlarmStatus,
    Step,
    next_status,
)
from cityvisor.core.points import PointDB
from cityvisor.core.store import SqliteStore
from cityvisor.core.users import Role, User

NORMAL = AlarmState.NORMAL
UNACK = AlarmState.UNACK_ACTIVE
ACK = AlarmState.ACK_ACTIVE
RTN = AlarmState.RTN_UNACK
UNACKED = (UNACK, RTN)

LATCHING = {"communication_lost": False, "high": False, "fault": True}
CHILDREN = ("high", "fault")


def needs_ack(status: AlarmStatus) -> bool:
    """What an acknowledgement is accepted for."""
    return status.state in UNACKED or (status.state is ACK and status.latched)


def check_legal(status: AlarmStatus, latching: bool) -> None:
    """The states ISA-18.2 allows, with our latching and hiding rules."""
    if status.state is RTN:
        assert not status.active, "returned to normal but active"
    if status.latched:
        assert latching, "a non-latching alarm is latched"
        assert not status.active, "latched while the condition holds"
        assert status.state in (UNACK, ACK), "latched but not shown as active"
    if status.state in (UNACK, ACK):
        assert status.active or status.latched, f"{status.state} without a condition or latch"
    if status.active and not status.hidden:
        assert status.annunciated, "active, not hidden, yet not annunciated"
    if status.hidden:
        assert not status.annunciated, "hidden yet annunciated"


def check_step(old: AlarmStatus, new: AlarmStatus, event: str, steps: tuple[Step, ...]) -> None:
    """What a single transition may and may not do."""
    kinds = [kind for kind, _ in steps]
    if old.state is ACK:
        assert new.state not in UNACKED, f"{event} lost an acknowledgement"
    if old.state in UNACKED and new.state not in UNACKED:
        assert event == "ack", f"{event} acknowledged an alarm silently"
    if old.state is NORMAL and new.state in UNACKED:
        assert "raised" in kinds, f"{event} made an alarm unacknowledged without raising it"
    if steps:
        assert steps[-1][1] is new.state, "the last step does not end in the new state"
    else:
        # A silent change must not change what the operator sees.
        assert old.state is new.state and old.annunciated == new.annunciated


class AlarmRules(RuleBasedStateMachine):
    """One device's alarms under random field events and operator actions."""

    def __init__(self) -> None:
        super().__init__()
        self.status = {name: AlarmStatus() for name in LATCHING}
        self.condition = dict.fromkeys(LATCHING, False)

    def apply(self, name: str, event: str) -> tuple[Step, ...]:
        old = self.status[name]
        new, steps = next_status(old, event, latching=LATCHING[name])
        check_step(old, new, event, steps)
        self.status[name] = new
        return steps

    def refused(self, name: str, event: str) -> None:
        with pytest.raises(AlarmActionError):
            next_status(self.status[name], event, latching=LATCHING[name])

    # -- the field ---------------------------------------------------------

    @rule(name=st.sampled_from(CHILDREN), holds=st.booleans())
    def condition_changes(self, name: str, holds: bool) -> None:
        self.condition[name] = holds
        self.apply(name, "raise" if holds else "clear")

    @rule(lost=st.booleans())
    def communication_changes(self, lost: bool) -> None:
        was_lost = self.status["communication_lost"].active
        self.condition["communication_lost"] = lost
        self.apply("communication_lost", "raise" if lost else "clear")
        if lost != was_lost:
            for child in CHILDREN:
                self.apply(child, "suppress" if lost else "unsuppress")

    @rule(inside=st.booleans())
    def maintenance_changes(self, inside: bool) -> None:
        for name in LATCHING:
            self.apply(name, "start_maintenance" if inside else "end_maintenance")

    # -- operators ---------------------------------------------------------

    @rule(name=st.sampled_from(list(LATCHING)))
    def acknowledge(self, name: str) -> None:
        if not needs_ack(self.status[name]):
            self.refused(name, "ack")
            return
        steps = self.apply(name, "ack")
        assert [kind for kind, _ in steps] == ["acknowledged"]
        assert self.status[name].acked and not self.status[name].latched

    @rule(name=st.sampled_from(list(LATCHING)), shelve=st.booleans())
    def shelving(self, name: str, shelve: bool) -> None:
        event = "shelve" if shelve else "unshelve"
        if self.status[name].shelved == shelve:
            self.refused(name, event)
            return
        steps = self.apply(name, event)
        assert steps[0][0] == ("shelved" if shelve else "unshelved")  # always journaled

    @rule(name=st.sampled_from(list(LATCHING)), out=st.booleans())
    def out_of_service(self, name: str, out: bool) -> None:
        event = "remove_from_service" if out else "return_to_service"
        if self.status[name].out_of_service == out:
            self.refused(name, event)
            return
        steps = self.apply(name, event)
        assert steps[0][0] == ("out_of_service" if out else "in_service")

    # -- invariants --------------------------------------------------------

    @invariant()
    def states_are_legal(self) -> None:
        for name, status in self.status.items():
            check_legal(status, LATCHING[name])

    @invariant()
    def the_alarm_follows_its_condition(self) -> None:
        for name, status in self.status.items():
            assert status.active == self.condition[name]

    @invariant()
    def suppression_follows_communication(self) -> None:
        comm = self.status["communication_lost"]
        assert not comm.suppressed
        for child in CHILDREN:
            assert self.status[child].suppressed == comm.active


TestAlarmRules = AlarmRules.TestCase
TestAlarmRules.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("latching", [False, True])
@pytest.mark.parametrize("event", ["raise", "clear", "ack", "shelve", "unshelve", "suppress"])
def test_every_event_from_every_state_is_legal_or_refused(event: str, latching: bool):
    """Exhaustive over the states one can reach by hand: legal result, or a clear refusal."""
    for state in AlarmState:
        for active in (False, True):
            for latched in (False, True):
                for hidden in (False, True):
                    status = AlarmStatus(state, active, latched, shelved=hidden)
                    try:
                        check_legal(status, latching)
                    except AssertionError:
                        continue  # not a reachable status
                    try:
                        new, steps = next_status(status, event, latching=latching)
                    except AlarmActionError as exc:
                        assert str(exc)
                        continue
                    check_legal(new, latching)
                    check_step(status, new, event, steps)


def test_an_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown alarm event"):
        next_status(AlarmStatus(), "explode")


# --------------------------------------------------------------------------- end to end


class Station(DeviceType):
    """A device with one plain and one latching alarm (and its communication alarm)."""

    family = "test"
    Config = DeviceConfig
    pressure = point(float)
    tripped = point(bool)
    high = alarm("pressure", high=10, priority="high")
    fault = alarm("tripped", equals=True, latching=True)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError


SUPERVISOR = User("sam", Role.SUPERVISOR)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("field"), st.sampled_from(["high", "fault", "online"]), st.booleans()),
        st.tuples(st.just("ack"), st.sampled_from(list(LATCHING)), st.just(True)),
        st.tuples(st.just("shelve"), st.sampled_from(list(LATCHING)), st.booleans()),
        st.tuples(st.just("oos"), st.sampled_from(list(LATCHING)), st.booleans()),
    ),
    max_size=25,
)


def operator_event(op: str, flag: bool) -> str:
    """The state-machine event an operator action is."""
    if op == "ack":
        return "ack"
    if op == "shelve":
        return "shelve" if flag else "unshelve"
    return "remove_from_service" if flag else "return_to_service"


async def operate(manager: AlarmManager, op: str, alarm_id: str, flag: bool) -> None:
    """Do an operator action through the manager's public API."""
    if op == "ack":
        await manager.acknowledge(alarm_id, SUPERVISOR)
    elif op == "shelve" and flag:
        await manager.shelve(alarm_id, SUPERVISOR, 3600, "test")
    elif op == "shelve":
        await manager.unshelve(alarm_id, SUPERVISOR)
    else:
        await manager.set_out_of_service(alarm_id, SUPERVISOR, flag, "test")


@pytest.mark.anyio
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_the_manager_agrees_with_the_state_machine(ops: list[tuple[str, str, bool]]):
    model = AlarmRules()
    model.condition["communication_lost"] = False
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "alarms.sqlite")
        await store.open()
        db = PointDB()
        station = Station(DeviceInfo("s1", Station.type_name, "dijon"), DeviceConfig(), db)
        station.declare_points()
        reported: list[tuple[str, str]] = []
        manager = AlarmManager(
            db, store, on_transition=lambda a, t: reported.append((a.id, t.kind))
        )
        manager.add_device(station)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                for op, name, flag in ops:
                    alarm_id = f"s1:{name}"
                    if op == "field":
                        if name == "online":
                            station.publish({"online": flag})
                            if model.condition["communication_lost"] != (not flag):
                                model.communication_changes(not flag)
                        elif model.condition[name] != flag:
                            value = {"high": 12.0 if flag else 2.0, "fault": flag}[name]
                            station.publish({"pressure" if name == "high" else "tripped": value})
                            model.condition_changes(name, flag)
                        continue
                    event = operator_event(op, flag)
                    try:
                        next_status(model.status[name], event, latching=LATCHING[name])
                    except AlarmActionError:
                        with pytest.raises(AlarmActionError):
                            await operate(manager, op, alarm_id, flag)
                    else:
                        await operate(manager, op, alarm_id, flag)
                        model.apply(name, event)
                await manager.wait_journaled()
                for name, expected in model.status.items():
                    assert manager.get(f"s1:{name}").status == expected, name
                tg.cancel_scope.cancel()
            journal = await store.query_journal(limit=10_000)
            assert [(e.alarm, e.data["kind"]) for e in reversed(journal)] == reported
            saved = await store.load_alarm_states()
            for alarm_id, _ in reported:
                assert saved[alarm_id]["state"] == manager.get(alarm_id).state.value
        finally:
            await store.close()
