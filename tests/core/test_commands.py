"""CommandBus: validate, authorise, interlock, confirm, approve, run, verify, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from cityvisor import (
    DeviceConfig,
    DeviceInfo,
    DeviceType,
    Quality,
    Role,
    User,
    boolean,
    command,
    integer,
    interlock,
    point,
    reaches,
    string,
)
from cityvisor.core.commands import (
    ApprovalError,
    CommandBus,
    CommandOutcome,
    CommandRequest,
    CommandResult,
    ConfirmationError,
    DeviceBusyError,
    DeviceOfflineError,
    GroupResult,
    InterlockedError,
    InvalidArgumentsError,
    JournalUnavailableError,
    NotPermittedError,
    TooManyPendingError,
    UnknownCommandError,
    UnknownDeviceError,
)
from cityvisor.core.devices import Supervisor
from cityvisor.core.points import PointDB
from cityvisor.core.store import JournalEntry, SqliteStore
from cityvisor.plugins.demo import Tank, TankConfig

pytestmark = pytest.mark.anyio

ALICE = User("alice", Role.OPERATOR, frozenset({"dijon"}))
BOB = User("bob", Role.SUPERVISOR)
CAROL = User("carol", Role.SUPERVISOR)
VICTOR = User("victor", Role.VIEWER)
CHLOE = User("chloe", Role.SUPERVISOR, frozenset({"chenove"}))


# --------------------------------------------------------------------------- a test device


class GateConfig(DeviceConfig):
    """A barrier with a few gates."""

    gates: int = 2
    travel: float = 0.02
    """How long a gate takes to move, in seconds."""
    travel_time: float = 0.3
    """How long the bus waits for a gate's position to confirm a move."""


