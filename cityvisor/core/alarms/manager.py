"""The AlarmManager: alarm registry, evaluation from the point database, timers and the run loop."""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..declarations import COMMUNICATION_ALARM, AlarmSpec, Priority
from ..points import Point, PointDB, PointValue, QualityStatus, now_ms
from ..store import Store
from ..users import Role, User
from .actions import _OperatorActions
from .errors import AlarmActionError, AlarmPermissionError, UnknownAlarmError
from .journal import _Journal
from .kpis import _FloodAndKpis
from .maintenance import _create_maintenance_table, _load_windows, _MaintenanceWindows
from .model import Alarm, MaintenanceWindow, Procedure, Transition
from .parts import _Flood, _Pending
from .states import _NORMAL, _RTN, next_status
from .subscriptions import AlarmResync, AlarmSubscription

if TYPE_CHECKING:
    from ..devices import DeviceType

log = logging.getLogger(__name__)


# A point that is bad because its device cannot be reached says nothing about the
# equipment: the communication alarm reports it, and suppresses the others.
_COMMUNICATION_REASONS = frozenset({"comm_failure", "not_connected"})


_DAY = 86_400.0


def _monotonic() -> float:
    try:
        return anyio.current_time()
    except RuntimeError:
        # Point updates from outside an event loop (a script, a benchmark): timers
        # still need a clock, and only the loop's own clock can drive the run task.
        return time.monotonic()