class Gate(DeviceType):
    """Gates over one vehicle loop; a jammed mechanism never moves."""

    family = "access"
    Config = GateConfig

    opened = point(bool, per="gate", doc="Gate open")
    vehicle = point(bool, doc="Vehicle on the loop")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, str, int]] = []
        self.times: dict[tuple[str, int], float] = {}
        self.started: dict[int, anyio.Event] = {}
        self.jammed = False

    @command(
        per="gate",
        opened=boolean(),
        interlocks=[
            interlock(
                "vehicle",
                equals=False,
                reason={"fr": "Véhicule sur la boucle", "en": "Vehicle on the loop"},
            )
        ],
        feedback=reaches("opened", param="opened", within="travel_time"),
    )
    async def move(self, gate: str, opened: bool) -> None:
        """Open or close one gate."""
        await anyio.sleep(self.config.travel)  # type: ignore[attr-defined]
        if not self.jammed:
            self.publish({f"{gate}/opened": opened})

    @command(timeout=0.1)
    async def hang(self) -> None:
        """Never answers."""
        await anyio.sleep_forever()

    @command()
    async def explode(self) -> None:
        """Fails like a relay that welded."""
        raise RuntimeError("relay welded")

    @command(step=integer(1, 10), note=string(max_length=5), timeout=1)
    async def record(self, step: int, note: str) -> None:
        """Takes a little time and notes when it started and ended."""
        self.events.append(("start", self.id, step))
        self.times["start", step] = anyio.current_time()
        self.started.setdefault(step, anyio.Event()).set()
        await anyio.sleep(0.05)
        self.events.append(("end", self.id, step))
        self.times["end", step] = anyio.current_time()

    @command(confirm=True, confirm_within=0.2)
    async def reset(self) -> None:
        """Needs confirmation within 0.2 s."""

    @command(two_person=True, approve_within=0.2, role="operator")
    async def override(self) -> None:
        """Needs a second person within 0.2 s."""

    @command(two_person=True, role="operator", approver_role="operator")
    async def relieve(self) -> None:
        """A shift hand-over any other operator may approve."""

    @command(requires_online=False, closed=boolean())
    async def keep_closed(self, closed: bool) -> None:
        """Hub-side mode: applied by the driver when the link comes back."""
        self.kept_closed = closed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish closed gates and an empty loop, then wait."""
        values: dict[str, Any] = {f"{g}/opened": False for g in self.members("gate")}
        self.publish({**values, "vehicle": False})
        task_status.started()
        await anyio.sleep_forever()


# --------------------------------------------------------------------------- a small city


@dataclass
class City:
    points: PointDB
    devices: dict[str, DeviceType]
    bus: CommandBus
    store: SqliteStore

    async def journal(self) -> list[JournalEntry]:
        """Command journal entries, oldest first."""
        return list(reversed(await self.store.query_journal(kinds=["command"], limit=1000)))


def tank(points: PointDB, device_id: str, zone: str = "dijon", **info: Any) -> Tank:
    return Tank(
        DeviceInfo(device_id, "demo.tank", zone, **info),
        TankConfig(period=0.01, fill_rate=50.0),
        points,
    )


def gate(points: PointDB, device_id: str, zone: str = "dijon", **config: Any) -> Gate:
    return Gate(DeviceInfo(device_id, Gate.type_name, zone), GateConfig(**config), points)


@asynccontextmanager
async def city(
    store: SqliteStore,
    build: Callable[[PointDB], list[DeviceType]],
    *,
    expire: bool = True,
    **options: Any,
) -> AsyncIterator[City]:
    """Devices run by the real supervisor, a bus over them (and its expiry task)."""
    points = PointDB(batch_interval=0.01)
    devices = {d.id: d for d in build(points)}
    supervisor = Supervisor(points, start_timeout=1)
    for device in devices.values():
        device.declare_points()
        supervisor.add(device)
    bus = CommandBus(points, store, devices, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        if expire:
            await tg.start(bus.run)
        for device in devices.values():
            online = await points.wait_for(device.point_id("online"), lambda v: v.value is True, 2)
            assert online is not None, f"{device.id} did not come online"
        yield City(points, devices, bus, store)
        tg.cancel_scope.cancel()


def request(
    device_id: str,
    name: str,
    user: User = ALICE,
    member: str | None = None,
    **arguments: Any,
) -> CommandRequest:
    return CommandRequest(device_id, name, arguments, member, user, comment="test")


# --------------------------------------------------------------------------- running


async def test_a_command_succeeds_when_its_feedback_point_reaches_the_target(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        result = await c.bus.execute(request("tank-1", "set_level", setpoint=40))
        assert result.outcome is CommandOutcome.SUCCEEDED and result.ok
        assert result.feedback == 40.0
        assert result.user == "alice"
        assert result.as_json()["outcome"] == "succeeded"
        [entry] = await c.journal()
        assert entry.user == "alice" and entry.device == "tank-1"
        assert entry.data["outcome"] == "succeeded"
        assert entry.data["command"] == "set_level"
        assert entry.data["arguments"] == {"setpoint": 40.0}
        assert entry.data["origin"] == "api" and entry.data["comment"] == "test"
        assert entry.data["duration_ms"] >= 0
        assert c.bus.outcomes["succeeded"] == 1


class SentSeen(Gate):
    """A gate that looks in the journal at the moment its handler is called."""

    seen: list[list[str]]

    @command(timeout=1)
    async def look(self) -> None:
        """Reads the journal from inside the handler."""
        store: SqliteStore = self.store  # type: ignore[attr-defined]
        entries = await store.query_journal(kinds=["command_sent", "command"])
        self.seen.append([e.kind for e in entries])


async def test_a_command_is_journaled_before_its_handler_is_called(store):
    def build(points: PointDB) -> list[DeviceType]:
        device = SentSeen(DeviceInfo("g1", SentSeen.type_name, "dijon"), GateConfig(), points)
        device.seen, device.store = [], store  # type: ignore[attr-defined]
        return [device]

    async with city(store, build) as c:
        result = await c.bus.execute(request("g1", "look"))
        assert result.outcome is CommandOutcome.SUCCEEDED
        device = c.devices["g1"]
        assert device.seen == [["command_sent"]]  # type: ignore[attr-defined]
        entries = list(reversed(await store.query_journal(kinds=["command_sent", "command"])))
        assert [e.kind for e in entries] == ["command_sent", "command"]
        sent, outcome = entries
        assert sent.data["id"] == outcome.data["id"] == result.id
        assert sent.user == "alice" and sent.data["comment"] == "test"


class RefusingSentStore(SqliteStore):
    """A store whose disk fails exactly when an order is about to be sent."""

    async def journal(self, entry: JournalEntry) -> JournalEntry:
        if entry.kind == "command_sent":
            raise OSError(28, "No space left on device")
        return await super().journal(entry)


async def test_a_command_the_journal_cannot_record_is_refused_and_never_sent(tmp_path):
    store = RefusingSentStore(tmp_path / "full.sqlite")
    await store.open()
    try:
        async with city(store, lambda p: [gate(p, "g1")]) as c:
            with pytest.raises(JournalUnavailableError) as refused:
                await c.bus.execute(request("g1", "record", step=1, note="x"))
            assert refused.value.status == 503
            assert c.devices["g1"].events == []  # type: ignore[attr-defined]
            [entry] = await c.journal()
            assert entry.data["outcome"] == "refused"
            assert entry.data["code"] == "journal_unavailable"
    finally:
        await store.close()


async def test_a_group_order_the_journal_cannot_record_reaches_no_target(tmp_path):
    store = RefusingSentStore(tmp_path / "full.sqlite")
    await store.open()
    try:
        async with city(store, lambda p: [gate(p, "g1"), gate(p, "g2")]) as c:
            with pytest.raises(JournalUnavailableError):
                await c.bus.execute_group(
                    "record", {"step": 1, "note": "x"}, ALICE, family="access"
                )
            assert all(d.events == [] for d in c.devices.values())  # type: ignore[attr-defined]
            [entry] = await c.journal()
            assert entry.data["outcome"] == "refused" and entry.data["targets"] == 2
    finally:
        await store.close()


async def test_a_member_command_waits_for_the_members_own_point(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        result = await c.bus.execute(request("g1", "move", member="gate2", opened=True))
        assert result.outcome is CommandOutcome.SUCCEEDED
        assert c.points.value("dijon/access/g1/gate2/opened").value is True
        assert c.points.value("dijon/access/g1/gate1/opened").value is False


async def test_feedback_that_never_comes_is_a_feedback_timeout(store):
    async with city(store, lambda p: [gate(p, "g1", travel_time=0.2)]) as c:
        c.devices["g1"].jammed = True  # type: ignore[attr-defined]
        started = anyio.current_time()
        result = await c.bus.execute(request("g1", "move", member="gate1", opened=True))
        assert result.outcome is CommandOutcome.FEEDBACK_TIMEOUT
        assert anyio.current_time() - started >= 0.2
        assert "dijon/access/g1/gate1/opened" in result.detail
        assert result.feedback is False
        [entry] = await c.journal()
        assert entry.data["outcome"] == "feedback_timeout"


async def test_a_handler_that_does_not_return_in_time_times_out(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        result = await c.bus.execute(request("g1", "hang"))
        assert result.outcome is CommandOutcome.TIMED_OUT
        assert result.duration_ms >= 100
        [entry] = await c.journal()
        assert entry.data["outcome"] == "timed_out"


async def test_a_handler_exception_is_a_failure_not_a_crash(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        result = await c.bus.execute(request("g1", "explode"))
        assert result.outcome is CommandOutcome.FAILED
        assert "relay welded" in result.message["en"]
        # The device is still usable afterwards.
        assert (await c.bus.execute(request("g1", "reset", BOB))).outcome.pending


# --------------------------------------------------------------------------- refusals


async def test_invalid_arguments_are_refused_with_every_problem_listed(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        with pytest.raises(InvalidArgumentsError) as caught:
            await c.bus.execute(request("g1", "record", step=99, note="far too long", extra=1))
        error = caught.value
        assert error.status == 422
        assert len(error.problems) == 3
        assert "extra" in str(error) and "step" in str(error) and "note" in str(error)
        with pytest.raises(InvalidArgumentsError) as caught:
            await c.bus.execute(request("g1", "move", opened=True))
        assert "needs a gate" in str(caught.value)
        with pytest.raises(InvalidArgumentsError) as caught:
            await c.bus.execute(request("g1", "move", member="gate9", opened="yes"))
        assert len(caught.value.problems) == 2 and "gate9" in str(caught.value)
        entries = await c.journal()
        assert [e.data["outcome"] for e in entries] == ["refused"] * 3
        assert entries[0].data["code"] == "invalid_arguments"
        assert len(entries[0].data["problems"]) == 3


async def test_unknown_devices_and_commands_are_404(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        with pytest.raises(UnknownDeviceError) as caught:
            await c.bus.execute(request("nope", "move"))
        assert caught.value.status == 404
        with pytest.raises(UnknownCommandError) as unknown:
            await c.bus.execute(request("g1", "fly"))
        assert unknown.value.status == 404 and "move" in str(unknown.value)
        assert len(await c.journal()) == 2


async def test_a_role_too_low_is_not_permitted(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        with pytest.raises(NotPermittedError) as caught:
            await c.bus.execute(request("tank-1", "set_level", VICTOR, setpoint=10))
        assert caught.value.status == 403 and "operator" in str(caught.value)
        with pytest.raises(NotPermittedError):
            await c.bus.execute(request("tank-1", "drain", ALICE))  # needs a supervisor
        [first, second] = await c.journal()
        assert first.user == "victor" and first.data["code"] == "not_permitted"
        assert second.user == "alice"


async def test_another_zone_is_not_permitted(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        with pytest.raises(NotPermittedError) as caught:
            await c.bus.execute(request("tank-1", "set_level", CHLOE, setpoint=10))
        assert "zone dijon" in str(caught.value)
        [entry] = await c.journal()
        assert entry.data["outcome"] == "refused" and entry.user == "chloe"


async def test_an_interlock_refuses_and_the_journal_says_why(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        device = c.devices["tank-1"]
        device._maintenance = True  # type: ignore[attr-defined]
        assert await c.points.wait_for(device.point_id("maintenance"), lambda v: v.value, 1)
        with pytest.raises(InterlockedError) as caught:
            await c.bus.execute(request("tank-1", "set_level", setpoint=10))
        error = caught.value
        assert error.status == 409
        assert error.text["fr"].startswith("verrouillé : Réservoir en maintenance")
        assert "Tank under maintenance" in str(error) and "True" in str(error)
        [entry] = await c.journal()
        assert entry.data["outcome"] == "refused" and entry.data["code"] == "interlocked"
        assert entry.data["reason"] == {
            "fr": "Réservoir en maintenance",
            "en": "Tank under maintenance",
        }
        assert entry.data["interlock"]["value"] is True
        assert error.result is not None and error.result.id == entry.data["id"]


async def test_an_interlock_on_a_bad_quality_point_does_not_hold(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        device = c.devices["g1"]
        c.points.update(device.point_id("vehicle"), False, Quality.bad("sensor_failure"))
        with pytest.raises(InterlockedError) as caught:
            await c.bus.execute(request("g1", "move", member="gate1", opened=True))
        assert "bad(sensor_failure)" in str(caught.value)


async def test_an_offline_device_is_refused(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        c.points.update(c.devices["tank-1"].point_id("online"), False)
        with pytest.raises(DeviceOfflineError) as caught:
            await c.bus.execute(request("tank-1", "set_level", setpoint=10))
        assert caught.value.status == 503
        [entry] = await c.journal()
        assert entry.data["code"] == "device_offline"


async def test_a_hub_side_command_is_accepted_while_the_device_is_offline(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        c.points.update(c.devices["g1"].point_id("online"), False)
        result = await c.bus.execute(request("g1", "keep_closed", closed=True))
        assert result.outcome is CommandOutcome.SUCCEEDED
        assert c.devices["g1"].kept_closed is True
        with pytest.raises(DeviceOfflineError):
            await c.bus.execute(request("g1", "move", member="gate1", opened=True))


# --------------------------------------------------------------------------- select before operate


async def test_select_then_operate_by_the_same_user(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        selected = await c.bus.execute(request("tank-1", "drain", BOB))
        assert selected.outcome is CommandOutcome.PENDING_CONFIRMATION
        assert selected.token and selected.expires_in and selected.expires_in > 29
        assert [p.id for p in c.bus.pending_confirmations(BOB)] == [selected.token]
        assert c.bus.pending_confirmations(CAROL) == []
        with pytest.raises(ConfirmationError) as caught:
            await c.bus.confirm(selected.token, CAROL)
        assert "only bob" in str(caught.value)
        done = await c.bus.confirm(selected.token, BOB)
        assert isinstance(done, CommandResult)
        assert done.outcome is CommandOutcome.SUCCEEDED and done.confirmed_by == "bob"
        with pytest.raises(ConfirmationError) as again:
            await c.bus.confirm(selected.token, BOB)
        assert again.value.status == 409
        outcomes = [(e.user, e.data["outcome"]) for e in await c.journal()]
        assert outcomes == [
            ("bob", "pending_confirmation"),
            ("carol", "refused"),
            ("bob", "succeeded"),
            ("bob", "refused"),
        ]
        entries = await c.journal()
        assert entries[2].data["confirmed_by"] == "bob"
        assert entries[2].data["pending"] == selected.token


async def test_a_request_can_carry_its_confirmation_token(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        selected = await c.bus.execute(request("tank-1", "drain", BOB))
        confirmed = CommandRequest("tank-1", "drain", {}, None, BOB, confirmation=selected.token)
        result = await c.bus.execute(confirmed)
        assert result.outcome is CommandOutcome.SUCCEEDED and result.confirmed_by == "bob"


async def test_an_expired_selection_lapses_and_cannot_be_confirmed(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        selected = await c.bus.execute(request("g1", "reset"))
        assert selected.token is not None
        await anyio.sleep(0.3)
        assert c.bus.pending_confirmations() == []
        with pytest.raises(ConfirmationError):
            await c.bus.confirm(selected.token, ALICE)
        outcomes = [e.data["outcome"] for e in await c.journal()]
        assert outcomes == ["pending_confirmation", "lapsed", "refused"]


async def test_a_late_confirmation_is_410_gone(store):
    # Without the expiry task the selection is still there, but too old.
    async with city(store, lambda p: [gate(p, "g1")], expire=False) as c:
        selected = await c.bus.execute(request("g1", "reset"))
        assert selected.token is not None
        await anyio.sleep(0.25)
        with pytest.raises(ConfirmationError) as caught:
            await c.bus.confirm(selected.token, ALICE)
        assert caught.value.status == 410
        outcomes = [e.data["outcome"] for e in await c.journal()]
        assert outcomes == ["pending_confirmation", "lapsed"]


async def test_the_author_can_cancel_a_selection(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        selected = await c.bus.execute(request("g1", "reset"))
        assert selected.token is not None
        with pytest.raises(NotPermittedError):
            await c.bus.cancel(selected.token, CAROL)
        cancelled = await c.bus.cancel(selected.token, ALICE, "wrong gate")
        assert cancelled.outcome is CommandOutcome.CANCELLED
        assert c.bus.pending_confirmations() == []


# --------------------------------------------------------------------------- two-person rule


async def test_two_person_command_runs_when_another_supervisor_approves(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        asked = await c.bus.execute(request("tank-1", "toggle_maintenance", BOB))
        assert asked.outcome is CommandOutcome.PENDING_APPROVAL and asked.approval_id
        [pending] = c.bus.pending_approvals()
        assert pending.as_json()["requested_by"] == "bob"
        assert c.bus.pending_approvals(BOB) == []  # nothing bob may approve himself
        with pytest.raises(NotPermittedError) as own:
            await c.bus.approve(asked.approval_id, BOB)
        assert "its author" in str(own.value)
        with pytest.raises(NotPermittedError):
            await c.bus.approve(asked.approval_id, ALICE)  # operator: role too low
        done = await c.bus.approve(asked.approval_id, CAROL, "checked on site")
        assert isinstance(done, CommandResult)
        assert done.outcome is CommandOutcome.SUCCEEDED
        assert done.user == "bob" and done.approver == "carol"
        device = c.devices["tank-1"]
        assert await c.points.wait_for(device.point_id("maintenance"), lambda v: v.value, 1)
        entries = await c.journal()
        assert [(e.user, e.data["outcome"]) for e in entries] == [
            ("bob", "pending_approval"),
            ("bob", "refused"),
            ("alice", "refused"),
            ("bob", "succeeded"),
        ]
        assert entries[1].data["requested_by"] == "bob"
        assert entries[3].data["approver"] == "carol"
        assert entries[3].data["approval_comment"] == "checked on site"
        assert c.bus.pending_approvals() == []


async def test_a_rejected_command_never_runs(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        asked = await c.bus.execute(request("tank-1", "toggle_maintenance", BOB))
        assert asked.approval_id is not None
        rejected = await c.bus.reject(asked.approval_id, CAROL, "not during the storm")
        assert rejected.outcome is CommandOutcome.REJECTED
        with pytest.raises(ApprovalError) as caught:
            await c.bus.approve(asked.approval_id, CAROL)
        assert caught.value.status == 404
        assert c.points.value(c.devices["tank-1"].point_id("maintenance")).value is False
        entries = await c.journal()
        assert [e.data["outcome"] for e in entries] == ["pending_approval", "rejected", "refused"]
        assert entries[1].data["approver"] == "carol"
        assert entries[1].data["approval_comment"] == "not during the storm"


async def test_an_approver_needs_the_declared_approver_role_supervisor_by_default(store):
    dave = User("dave", Role.OPERATOR, frozenset({"dijon"}))
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        spec = c.devices["g1"].command_specs["override"]
        assert spec.approver_role is Role.SUPERVISOR  # nobody said otherwise
        asked = await c.bus.execute(request("g1", "override"))
        assert [p.id for p in c.bus.pending_approvals(dave)] == []
        with pytest.raises(NotPermittedError, match="needs the supervisor role"):
            await c.bus.approve(asked.approval_id, dave)
        [pending] = c.bus.pending_approvals(BOB)
        assert pending.as_json()["approver_role"] == "supervisor"
        done = await c.bus.approve(asked.approval_id, BOB)
        assert isinstance(done, CommandResult) and done.ok and done.approver == "bob"

        relieve = await c.bus.execute(request("g1", "relieve"))
        assert [p.id for p in c.bus.pending_approvals(dave)] == [relieve.approval_id]
        done = await c.bus.approve(relieve.approval_id, dave)
        assert isinstance(done, CommandResult) and done.ok and done.approver == "dave"


def test_an_approver_role_below_the_command_role_is_raised_to_it():
    @command(two_person=True, role="admin", approver_role="operator")
    async def wipe(self: Any) -> None:
        """Only an admin sends it, so only an admin approves it."""

    spec = wipe.__cityvisor_command__  # type: ignore[attr-defined]
    assert spec.approver_role is Role.OPERATOR and spec.approver_role_needed is Role.ADMIN


async def test_an_unapproved_command_lapses(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        asked = await c.bus.execute(request("g1", "override"))
        assert asked.approval_id is not None
        await anyio.sleep(0.3)
        assert c.bus.pending_approvals() == []
        with pytest.raises(ApprovalError):
            await c.bus.approve(asked.approval_id, BOB)
        outcomes = [e.data["outcome"] for e in await c.journal()]
        assert outcomes == ["pending_approval", "lapsed", "refused"]
        assert c.bus.outcomes["lapsed"] == 1


async def test_a_device_can_require_approval_for_any_command(store):
    build = lambda p: [tank(p, "tank-1", require_approval=frozenset({"set_level"}))]  # noqa: E731
    async with city(store, build) as c:
        asked = await c.bus.execute(request("tank-1", "set_level", setpoint=60))
        assert asked.outcome is CommandOutcome.PENDING_APPROVAL
        assert asked.approval_id is not None
        done = await c.bus.approve(asked.approval_id, BOB)
        assert isinstance(done, CommandResult) and done.ok and done.feedback == 60.0


async def test_open_requests_are_bounded(store):
    async with city(store, lambda p: [gate(p, "g1")], max_pending=2) as c:
        await c.bus.execute(request("g1", "override"))
        await c.bus.execute(request("g1", "override"))
        with pytest.raises(TooManyPendingError) as caught:
            await c.bus.execute(request("g1", "override"))
        assert caught.value.status == 503
        assert len(c.bus.pending_approvals()) == 2


# --------------------------------------------------------------------------- ordering


async def test_commands_to_one_device_run_in_order_while_others_run_in_parallel(store):
    async with city(store, lambda p: [gate(p, "g1"), gate(p, "g2")]) as c:
        results: dict[str, CommandResult] = {}

        async def send(key: str, device_id: str, step: int) -> None:
            results[key] = await c.bus.execute(request(device_id, "record", step=step, note=key))

        g1: Gate = c.devices["g1"]  # type: ignore[assignment]
        g2: Gate = c.devices["g2"]  # type: ignore[assignment]
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "a1", "g1", 1)
            # a2 arrives once a1 runs; b1 goes to another device meanwhile.
            await g1.started.setdefault(1, anyio.Event()).wait()
            tg.start_soon(send, "a2", "g1", 2)
            tg.start_soon(send, "b1", "g2", 1)
        assert all(r.ok for r in results.values())
        assert g1.events == [
            ("start", "g1", 1),
            ("end", "g1", 1),
            ("start", "g1", 2),
            ("end", "g1", 2),
        ]
        assert g2.events == [("start", "g2", 1), ("end", "g2", 1)]
        # g2 ran while g1's first command was still running, not after it.
        assert g2.times["start", 1] < g1.times["end", 1]


async def test_a_device_with_too_many_queued_commands_is_busy(store):
    async with city(store, lambda p: [gate(p, "g1")], max_queue=1) as c:
        g1: Gate = c.devices["g1"]  # type: ignore[assignment]
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.bus.execute, request("g1", "record", step=1, note="a"))
            await g1.started.setdefault(1, anyio.Event()).wait()
            tg.start_soon(c.bus.execute, request("g1", "record", step=2, note="b"))
            await anyio.sleep(0.01)  # let it queue behind the first
            with pytest.raises(DeviceBusyError) as caught:
                await c.bus.execute(request("g1", "record", step=3, note="c"))
            assert caught.value.status == 503
        outcomes = sorted(e.data["outcome"] for e in await c.journal())
        assert outcomes == ["refused", "succeeded", "succeeded"]


async def test_a_caller_that_goes_away_leaves_a_cancelled_record(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        g1: Gate = c.devices["g1"]  # type: ignore[assignment]
        with anyio.move_on_after(0.02):
            await c.bus.execute(request("g1", "record", step=1, note="a"))
        assert g1.events == [("start", "g1", 1)]
        [entry] = await c.journal()
        assert entry.data["outcome"] == "cancelled"
        # The device's queue is free again.
        assert (await c.bus.execute(request("g1", "record", step=2, note="b"))).ok


# --------------------------------------------------------------------------- group orders


async def test_a_group_order_by_zone_gives_a_result_per_device(store):
    def build(points: PointDB) -> list[DeviceType]:
        return [
            tank(points, "tank-1"),
            tank(points, "tank-2"),
            tank(points, "tank-3", zone="chenove"),
        ]

    async with city(store, build) as c:
        device = c.devices["tank-2"]
        device._maintenance = True  # type: ignore[attr-defined]
        assert await c.points.wait_for(device.point_id("maintenance"), lambda v: v.value, 1)
        group = await c.bus.execute_group("set_level", {"setpoint": 30}, ALICE, zone="dijon")
        assert isinstance(group, GroupResult)
        assert group.targets == 2
        by_device = {r.device_id: r for r in group.results}
        assert set(by_device) == {"tank-1", "tank-2"}
        assert by_device["tank-1"].outcome is CommandOutcome.SUCCEEDED
        assert by_device["tank-2"].outcome is CommandOutcome.REFUSED
        assert by_device["tank-2"].code == "interlocked" and by_device["tank-2"].status == 409
        assert group.outcome is CommandOutcome.FAILED
        assert group.summary == {"succeeded": 1, "refused": 1}
        assert group.as_json()["results"][0]["group"] == group.id
        entries = await c.journal()
        assert len(entries) == 3
        order = entries[-1]
        assert order.device is None and order.data["group"] == group.id
        assert order.data["selector"] == {"zone": "dijon", "members": "all"}
        assert order.data["summary"] == {"succeeded": 1, "refused": 1}
        assert {e.device for e in entries[:2]} == {"tank-1", "tank-2"}
        assert all(e.data["group"] == group.id for e in entries[:2])
        # One order entry for the whole group, before any target was sent.
        (sent,) = await c.store.query_journal(kinds=["command_sent"])
        assert sent.data["group"] == group.id and sent.data["targets"] == 2
        assert sent.id is not None and all(sent.id < e.id for e in entries if e.id is not None)


async def test_a_group_order_reaches_every_member_of_a_per_member_command(store):
    async with city(store, lambda p: [gate(p, "g1", gates=3), gate(p, "g2")]) as c:
        group = await c.bus.execute_group("move", {"opened": True}, ALICE, family="access")
        assert group.outcome is CommandOutcome.SUCCEEDED
        assert sorted((r.device_id, r.member) for r in group.results) == [
            ("g1", "gate1"),
            ("g1", "gate2"),
            ("g1", "gate3"),
            ("g2", "gate1"),
            ("g2", "gate2"),
        ]
        only = await c.bus.execute_group(
            "move", {"opened": False}, ALICE, family="access", members=["gate3"]
        )
        outcomes = {(r.device_id, r.outcome, r.code) for r in only.results}
        assert outcomes == {
            ("g1", CommandOutcome.SUCCEEDED, None),
            ("g2", CommandOutcome.REFUSED, "invalid_arguments"),
        }


async def test_a_group_order_needing_confirmation_is_confirmed_once(store):
    async with city(store, lambda p: [tank(p, "tank-1"), tank(p, "tank-2")]) as c:
        selected = await c.bus.execute_group("drain", {}, BOB, family="demo")
        assert selected.outcome is CommandOutcome.PENDING_CONFIRMATION
        assert selected.token is not None and selected.results == ()
        [pending] = c.bus.pending_confirmations()
        assert pending.as_json()["group"]["targets"] == 2
        done = await c.bus.confirm(selected.token, BOB)
        assert isinstance(done, GroupResult)
        assert done.outcome is CommandOutcome.SUCCEEDED and len(done.results) == 2
        assert all(r.confirmed_by == "bob" for r in done.results)
        entries = await c.journal()
        assert [e.data["outcome"] for e in entries] == [
            "pending_confirmation",
            "succeeded",
            "succeeded",
            "succeeded",
        ]
        assert entries[0].device is None and entries[-1].device is None


async def test_a_group_order_needing_approval_checks_the_approvers_zones(store):
    def build(points: PointDB) -> list[DeviceType]:
        return [tank(points, "tank-1"), tank(points, "tank-2", zone="chenove")]

    async with city(store, build) as c:
        asked = await c.bus.execute_group("toggle_maintenance", {}, BOB, family="demo")
        assert asked.outcome is CommandOutcome.PENDING_APPROVAL
        assert asked.approval_id is not None
        with pytest.raises(NotPermittedError) as caught:
            await c.bus.approve(asked.approval_id, CHLOE)  # chenove only
        assert "dijon" in str(caught.value)
        done = await c.bus.approve(asked.approval_id, CAROL)
        assert isinstance(done, GroupResult) and done.outcome is CommandOutcome.SUCCEEDED
        assert {r.approver for r in done.results} == {"carol"}


async def test_a_group_order_without_a_match_or_selector_is_refused(store):
    async with city(store, lambda p: [tank(p, "tank-1")]) as c:
        with pytest.raises(UnknownDeviceError):
            await c.bus.execute_group("set_level", {"setpoint": 1}, ALICE, zone="beaune")
        with pytest.raises(InvalidArgumentsError):
            await c.bus.execute_group("set_level", {"setpoint": 1}, ALICE)
        with pytest.raises(InvalidArgumentsError) as caught:
            await c.bus.execute_group("set_level", {"setpoint": 500}, ALICE, zone="dijon")
        assert "setpoint" in str(caught.value)
        entries = await c.journal()
        assert [e.data["outcome"] for e in entries] == ["refused"] * 3


# --------------------------------------------------------------------------- the audit trail


async def test_every_attempt_is_journaled(store):
    async with city(store, lambda p: [tank(p, "tank-1"), gate(p, "g1")]) as c:
        attempts = [
            request("tank-1", "set_level", setpoint=25),
            request("tank-1", "set_level", setpoint=-5),
            request("tank-1", "set_level", VICTOR, setpoint=5),
            request("g1", "explode"),
            request("g1", "hang"),
            request("g1", "reset"),
            request("g2", "reset"),
        ]
        ids = []
        for attempt in attempts:
            try:
                ids.append((await c.bus.execute(attempt)).id)
            except (InvalidArgumentsError, NotPermittedError, UnknownDeviceError) as error:
                assert error.result is not None
                ids.append(error.result.id)
        entries = await c.journal()
        assert [e.data["id"] for e in entries] == ids
        assert [e.data["outcome"] for e in entries] == [
            "succeeded",
            "refused",
            "refused",
            "failed",
            "timed_out",
            "pending_confirmation",
            "refused",
        ]
        for entry in entries:
            assert entry.kind == "command"
            for key in (
                "command",
                "member",
                "arguments",
                "outcome",
                "duration_ms",
                "approver",
                "confirmed_by",
                "reason",
                "origin",
                "comment",
            ):
                assert key in entry.data, key
        assert sum(c.bus.outcomes.values()) == len(attempts)


async def test_commands_still_waiting_are_journaled_as_cancelled_on_shutdown(store):
    async with city(store, lambda p: [gate(p, "g1")]) as c:
        await c.bus.execute(request("g1", "reset"))
    entries = list(reversed(await store.query_journal(kinds=["command"])))
    assert [e.data["outcome"] for e in entries] == ["pending_confirmation", "cancelled"]