class AlarmManager(_Journal, _OperatorActions, _MaintenanceWindows, _FloodAndKpis):
    """Runs every alarm: evaluation, delays, operator actions, journal, KPIs, subscribers.

    Evaluation is synchronous, in the point database's listener: one dict
    lookup per change, and more work only when an alarm's condition changes.
    The listener never does I/O; it queues transitions and wakes :meth:`run`,
    which writes them to the journal and the ``alarm_state`` table *first*,
    and only then tells subscribers and ``on_transition`` (the hub turns
    that into the ``cityvisor_alarm_transition`` hook). Operator actions wait
    for their own transition to be written before they return.

    ``flood_start`` / ``flood_end`` are numbers of alarms raised in a zone
    within ``flood_window`` seconds (ISA-18.2 counts per 10 minutes): a
    flood starts above the first and ends below the second.
    """

    def __init__(
        self,
        points: PointDB,
        store: Store,
        *,
        on_transition: Callable[[Alarm, Transition], None] | None = None,
        flood_start: int = 10,
        flood_end: int = 5,
        flood_window: float = 600.0,
        max_shelve: float = 7 * _DAY,
        stale_after: float = _DAY,
        chatter_count: int = 3,
        chatter_window: float = 60.0,
        kpi_horizon: float = _DAY,
    ) -> None:
        if flood_end > flood_start:
            raise ValueError("flood_end must not be above flood_start (it is the hysteresis)")
        self.points = points
        self.store = store
        self.on_transition = on_transition
        self.flood_start = flood_start
        self.flood_end = flood_end
        self.flood_window = flood_window
        self.max_shelve = max_shelve
        self.stale_after = stale_after
        self.chatter_count = chatter_count
        self.chatter_window = chatter_window
        self.kpi_horizon = kpi_horizon
        self.procedures: dict[str, Procedure] = {}
        """Operating procedures by id (see :meth:`add_procedure`)."""
        self.write_errors = 0
        """Failed journal writes since start (each is retried)."""
        self._alarms: dict[str, Alarm] = {}
        self._by_point: dict[str, list[Alarm]] = {}
        self._by_device: dict[str, list[Alarm]] = {}
        self._communication: dict[str, Alarm] = {}
        self._windows: dict[str, MaintenanceWindow] = {}
        self._open_windows: set[str] = set()
        self._expired_windows: set[str] = set()
        self._pending: list[_Pending] = []
        self._in_flight: list[_Pending] = []
        self._timers: list[tuple[float, int, str, Any, int]] = []
        self._timer_seq = 0
        self._subscriptions: list[AlarmSubscription] = []
        self._flood: dict[str, _Flood] = {}
        # (ts, alarm id) of every annunciated raise within kpi_horizon, for bad actors
        # and chattering; bounded so that a storm cannot grow memory without limit.
        self._raise_log: deque[tuple[int, str]] = deque(maxlen=200_000)
        self._saved: dict[str, dict[str, Any]] | None = None
        self._wake: anyio.Event | None = None
        self._running = False

    # ------------------------------------------------------------------ definitions

    def add_device(self, device: DeviceType) -> list[Alarm]:
        """Create the alarms a device's type declares: one per spec, per member if per-member."""
        device_type = type(device)
        created = []
        for spec in device_type.alarm_specs.values():
            point_spec = device_type.point_specs[spec.point]
            members: list[str | None] = (
                list(device.members(point_spec.per)) if point_spec.per else [None]
            )
            for member in members:
                alarm_id = (
                    f"{device.id}:{spec.name}"
                    if member is None
                    else f"{device.id}:{member}:{spec.name}"
                )
                created.append(
                    self.add(
                        spec,
                        device.point_id(spec.point, member),
                        device_id=device.id,
                        zone=device.zone,
                        family=device.family,
                        member=member,
                        alarm_id=alarm_id,
                    )
                )
        return created

    def add(
        self,
        spec: AlarmSpec,
        point_id: str,
        *,
        device_id: str = "",
        zone: str = "",
        family: str = "",
        member: str | None = None,
        alarm_id: str | None = None,
    ) -> Alarm:
        """Create one alarm on a full point id (the config's alarms: id ``config:<name>``).

        A config alarm on a device's point (``device_id`` given) is suppressed
        with the device's other alarms when its communication is lost.
        """
        if not spec.name:
            raise ValueError(f"alarm on {point_id!r} has no name")
        alarm_id = alarm_id or f"config:{spec.name}"
        if alarm_id in self._alarms:
            raise ValueError(f"alarm {alarm_id!r} exists already")
        new = Alarm(
            alarm_id, spec, point_id, device_id=device_id, zone=zone, family=family, member=member
        )
        self._alarms[alarm_id] = new
        self._by_point.setdefault(point_id, []).append(new)
        if device_id:
            self._by_device.setdefault(device_id, []).append(new)
            if spec.name == COMMUNICATION_ALARM and not spec.suppressible:
                self._communication[device_id] = new
        if self._saved is not None:
            # Added while running: restore it and evaluate it as run() did for the others.
            self._restore_one(new)
            self._restore_hiding(new)
            self._reveal_if_unseen(new)
            self._evaluate_now(new)
        return new

    def add_procedure(self, procedure: Procedure) -> None:
        """Make a procedure available to the alarms that name it (a newer version replaces)."""
        self.procedures[procedure.id] = procedure

    # ------------------------------------------------------------------ queries

    def get(self, alarm_id: str) -> Alarm:
        """One alarm; raise :class:`UnknownAlarmError` if there is none."""
        try:
            return self._alarms[alarm_id]
        except KeyError:
            raise UnknownAlarmError(alarm_id) from None

    def __len__(self) -> int:
        return len(self._alarms)

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._alarms

    def has_saved_state(self, alarm_id: str) -> bool:
        """True if the store held a state for ``alarm_id`` when the manager started.

        For an alarm created on demand (the hub's journal alarm): added again
        after a restart, it takes that state back.
        """
        return alarm_id in (self._saved or {})

    def alarms(
        self,
        zone: str | None = None,
        active_only: bool = False,
        priority: Priority | str | None = None,
    ) -> list[Alarm]:
        """Every alarm, or those of a zone, active ones only, or of one priority."""
        wanted = Priority.parse(priority) if priority is not None else None
        return [
            a
            for a in self._alarms.values()
            if (zone is None or a.zone == zone)
            and (not active_only or a.active or a.latched)
            and (wanted is None or a.spec.priority is wanted)
        ]

    def annunciated(self) -> list[Alarm]:
        """What the operator should see: not normal and not hidden.

        Highest priority first, then unacknowledged before acknowledged, then newest first.
        """
        shown = [a for a in self._alarms.values() if a.annunciated]
        shown.sort(key=lambda a: (-a.spec.priority, a.acked, -(a.raised_at or 0)))
        return shown

    def _annunciated_json(self) -> list[dict[str, Any]]:
        return [a.as_json() for a in self.annunciated()]

    def counts_by_priority(
        self, zones: Callable[[str], bool] | None = None
    ) -> dict[str, dict[str, int]]:
        """Annunciated and unacknowledged alarms per priority (the alarm banner).

        ``zones``: count only the alarms of the zones it accepts (a reader's zones).
        """
        counts = {str(p): {"annunciated": 0, "unacked": 0} for p in Priority}
        for a in self._alarms.values():
            if a.annunciated and (zones is None or zones(a.zone)):
                entry = counts[str(a.spec.priority)]
                entry["annunciated"] += 1
                entry["unacked"] += not a.acked
        return counts

    def subscribe(self, max_buffer: int = 64) -> AlarmSubscription:
        """Receive alarm events as they are journaled; the first message is an :class:`AlarmResync`."""
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        sub = AlarmSubscription(self, max_buffer)
        self._subscriptions.append(sub)
        sub._send.send_nowait(AlarmResync(self._annunciated_json(), 0))
        return sub

    def _unsubscribe(self, sub: AlarmSubscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    # ------------------------------------------------------------------ evaluation (hot path)

    def _on_point_change(self, point: Point, value: PointValue) -> None:
        """The point database's listener: evaluate the alarms on this point (the hot path)."""
        alarms = self._by_point.get(point.id)
        if alarms is None:
            return
        quality = value.quality
        if quality.status is QualityStatus.BAD and quality.reason in _COMMUNICATION_REASONS:
            # Unreachable, not faulty: every condition stays as it was.
            return
        for alarm in alarms:
            alarm.value = value.value
            condition = alarm._evaluate(value, alarm.condition)
            if condition != alarm.condition:
                alarm.condition = condition
                self._condition_changed(alarm, condition)

    def _evaluate_now(self, alarm: Alarm) -> None:
        """Evaluate one alarm against its point's current value (at start, or when added)."""
        if alarm.point_id not in self.points:
            return
        value = self.points.value(alarm.point_id)
        if not value.received_ts:
            return
        quality = value.quality
        if quality.status is QualityStatus.BAD and quality.reason in _COMMUNICATION_REASONS:
            return
        alarm.value = value.value
        condition = alarm._evaluate(value, alarm.condition)
        if condition != alarm.condition:
            alarm.condition = condition
            self._condition_changed(alarm, condition)

    def _condition_changed(self, alarm: Alarm, condition: bool) -> None:
        if condition == alarm.active:
            # Back where it was before its delay ran out: forget the timer.
            alarm._delay_gen += 1
            return
        delay = alarm.spec.on_delay if condition else alarm.spec.off_delay
        if delay > 0:
            alarm._delay_gen += 1
            self._schedule(delay, "delay", alarm, alarm._delay_gen)
            return
        self._transit(alarm, "raise" if condition else "clear")

    # ------------------------------------------------------------------ transitions

    def _transit(
        self,
        alarm: Alarm,
        event: str,
        *,
        user: str | None = None,
        comment: str = "",
        data: Mapping[str, Any] | None = None,
        ts: int | None = None,
    ) -> list[Transition]:
        """Apply ``event`` to ``alarm`` and queue the transitions it causes."""
        old = alarm.status
        try:
            new, steps = next_status(old, event, latching=alarm.spec.latching)
        except AlarmActionError as exc:
            raise AlarmActionError(f"{alarm.id}: {exc}") from None
        if new == old and not steps:
            return []
        alarm._set_status(new)
        ts = ts if ts is not None else now_ms()
        if event == "raise" and (old.state is _NORMAL or old.state is _RTN):
            # A new occurrence: its own times, its own checklist.
            alarm.raised_at = ts
            alarm.cleared_at = None
            alarm.acked_at = None
            alarm.acked_by = None
            alarm.checklist = {}
            alarm.checklist_version = None
        transitions = []
        from_state = old.state
        for kind, to_state in steps:
            annunciated = not new.hidden
            if kind == "raised" and annunciated:
                self._count_raise(alarm, ts)
            elif kind == "cleared":
                alarm.cleared_at = ts
            elif kind == "acknowledged":
                alarm.acked_at = ts
                alarm.acked_by = user
            alarm.counts[kind] += 1
            transition = Transition(
                kind,
                alarm.id,
                ts,
                user,
                comment,
                from_state.value,
                to_state.value,
                alarm.value,
                annunciated,
                dict(data or {}),
            )
            from_state = to_state
            transitions.append(transition)
            self._pending.append(_Pending(transition, alarm))
        if old.active != new.active and self._communication.get(alarm.device_id) is alarm:
            self._suppress_device(alarm.device_id, new.active, ts)
        self._wake_up()
        return transitions

    def _record(self, transition: Transition, alarm: Alarm | None) -> None:
        """Queue a transition that is not a state change (procedure steps, floods, windows)."""
        self._pending.append(_Pending(transition, alarm))
        self._wake_up()

    def _suppress_device(self, device_id: str, suppressed: bool, ts: int) -> None:
        event = "suppress" if suppressed else "unsuppress"
        for other in self._by_device.get(device_id, ()):
            if other.spec.suppressible and other.suppressed != suppressed:
                self._transit(
                    other, event, ts=ts, data={"by": f"{device_id}:{COMMUNICATION_ALARM}"}
                )

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ timers

    def _schedule(self, delay: float, kind: str, target: Any, generation: int) -> None:
        self._timer_seq += 1
        heapq.heappush(
            self._timers, (_monotonic() + delay, self._timer_seq, kind, target, generation)
        )
        self._wake_up()

    def _fire_due_timers(self) -> None:
        now = _monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, target, generation = heapq.heappop(timers)
            if kind == "delay":
                alarm: Alarm = target
                if generation == alarm._delay_gen and alarm.condition != alarm.active:
                    self._transit(alarm, "raise" if alarm.condition else "clear")
            elif kind == "shelve":
                alarm = target
                if generation == alarm._shelve_gen and alarm.shelved:
                    self._unshelve(alarm, None, "shelve expired", expired=True)
            elif kind == "window_start":
                if target in self._windows:
                    self._open_windows.add(target)
                    self._refresh_maintenance(self._windows[target])
            elif kind == "window_end":
                window = self._windows.pop(target, None)
                if window is not None:
                    self._open_windows.discard(target)
                    self._expired_windows.add(target)
                    self._refresh_maintenance(window)
                    self._record(
                        Transition(
                            "maintenance_removed",
                            "",
                            now_ms(),
                            comment="maintenance window over",
                            data={**window.as_json(), "expired": True},
                        ),
                        None,
                    )

    def _next_timeout(self) -> float:
        timeout = math.inf
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - _monotonic())
        if any(f.active for f in self._flood.values()):
            # A flood ends when old raises leave the window: look now and then.
            timeout = min(timeout, max(0.05, min(5.0, self.flood_window / 10)))
        if any(s.overflowed for s in self._subscriptions):
            timeout = min(timeout, 0.5)
        return timeout

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Restore persisted state, then evaluate, journal and publish until cancelled.

        ``task_status.started()`` is called once the state of every alarm
        added so far is restored and the manager listens to the point
        database: operator actions are possible from then on.
        """
        if self._running:
            raise RuntimeError("the alarm manager is running already")
        await self.store.call(_create_maintenance_table)
        self._saved = await self.store.load_alarm_states()
        windows = await self.store.call(_load_windows)
        self._running = True
        self._wake = anyio.Event()
        self.points.add_listener(self._on_point_change)
        try:
            # Restoring is silent: these states were journaled when they were reached.
            for window in windows:
                self._schedule_window(window)
            for alarm in self._alarms.values():
                self._restore_one(alarm)
            for alarm in self._alarms.values():
                self._restore_hiding(alarm)
                self._reveal_if_unseen(alarm)
            for alarm in self._alarms.values():
                self._evaluate_now(alarm)
            task_status.started()
            backoff = 0.5
            while True:
                self._wake = anyio.Event()
                self._fire_due_timers()
                self._check_floods()
                for sub in self._subscriptions:
                    if sub.overflowed:
                        sub._offer(None)
                if self._pending or self._expired_windows:
                    try:
                        await self._delete_expired_windows()
                        await self._flush()
                    except Exception:
                        # Nothing is published before it is written: keep it and retry.
                        self.write_errors += 1
                        log.exception("alarm journal write failed; retrying in %.1f s", backoff)
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, 30.0)
                    else:
                        backoff = 0.5
                    continue
                with anyio.move_on_after(self._next_timeout()):
                    await self._wake.wait()
        finally:
            self.points.remove_listener(self._on_point_change)
            self._running = False
            self._wake = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                try:
                    if self._pending:
                        await self._flush()
                except Exception:
                    log.exception("alarm journal write failed at shutdown")
            for item in self._pending:
                if item.done is not None:
                    item.error = AlarmActionError("the alarm manager stopped before journaling it")
                    item.done.set()

    # ------------------------------------------------------------------ operator actions

    def _authorise(self, user: User, alarm_zone: str, role: Role, action: str) -> None:
        if not user.has_role(role):
            raise AlarmPermissionError(f"{user.name} may not {action}: it needs the {role} role")
        if not user.in_zone(alarm_zone):
            raise AlarmPermissionError(f"{user.name} may not {action} in zone {alarm_zone!r}")

    def _ready(self) -> None:
        if not self._running:
            raise RuntimeError("the alarm manager is not running")
