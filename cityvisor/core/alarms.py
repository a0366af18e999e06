"""Alarms: the ISA-18.2 state machine and the AlarmManager.

An alarm is an abnormal condition on a point that an operator must see and
acknowledge. Device types declare their default alarms with :func:`alarm`;
a deployment adds more in its config. Each declaration becomes one alarm per
device (and per member, for per-circuit or per-port points).

The module has three layers, each usable without the next:

- **declarations** (:class:`AlarmSpec`, :class:`Condition`, :func:`alarm`,
  in :mod:`cityvisor.core.declarations`): immutable, what plugins and the
  config file write;
- **the state machine** (:class:`AlarmStatus`, :func:`next_status`): a pure
  function from a status and an event to the next status and the
  transitions to report, with no clock, no I/O and no event loop, so that it
  can be tested exhaustively (``tests/core/test_alarms_stateful.py``);
- **the runtime** (:class:`Alarm`, :class:`AlarmManager`): one alarm per
  device/member, evaluated synchronously from the point database's
  listener, with on/off delays, shelving, suppression by design,
  out-of-service, planned maintenance, operating procedures, ISA-18.2 KPIs,
  and every transition written to the journal *before* anybody is told.

States follow ISA-18.2 / IEC 62682: ``normal``, ``unack_active``,
``ack_active``, ``rtn_unack`` (returned to normal, unacknowledged). Shelved,
suppressed by design, out of service and maintenance are orthogonal *hiding*
conditions: a hidden alarm keeps tracking its condition but is not
annunciated, and never needs an acknowledgement for what happened while it
was hidden.
"""

from __future__ import annotations

import enum
import heapq
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import declarations
from .declarations import COMMUNICATION_ALARM, AlarmSpec, Condition, Priority, text
from .points import Point, PointDB, PointValue, QualityStatus, now_ms
from .store import JournalEntry, Store
from .users import Role, User

if TYPE_CHECKING:  # devices.py imports this module: the type is only needed for hints
    import sqlite_utils

    from .devices import DeviceType

__all__ = [
    "COMMUNICATION_ALARM",
    "EVENTS",
    "JOURNAL_KINDS",
    "Alarm",
    "AlarmActionError",
    "AlarmError",
    "AlarmEvent",
    "AlarmManager",
    "AlarmPermissionError",
    "AlarmResync",
    "AlarmSpec",
    "AlarmState",
    "AlarmStatus",
    "AlarmSubscription",
    "Condition",
    "MaintenanceWindow",
    "Priority",
    "Procedure",
    "Step",
    "Transition",
    "UnknownAlarmError",
    "alarm",
    "next_status",
    "text",
]

log = logging.getLogger(__name__)

alarm = declarations.alarm

# A point that is bad because its device cannot be reached says nothing about the
# equipment: the communication alarm reports it, and suppresses the others.
_COMMUNICATION_REASONS = frozenset({"comm_failure", "not_connected"})


# =========================================================================== errors


class AlarmError(Exception):
    """Base of the errors an alarm operation can raise (each has a message for the operator)."""


class UnknownAlarmError(AlarmError, KeyError):
    """No alarm (or maintenance window) has this id."""

    def __str__(self) -> str:
        return f"unknown alarm {self.args[0]!r}"


class AlarmActionError(AlarmError):
    """The action is not possible in the alarm's current state, or its arguments are wrong."""


class AlarmPermissionError(AlarmError):
    """The user's role or zones do not allow this action on this alarm."""


# =========================================================================== state machine


class AlarmState(enum.Enum):
    """The ISA-18.2 annunciation states of an alarm."""

    NORMAL = "normal"
    """Condition false (or hidden), nothing to acknowledge."""
    UNACK_ACTIVE = "unack_active"
    """Condition true (or latched), not yet acknowledged."""
    ACK_ACTIVE = "ack_active"
    """Condition true (or latched), acknowledged."""
    RTN_UNACK = "rtn_unack"
    """Condition returned to normal before anybody acknowledged it."""

    def __str__(self) -> str:
        return self.value


_NORMAL = AlarmState.NORMAL
_UNACK = AlarmState.UNACK_ACTIVE
_ACK = AlarmState.ACK_ACTIVE
_RTN = AlarmState.RTN_UNACK


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """Everything the state machine decides on: the state and the orthogonal flags.

    ``active`` is the alarm's condition after its on/off delays; ``latched``
    is set when a latching alarm's condition cleared but it stays annunciated
    until acknowledged. ``shelved``, ``suppressed`` (by design: its device's
    communication is lost), ``out_of_service`` and ``maintenance`` *hide* the
    alarm from annunciation without stopping it from tracking its condition.
    """

    state: AlarmState = AlarmState.NORMAL
    active: bool = False
    latched: bool = False
    shelved: bool = False
    suppressed: bool = False
    out_of_service: bool = False
    maintenance: bool = False

    @property
    def hidden(self) -> bool:
        """True when something keeps the alarm from being annunciated."""
        return self.shelved or self.suppressed or self.out_of_service or self.maintenance

    @property
    def acked(self) -> bool:
        """True when nothing waits for an acknowledgement."""
        return self.state is _NORMAL or self.state is _ACK

    @property
    def annunciated(self) -> bool:
        """True when the operator should see the alarm in the list."""
        return self.state is not _NORMAL and not self.hidden


# event -> (flag, value, transition kind, is an operator action)
_FLAG_EVENTS: dict[str, tuple[str, bool, str, bool]] = {
    "shelve": ("shelved", True, "shelved", True),
    "unshelve": ("shelved", False, "unshelved", True),
    "suppress": ("suppressed", True, "suppressed", False),
    "unsuppress": ("suppressed", False, "unsuppressed", False),
    "remove_from_service": ("out_of_service", True, "out_of_service", True),
    "return_to_service": ("out_of_service", False, "in_service", True),
    "start_maintenance": ("maintenance", True, "maintenance_started", False),
    "end_maintenance": ("maintenance", False, "maintenance_ended", False),
}

EVENTS = ("raise", "clear", "ack", *_FLAG_EVENTS)
"""Every event :func:`next_status` understands."""

Step = tuple[str, AlarmState]
"""A transition the state machine reports: its kind and the state after it."""


def next_status(
    status: AlarmStatus, event: str, *, latching: bool = False
) -> tuple[AlarmStatus, tuple[Step, ...]]:
    """The ISA-18.2 state machine: the status after ``event`` and the transitions to report.

    Pure: no clock, no I/O. Events are ``raise`` / ``clear`` (the condition,
    after its delays), ``ack``, and the hiding events of :data:`EVENTS`.
    Returns the new status and, in order, ``(kind, state after)`` for each
    transition to journal (none when nothing an operator cares about changed).
    Raises :class:`AlarmActionError` when an operator action makes no sense
    (acknowledging a normal alarm, shelving a shelved one).

    The rules, beyond the textbook diagram:

    - a hidden alarm that becomes active stays ``normal`` (it is tracked,
      not annunciated); one that was waiting for an ack keeps waiting;
    - when it stops being hidden and is still active, it is raised then
      (``unack_active``), so nothing active stays unseen;
    - an acknowledged alarm never becomes unacknowledged again except by a
      new occurrence (raised from ``normal``);
    - a latching alarm whose condition clears keeps its state, ``latched``,
      until an acknowledgement resets it.
    - suppression and maintenance on a quiet alarm (normal, inactive) change
      the flag silently: a device that goes offline does not journal one line
      per alarm that had nothing to say.
    """
    state = status.state
    if event == "raise":
        if status.active:
            return status, ()
        if status.hidden:
            new_state = _UNACK if state is _RTN else state
        else:
            new_state = _ACK if state is _ACK else _UNACK
        return replace(status, state=new_state, active=True, latched=False), (
            ("raised", new_state),
        )
    if event == "clear":
        if not status.active:
            return status, ()
        if latching and (state is _UNACK or state is _ACK):
            return replace(status, active=False, latched=True), (("cleared", state),)
        if state is _UNACK:
            new_state = _RTN
        elif state is _ACK:
            new_state = _NORMAL
        else:
            new_state = state
        return replace(status, state=new_state, active=False), (("cleared", new_state),)
    if event == "ack":
        if state is _UNACK:
            new_state = _ACK if status.active else _NORMAL
        elif state is _RTN or (state is _ACK and status.latched):
            new_state = _NORMAL
        elif state is _ACK:
            raise AlarmActionError("the alarm is acknowledged already")
        else:
            raise AlarmActionError("the alarm is normal: there is nothing to acknowledge")
        return replace(status, state=new_state, latched=False), (("acknowledged", new_state),)
    try:
        flag, value, kind, operator = _FLAG_EVENTS[event]
    except KeyError:
        raise ValueError(f"unknown alarm event {event!r} (expected one of {EVENTS})") from None
    if getattr(status, flag) == value:
        if operator:
            raise AlarmActionError(_ALREADY[event])
        return status, ()
    new = _with_flag(status, flag, value)
    quiet = state is _NORMAL and not status.active
    steps: list[Step] = [] if quiet and not operator else [(kind, state)]
    if not new.hidden and new.active and state is _NORMAL:
        # Raised while hidden and still active: annunciate it now.
        new = replace(new, state=_UNACK)
        steps.append(("raised", _UNACK))
    return new, tuple(steps)


def _with_flag(status: AlarmStatus, flag: str, value: bool) -> AlarmStatus:
    if flag == "shelved":
        return replace(status, shelved=value)
    if flag == "suppressed":
        return replace(status, suppressed=value)
    if flag == "out_of_service":
        return replace(status, out_of_service=value)
    return replace(status, maintenance=value)


_ALREADY = {
    "shelve": "the alarm is shelved already",
    "unshelve": "the alarm is not shelved",
    "remove_from_service": "the alarm is out of service already",
    "return_to_service": "the alarm is in service already",
}


# =========================================================================== runtime objects


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class Transition:
    """One thing that happened to an alarm: what, when, who, why, from which state to which.

    ``kind`` is ``raised``, ``cleared``, ``acknowledged``, ``shelved``,
    ``unshelved``, ``suppressed``, ``unsuppressed``, ``out_of_service``,
    ``in_service``, ``maintenance_started``, ``maintenance_ended`` or
    ``procedure_step``; for events that concern no single alarm (``alarm_id``
    is empty): ``flood_started``, ``flood_ended``, ``maintenance_added``,
    ``maintenance_removed``. ``annunciated`` is False when it happened to a
    hidden alarm (raised while suppressed, in maintenance...). ``user`` is
    None for what the system did by itself.
    """

    kind: str
    alarm_id: str
    ts: int
    user: str | None = None
    comment: str = ""
    from_state: str = ""
    to_state: str = ""
    value: Any = None
    annunciated: bool = True
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the API and the journal."""
        return {
            "kind": self.kind,
            "alarm": self.alarm_id,
            "ts": self.ts,
            "user": self.user,
            "comment": self.comment,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "value": _json_value(self.value),
            "annunciated": self.annunciated,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Procedure:
    """An operating procedure: the checklist an operator follows for an alarm.

    Procedures are data (Dijon has about 600): the config file or a plugin
    provides them, alarm declarations name one by ``id``. ``version`` goes to
    the journal with every ticked step, so one can tell which text was followed.
    """

    id: str
    version: int
    title: Mapping[str, str]
    steps: Sequence[Mapping[str, str]]

    @classmethod
    def create(
        cls,
        id: str,
        title: str | Mapping[str, str],
        steps: Iterable[str | Mapping[str, str]],
        version: int = 1,
    ) -> Procedure:
        """Build a procedure from plain or translated text."""
        normalised = [text(step) for step in steps]
        if not normalised:
            raise ValueError(f"procedure {id!r} has no steps")
        return cls(id, version, text(title), normalised)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "version": self.version,
            "title": dict(self.title),
            "steps": [dict(step) for step in self.steps],
        }


@dataclass(frozen=True)
class MaintenanceWindow:
    """Planned maintenance: alarms of a device, or of a whole zone, are not annunciated.

    Set *before* the work starts; between ``start_ms`` and ``end_ms`` the
    alarms concerned keep tracking their condition but are shown as in
    maintenance, and what happens to them is journaled as such.
    """

    id: str
    device_id: str | None
    zone: str | None
    start_ms: int
    end_ms: int
    reason: str
    created_by: str
    created_at: int

    def covers(self, alarm: Alarm) -> bool:
        """True if the window is about this alarm's device or zone."""
        if self.device_id is not None:
            return alarm.device_id == self.device_id
        return alarm.zone == self.zone

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "zone": self.zone,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


class Alarm:
    """The run-time state of one alarm instance (one declaration x one device x one member).

    The alarm manager owns it and is the only one that changes it; read it
    freely, or take :meth:`as_json` for the API.
    """

    __slots__ = (
        "_delay_gen",
        "_evaluate",
        "_shelve_gen",
        "acked_at",
        "acked_by",
        "active",
        "checklist",
        "checklist_version",
        "cleared_at",
        "condition",
        "counts",
        "device_id",
        "family",
        "id",
        "latched",
        "maintenance",
        "member",
        "out_of_service",
        "out_of_service_by",
        "out_of_service_reason",
        "point_id",
        "raised_at",
        "shelve_reason",
        "shelved",
        "shelved_by",
        "shelved_until",
        "spec",
        "state",
        "suppressed",
        "value",
        "zone",
    )

    def __init__(
        self,
        alarm_id: str,
        spec: AlarmSpec,
        point_id: str,
        *,
        device_id: str = "",
        zone: str = "",
        family: str = "",
        member: str | None = None,
    ) -> None:
        self.id = alarm_id
        self.spec = spec
        self.point_id = point_id
        self.device_id = device_id
        self.zone = zone
        self.family = family
        self.member = member
        self.state = AlarmState.NORMAL
        self.active = False
        """The condition, after its on/off delays."""
        self.condition = False
        """The condition as last evaluated, before delays (it drives the hysteresis)."""
        self.latched = False
        self.shelved = False
        self.shelved_until: int | None = None
        self.shelve_reason = ""
        self.shelved_by: str | None = None
        self.suppressed = False
        self.maintenance = False
        self.out_of_service = False
        self.out_of_service_reason = ""
        self.out_of_service_by: str | None = None
        self.raised_at: int | None = None
        self.cleared_at: int | None = None
        self.acked_at: int | None = None
        self.acked_by: str | None = None
        self.value: Any = None
        self.counts: Counter[str] = Counter()
        """Transitions of this alarm by kind since it was created (for KPIs)."""
        self.checklist: dict[int, dict[str, Any]] = {}
        """Procedure steps ticked during the current occurrence: index -> done, by, ts."""
        self.checklist_version: int | None = None
        self._evaluate = spec.condition.evaluate
        self._delay_gen = 0
        self._shelve_gen = 0

    # -- read-only views ---------------------------------------------------

    @property
    def name(self) -> str:
        """The declaration's name (``high_water``)."""
        return self.spec.name

    @property
    def priority(self) -> Priority:
        """The alarm's priority."""
        return self.spec.priority

    @property
    def message(self) -> Mapping[str, str]:
        """What the operator reads, ``{"fr": ..., "en": ...}``.

        ``{value}`` in a message stands for the point's value (the exception a
        device answers with); it is left out while the value is empty.
        """
        message = self.spec.message
        if not any("{value}" in m for m in message.values()):
            return message
        value = "" if self.value is None else str(self.value)
        filled = {lang: m.replace("{value}", value) for lang, m in message.items()}
        return filled if value else {lang: m.rstrip(" :") for lang, m in filled.items()}

    @property
    def procedure(self) -> str | None:
        """Id of the operating procedure to follow."""
        return self.spec.procedure

    @property
    def acked(self) -> bool:
        """True when nothing waits for an acknowledgement."""
        return self.state is _NORMAL or self.state is _ACK

    @property
    def hidden(self) -> bool:
        """True when shelved, suppressed, out of service or in maintenance."""
        return self.shelved or self.suppressed or self.out_of_service or self.maintenance

    @property
    def annunciated(self) -> bool:
        """True when the operator should see it: not normal and not hidden."""
        return self.state is not _NORMAL and not self.hidden

    @property
    def status(self) -> AlarmStatus:
        """The part of the state the state machine decides on."""
        return AlarmStatus(
            self.state,
            self.active,
            self.latched,
            self.shelved,
            self.suppressed,
            self.out_of_service,
            self.maintenance,
        )

    def _set_status(self, status: AlarmStatus) -> None:
        self.state = status.state
        self.active = status.active
        self.latched = status.latched
        self.shelved = status.shelved
        self.suppressed = status.suppressed
        self.out_of_service = status.out_of_service
        self.maintenance = status.maintenance

    @property
    def display_state(self) -> str:
        """One word for the HMI: the hiding reason if hidden, else the ISA state."""
        if self.out_of_service:
            return "out_of_service"
        if self.shelved:
            return "shelved"
        if self.maintenance:
            return "maintenance"
        if self.suppressed:
            return "suppressed"
        return self.state.value

    def as_json(self) -> dict[str, Any]:
        """Everything the API shows about the alarm, JSON-ready."""
        return {
            "id": self.id,
            "name": self.name,
            "device_id": self.device_id,
            "zone": self.zone,
            "family": self.family,
            "member": self.member,
            "point_id": self.point_id,
            "priority": str(self.priority),
            "priority_level": int(self.priority),
            "message": dict(self.message),
            "condition": self.spec.condition.describe(),
            "procedure": self.procedure,
            "state": self.state.value,
            "display_state": self.display_state,
            "active": self.active,
            "acked": self.acked,
            "annunciated": self.annunciated,
            "latching": self.spec.latching,
            "latched": self.latched,
            "shelved": self.shelved,
            "shelved_until": self.shelved_until,
            "shelve_reason": self.shelve_reason,
            "shelved_by": self.shelved_by,
            "suppressed": self.suppressed,
            "maintenance": self.maintenance,
            "out_of_service": self.out_of_service,
            "out_of_service_reason": self.out_of_service_reason,
            "out_of_service_by": self.out_of_service_by,
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "acked_at": self.acked_at,
            "acked_by": self.acked_by,
            "value": _json_value(self.value),
            "counts": dict(self.counts),
            "checklist": {
                "procedure": self.procedure,
                "version": self.checklist_version,
                "steps": {str(k): dict(v) for k, v in sorted(self.checklist.items())},
            },
        }

    # -- persistence -------------------------------------------------------

    def _persisted(self) -> dict[str, Any]:
        """What survives a restart (suppression and maintenance are recomputed instead)."""
        return {
            "state": self.state.value,
            "active": self.active,
            "latched": self.latched,
            "shelved": self.shelved,
            "shelved_until": self.shelved_until,
            "shelve_reason": self.shelve_reason,
            "shelved_by": self.shelved_by,
            "out_of_service": self.out_of_service,
            "out_of_service_reason": self.out_of_service_reason,
            "out_of_service_by": self.out_of_service_by,
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "acked_at": self.acked_at,
            "acked_by": self.acked_by,
            "value": _json_value(self.value),
            "counts": dict(self.counts),
            "checklist": {str(k): v for k, v in self.checklist.items()},
            "checklist_version": self.checklist_version,
        }

    def _restore(self, saved: Mapping[str, Any]) -> None:
        try:
            self.state = AlarmState(saved.get("state", "normal"))
        except ValueError:
            log.warning("alarm %s: unknown saved state %r, starting normal", self.id, saved)
            return
        self.active = self.condition = bool(saved.get("active", False))
        self.latched = bool(saved.get("latched", False))
        self.shelved = bool(saved.get("shelved", False))
        self.shelved_until = saved.get("shelved_until")
        self.shelve_reason = saved.get("shelve_reason") or ""
        self.shelved_by = saved.get("shelved_by")
        self.out_of_service = bool(saved.get("out_of_service", False))
        self.out_of_service_reason = saved.get("out_of_service_reason") or ""
        self.out_of_service_by = saved.get("out_of_service_by")
        self.raised_at = saved.get("raised_at")
        self.cleared_at = saved.get("cleared_at")
        self.acked_at = saved.get("acked_at")
        self.acked_by = saved.get("acked_by")
        self.value = saved.get("value")
        self.counts = Counter(saved.get("counts") or {})
        self.checklist = {int(k): dict(v) for k, v in (saved.get("checklist") or {}).items()}
        self.checklist_version = saved.get("checklist_version")

    def __repr__(self) -> str:
        return f"<Alarm {self.id} {self.display_state} active={self.active}>"


# =========================================================================== subscriptions


class AlarmEvent(NamedTuple):
    """A transition, delivered once it is in the journal, with the alarm as it is now.

    ``alarm`` is None for events about no single alarm (floods, maintenance windows).
    """

    transition: Transition
    alarm: dict[str, Any] | None


class AlarmResync(NamedTuple):
    """Every annunciated alarm: the first message, and the one after lost events."""

    alarms: list[dict[str, Any]]
    lost: int


class AlarmSubscription:
    """A consumer's feed of alarm events (an HMI's alarm list, a notifier).

    Iterate it (``async for message in sub``) to receive :class:`AlarmResync`
    (first, and after falling behind) and :class:`AlarmEvent` messages. The
    buffer is bounded: a consumer that does not keep up is marked as having
    lost events and gets a fresh :class:`AlarmResync` as soon as it has room;
    it never slows the alarm manager down. Close it (or use ``async with``).
    """

    def __init__(self, manager: AlarmManager, max_buffer: int) -> None:
        self._manager = manager
        self.max_buffer = max_buffer
        send, receive = anyio.create_memory_object_stream[AlarmEvent | AlarmResync](max_buffer)
        self._send: MemoryObjectSendStream[AlarmEvent | AlarmResync] = send
        self._receive: MemoryObjectReceiveStream[AlarmEvent | AlarmResync] = receive
        self.lost = 0
        self.overflowed = False
        self.closed = False

    async def receive(self) -> AlarmEvent | AlarmResync:
        """The next message (waits for it)."""
        return await self._receive.receive()

    def __aiter__(self) -> AlarmSubscription:
        return self

    async def __anext__(self) -> AlarmEvent | AlarmResync:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; the manager forgets the subscription."""
        if not self.closed:
            self.closed = True
            self._manager._unsubscribe(self)
            self._send.close()
            self._receive.close()

    async def __aenter__(self) -> AlarmSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _offer(self, event: AlarmEvent | None) -> None:
        """Deliver ``event`` (None: only retry a pending re-sync); never blocks."""
        try:
            if self.overflowed:
                # The snapshot already contains the effect of ``event``.
                self._send.send_nowait(AlarmResync(self._manager._annunciated_json(), self.lost))
                self.overflowed = False
                self.lost = 0
            elif event is not None:
                self._send.send_nowait(event)
        except anyio.WouldBlock:
            if not self.overflowed:
                log.warning("alarm subscriber fell behind: it will be re-synced")
            self.overflowed = True
            self.lost += event is not None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.close()


# =========================================================================== manager


class _Pending:
    """A transition waiting to be journaled, then published."""

    __slots__ = ("alarm", "done", "error", "transition")

    def __init__(self, transition: Transition, alarm: Alarm | None) -> None:
        self.transition = transition
        self.alarm = alarm
        self.done: anyio.Event | None = None
        self.error: BaseException | None = None


class _Flood:
    """Raise rate and flood state of one zone."""

    __slots__ = ("active", "floods", "raises", "since", "total_ms")

    def __init__(self) -> None:
        self.raises: deque[int] = deque()
        self.active = False
        self.since: int | None = None
        self.total_ms = 0
        self.floods = 0


JOURNAL_KINDS: dict[str, str] = {
    "raised": "alarm",
    "cleared": "alarm",
    "acknowledged": "ack",
    "shelved": "shelve",
    "unshelved": "shelve",
    "suppressed": "suppression",
    "unsuppressed": "suppression",
    "out_of_service": "out_of_service",
    "in_service": "out_of_service",
    "maintenance_started": "maintenance",
    "maintenance_ended": "maintenance",
    "maintenance_added": "maintenance",
    "maintenance_removed": "maintenance",
    "procedure_step": "procedure_step",
    "flood_started": "flood",
    "flood_ended": "flood",
}
"""The journal ``kind`` under which each transition kind is written."""

_MAINTENANCE_TABLE = "alarm_maintenance"
_DAY = 86_400.0


def _monotonic() -> float:
    try:
        return anyio.current_time()
    except RuntimeError:
        # Point updates from outside an event loop (a script, a benchmark): timers
        # still need a clock, and only the loop's own clock can drive the run task.
        return time.monotonic()


class AlarmManager:
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

    def maintenance_windows(self) -> list[MaintenanceWindow]:
        """The planned maintenance windows, current and future, by start time."""
        return sorted(self._windows.values(), key=lambda w: (w.start_ms, w.id))

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

    def _count_raise(self, alarm: Alarm, ts: int) -> None:
        self._raise_log.append((ts, alarm.id))
        flood = self._flood.get(alarm.zone)
        if flood is None:
            flood = self._flood[alarm.zone] = _Flood()
        flood.raises.append(ts)
        self._update_flood(alarm.zone, flood, ts)

    def _update_flood(self, zone: str, flood: _Flood, now: int) -> None:
        cutoff = now - int(self.flood_window * 1000)
        raises = flood.raises
        while raises and raises[0] <= cutoff:
            raises.popleft()
        count = len(raises)
        if not flood.active and count > self.flood_start:
            flood.active = True
            flood.since = now
            flood.floods += 1
            kind = "flood_started"
        elif flood.active and count < self.flood_end:
            flood.active = False
            flood.total_ms += now - (flood.since or now)
            flood.since = None
            kind = "flood_ended"
        else:
            return
        log.warning("alarm flood in zone %s: %s (%d raised)", zone, kind, count)
        self._record(
            Transition(
                kind,
                "",
                now,
                value=count,
                data={"zone": zone, "raised": count, "window_s": self.flood_window},
            ),
            None,
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

    def _check_floods(self) -> None:
        now = now_ms()
        for zone, flood in self._flood.items():
            if flood.active:
                self._update_flood(zone, flood, now)

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

    async def _flush(self) -> None:
        """Journal every pending transition and save its alarm's state, then publish."""
        batch = self._in_flight = self._pending
        self._pending = []
        try:
            items: list[tuple[str | None, Mapping[str, Any] | None, JournalEntry]] = []
            for item in batch:
                alarm = item.alarm
                items.append(
                    (
                        alarm.id if alarm is not None else None,
                        alarm._persisted() if alarm is not None else None,
                        self._journal_entry(item.transition, alarm),
                    )
                )
            await self.store.save_alarm_states(items)
        except BaseException:
            self._pending[:0] = batch
            self._in_flight = []
            raise
        self._in_flight = []
        snapshots: dict[str, dict[str, Any]] = {}
        for item in batch:
            alarm = item.alarm
            snapshot = None
            if alarm is not None:
                snapshot = snapshots.get(alarm.id)
                if snapshot is None:
                    snapshot = snapshots[alarm.id] = alarm.as_json()
            event = AlarmEvent(item.transition, snapshot)
            for sub in list(self._subscriptions):
                sub._offer(event)
            if alarm is not None and self.on_transition is not None:
                try:
                    self.on_transition(alarm, item.transition)
                except Exception:  # a plugin's bug must not stop the alarms
                    log.exception("on_transition failed for %s", item.transition)
            if item.done is not None:
                item.done.set()

    def _journal_entry(self, transition: Transition, alarm: Alarm | None) -> JournalEntry:
        data = transition.as_json()
        data.pop("user")
        data.pop("alarm")
        data.pop("ts")
        if alarm is not None:
            data["priority"] = str(alarm.priority)
            data["zone"] = alarm.zone
            subject = alarm.message.get("fr") or alarm.message.get("en") or alarm.name
            message = f"{transition.kind}: {subject}"
            if not transition.annunciated:
                message += f" ({alarm.display_state})"
        else:
            message = f"{transition.kind}: {transition.data.get('zone') or transition.data.get('device_id') or ''}"
        if transition.comment:
            message += f" — {transition.comment}"
        return JournalEntry(
            kind=JOURNAL_KINDS.get(transition.kind, "alarm"),
            message=message,
            user=transition.user,
            device=(alarm.device_id or None) if alarm is not None else None,
            point=alarm.point_id if alarm is not None else None,
            alarm=alarm.id if alarm is not None else None,
            data=data,
            ts=transition.ts,
        )

    async def wait_journaled(self) -> None:
        """Wait until every transition that happened so far is journaled and published."""
        self._ready()
        await self._commit()

    async def _commit(self) -> None:
        """Wait until everything queued so far is journaled (the operator's guarantee)."""
        queue = self._pending or self._in_flight
        if not queue:
            return
        last = queue[-1]
        if last.done is None:
            last.done = anyio.Event()
        self._wake_up()
        await last.done.wait()
        if last.error is not None:
            raise last.error

    def _restore_one(self, alarm: Alarm) -> None:
        saved = (self._saved or {}).get(alarm.id)
        if saved is None:
            return
        alarm._restore(saved)
        if alarm.shelved:
            # Its expiry is journaled by the timer, even if it passed while we were down.
            remaining = max(0.0, ((alarm.shelved_until or 0) - now_ms()) / 1000)
            alarm._shelve_gen += 1
            self._schedule(remaining, "shelve", alarm, alarm._shelve_gen)

    def _reveal_if_unseen(self, alarm: Alarm) -> None:
        """Raise a restored alarm that is active, no longer hidden, and was never annunciated.

        It happens when what hid it is gone after the restart (a maintenance
        window deleted by hand, a declaration now unsuppressible): nothing
        active and visible may stay silent.
        """
        if alarm.active and alarm.state is _NORMAL and not alarm.hidden:
            alarm.active = alarm.condition = False
            self._transit(alarm, "raise")
            alarm.condition = True

    def _restore_hiding(self, alarm: Alarm) -> None:
        """Recompute the hiding that is not persisted: suppression and maintenance."""
        alarm.maintenance = any(self._windows[w].covers(alarm) for w in self._open_windows)
        comm = self._communication.get(alarm.device_id)
        if comm is not None and comm is not alarm and alarm.spec.suppressible:
            alarm.suppressed = comm.active

    # ------------------------------------------------------------------ operator actions

    def _authorise(self, user: User, alarm_zone: str, role: Role, action: str) -> None:
        if not user.has_role(role):
            raise AlarmPermissionError(f"{user.name} may not {action}: it needs the {role} role")
        if not user.in_zone(alarm_zone):
            raise AlarmPermissionError(f"{user.name} may not {action} in zone {alarm_zone!r}")

    def _ready(self) -> None:
        if not self._running:
            raise RuntimeError("the alarm manager is not running")

    async def acknowledge(self, alarm_id: str, user: User, comment: str = "") -> Alarm:
        """Acknowledge an alarm (operator, in its zone); return once it is journaled.

        ``unack_active`` becomes ``ack_active`` (or ``normal`` if latched and
        cleared); ``rtn_unack`` becomes ``normal``. Raise
        :class:`AlarmActionError` if there is nothing to acknowledge.
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"acknowledge {alarm_id}")
        self._ready()
        self._transit(alarm, "ack", user=user.name, comment=comment.strip())
        await self._commit()
        return alarm

    async def shelve(self, alarm_id: str, user: User, duration: float, reason: str) -> Alarm:
        """Shelve an alarm for ``duration`` seconds (supervisor, reason required).

        It is unshelved by itself when the time is up (journaled too).
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.SUPERVISOR, f"shelve {alarm_id}")
        reason = reason.strip()
        if not reason:
            raise AlarmActionError(f"{alarm_id}: shelving needs a reason")
        if not (0 < duration <= self.max_shelve):
            raise AlarmActionError(
                f"{alarm_id}: shelve duration must be between 0 and {self.max_shelve:g} s,"
                f" not {duration:g}"
            )
        self._ready()
        ts = now_ms()
        until = ts + int(duration * 1000)
        self._transit(
            alarm,
            "shelve",
            user=user.name,
            comment=reason,
            data={"until": until, "duration_s": duration},
            ts=ts,
        )
        alarm.shelved_until = until
        alarm.shelve_reason = reason
        alarm.shelved_by = user.name
        alarm._shelve_gen += 1
        self._schedule(duration, "shelve", alarm, alarm._shelve_gen)
        await self._commit()
        return alarm

    async def unshelve(self, alarm_id: str, user: User) -> Alarm:
        """Bring a shelved alarm back before its time (operator, in its zone)."""
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"unshelve {alarm_id}")
        self._ready()
        self._unshelve(alarm, user.name, "")
        await self._commit()
        return alarm

    def _unshelve(
        self, alarm: Alarm, user: str | None, comment: str, expired: bool = False
    ) -> None:
        data = {"expired": True} if expired else {}
        self._transit(alarm, "unshelve", user=user, comment=comment, data=data)
        alarm.shelved_until = None
        alarm.shelve_reason = ""
        alarm.shelved_by = None
        alarm._shelve_gen += 1

    async def set_out_of_service(
        self, alarm_id: str, user: User, out: bool, reason: str = ""
    ) -> Alarm:
        """Take an alarm out of service (``out=True``, reason required) or back in (supervisor)."""
        alarm = self.get(alarm_id)
        action = "take out of service" if out else "return to service"
        self._authorise(user, alarm.zone, Role.SUPERVISOR, f"{action} {alarm_id}")
        reason = reason.strip()
        if out and not reason:
            raise AlarmActionError(f"{alarm_id}: taking an alarm out of service needs a reason")
        self._ready()
        self._transit(
            alarm,
            "remove_from_service" if out else "return_to_service",
            user=user.name,
            comment=reason,
        )
        alarm.out_of_service_reason = reason if out else ""
        alarm.out_of_service_by = user.name if out else None
        await self._commit()
        return alarm

    async def tick_step(self, alarm_id: str, step: int, user: User, done: bool = True) -> Alarm:
        """Tick (or untick) step ``step`` (0-based) of the alarm's procedure, journaled.

        The checklist belongs to the current occurrence: it starts empty each
        time the alarm is raised again.
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"follow the procedure of {alarm_id}")
        if alarm.procedure is None:
            raise AlarmActionError(f"{alarm_id}: the alarm has no procedure")
        procedure = self.procedures.get(alarm.procedure)
        if procedure is None:
            raise AlarmActionError(f"{alarm_id}: procedure {alarm.procedure!r} is not loaded")
        if not 0 <= step < len(procedure.steps):
            raise AlarmActionError(
                f"{alarm_id}: procedure {procedure.id} has steps 0 to {len(procedure.steps) - 1},"
                f" not {step}"
            )
        self._ready()
        ts = now_ms()
        alarm.checklist[step] = {"done": done, "by": user.name, "ts": ts}
        alarm.checklist_version = procedure.version
        alarm.counts["procedure_step"] += 1
        self._record(
            Transition(
                "procedure_step",
                alarm.id,
                ts,
                user.name,
                "",
                alarm.state.value,
                alarm.state.value,
                alarm.value,
                not alarm.hidden,
                {
                    "procedure": procedure.id,
                    "version": procedure.version,
                    "step": step,
                    "done": done,
                    "text": dict(procedure.steps[step]),
                },
            ),
            alarm,
        )
        await self._commit()
        return alarm

    # ------------------------------------------------------------------ maintenance

    async def add_maintenance(
        self,
        user: User,
        *,
        device_id: str | None = None,
        zone: str | None = None,
        start_ms: int,
        end_ms: int,
        reason: str,
    ) -> MaintenanceWindow:
        """Plan maintenance of a device or a zone (supervisor); journaled and persisted.

        Between ``start_ms`` and ``end_ms`` the alarms concerned are not
        annunciated; the window is forgotten when it ends.
        """
        if (device_id is None) == (zone is None):
            raise AlarmActionError("a maintenance window is for one device or one zone")
        if device_id is not None:
            alarms = self._by_device.get(device_id)
            if not alarms:
                raise AlarmActionError(f"device {device_id!r} has no alarms")
            window_zone = alarms[0].zone
        else:
            assert zone is not None
            window_zone = zone
        self._authorise(user, window_zone, Role.SUPERVISOR, "plan maintenance")
        reason = reason.strip()
        if not reason:
            raise AlarmActionError("a maintenance window needs a reason")
        if end_ms <= start_ms:
            raise AlarmActionError("a maintenance window must end after it starts")
        now = now_ms()
        if end_ms <= now:
            raise AlarmActionError("a maintenance window must end in the future")
        self._ready()
        window = MaintenanceWindow(
            secrets.token_hex(6), device_id, zone, start_ms, end_ms, reason, user.name, now
        )
        await self.store.call(lambda db: _save_window(db, window))
        self._record(
            Transition("maintenance_added", "", now, user.name, reason, data=window.as_json()),
            None,
        )
        self._open_window(window)
        await self._commit()
        return window

    async def remove_maintenance(self, window_id: str, user: User) -> MaintenanceWindow:
        """End or cancel a maintenance window (supervisor); journaled."""
        window = self._windows.get(window_id)
        if window is None:
            raise UnknownAlarmError(window_id)
        self._authorise(user, self._window_zone(window), Role.SUPERVISOR, "end maintenance")
        self._ready()
        await self.store.call(lambda db: _delete_window(db, window_id))
        del self._windows[window_id]
        self._open_windows.discard(window_id)
        self._refresh_maintenance(window)
        self._record(
            Transition(
                "maintenance_removed", "", now_ms(), user.name, window.reason, data=window.as_json()
            ),
            None,
        )
        await self._commit()
        return window

    def _schedule_window(self, window: MaintenanceWindow) -> bool:
        """Remember a window and set its timers; True if it is open now."""
        self._windows[window.id] = window
        now = now_ms()
        # Timers run on the monotonic clock: convert the wall-clock bounds once, here.
        self._schedule(max(0.0, (window.end_ms - now) / 1000), "window_end", window.id, 0)
        if window.start_ms <= now:
            self._open_windows.add(window.id)
            return True
        self._schedule((window.start_ms - now) / 1000, "window_start", window.id, 0)
        return False

    def _open_window(self, window: MaintenanceWindow) -> None:
        if self._schedule_window(window):
            self._refresh_maintenance(window)

    def _window_zone(self, window: MaintenanceWindow) -> str:
        if window.zone is not None:
            return window.zone
        alarms = self._by_device.get(window.device_id or "")
        return alarms[0].zone if alarms else ""

    async def _delete_expired_windows(self) -> None:
        if not self._expired_windows:
            return
        expired = list(self._expired_windows)

        def delete(db: sqlite_utils.Database) -> None:
            for window_id in expired:
                _delete_window(db, window_id)

        await self.store.call(delete)
        self._expired_windows.difference_update(expired)

    def _refresh_maintenance(self, window: MaintenanceWindow) -> None:
        if window.device_id is not None:
            concerned = self._by_device.get(window.device_id, [])
        else:
            concerned = [a for a in self._alarms.values() if a.zone == window.zone]
        open_windows = [self._windows[w] for w in self._open_windows if w in self._windows]
        for alarm in concerned:
            inside = any(w.covers(alarm) for w in open_windows)
            if inside != alarm.maintenance:
                self._transit(
                    alarm,
                    "start_maintenance" if inside else "end_maintenance",
                    comment=window.reason,
                    data={"window": window.id},
                )

    # ------------------------------------------------------------------ KPIs

    def kpis(
        self,
        now_ms: int | None = None,
        period: float | None = None,
        zones: Callable[[str], bool] | None = None,
    ) -> dict[str, Any]:
        """ISA-18.2 alarm-system performance figures, JSON-ready.

        ``zones``: figures about the zones it accepts only (a reader's zones).

        - ``zones``: per zone, alarms raised in the current ``flood_window``,
          the same as a rate per 10 minutes, the flood state and time spent
          in flood;
        - ``bad_actors``: the 10 alarms raised most often over ``period``
          seconds (default ``kpi_horizon``);
        - ``chattering``: alarms raised ``chatter_count`` times or more
          within ``chatter_window`` seconds during the period;
        - ``stale``: annunciated alarms active for longer than ``stale_after`` seconds.
        """
        now = now_ms if now_ms is not None else _wall_ms()
        period = self.kpi_horizon if period is None else period
        since = now - int(period * 1000)
        window_ms = int(self.flood_window * 1000)
        seen = zones or (lambda zone: True)
        alarms = [a for a in self._alarms.values() if seen(a.zone)]
        floods = {z: f for z, f in self._flood.items() if seen(z)}
        per_zone: dict[str, dict[str, Any]] = {}
        for zone, flood in sorted(floods.items()):
            recent = sum(1 for ts in flood.raises if ts > now - window_ms)
            in_flood_ms = flood.total_ms + (now - flood.since if flood.since is not None else 0)
            per_zone[zone] = {
                "raised": recent,
                "per_10_min": recent * 600.0 / self.flood_window,
                "flood": flood.active,
                "flood_since": flood.since,
                "floods": flood.floods,
                "time_in_flood_s": in_flood_ms / 1000,
            }
        horizon = now - int(self.kpi_horizon * 1000)
        while self._raise_log and self._raise_log[0][0] < horizon:
            self._raise_log.popleft()
        by_alarm: dict[str, list[int]] = {}
        known = {a.id for a in alarms} if zones is not None else None
        for ts, alarm_id in self._raise_log:
            if since <= ts <= now and (known is None or alarm_id in known):
                by_alarm.setdefault(alarm_id, []).append(ts)
        bad_actors = sorted(by_alarm.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:10]
        chatter_ms = int(self.chatter_window * 1000)
        chattering = sorted(
            alarm_id
            for alarm_id, stamps in by_alarm.items()
            if _burst(stamps, chatter_ms) >= self.chatter_count
        )
        stale_ms = int(self.stale_after * 1000)
        stale = sorted(
            a.id
            for a in alarms
            if a.annunciated
            and a.active
            and a.raised_at is not None
            and now - a.raised_at > stale_ms
        )
        return {
            "ts": now,
            "flood_window_s": self.flood_window,
            "period_s": period,
            "zones": per_zone,
            "in_flood": sorted(z for z, f in floods.items() if f.active),
            "bad_actors": [{"alarm": a, "raised": len(s)} for a, s in bad_actors],
            "chattering": chattering,
            "stale": stale,
            "annunciated": sum(1 for a in alarms if a.annunciated),
            "unacked": sum(1 for a in alarms if not a.acked),
            "shelved": sum(1 for a in alarms if a.shelved),
            "suppressed": sum(1 for a in alarms if a.suppressed),
            "out_of_service": sum(1 for a in alarms if a.out_of_service),
            "maintenance": sum(1 for a in alarms if a.maintenance),
            "by_priority": self.counts_by_priority(zones),
        }


def _wall_ms() -> int:
    return now_ms()


def _burst(stamps: list[int], window_ms: int) -> int:
    """The most timestamps (sorted) that fit in any window of ``window_ms``."""
    best = 0
    start = 0
    for end, ts in enumerate(stamps):
        while ts - stamps[start] > window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


# =========================================================================== maintenance table


def _create_maintenance_table(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {_MAINTENANCE_TABLE} ("
        " id TEXT PRIMARY KEY, device_id TEXT, zone TEXT,"
        " start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, reason TEXT NOT NULL,"
        " created_by TEXT NOT NULL, created_at INTEGER NOT NULL)"
    )


def _load_windows(db: sqlite_utils.Database) -> list[MaintenanceWindow]:
    rows = db.execute(
        "SELECT id, device_id, zone, start_ms, end_ms, reason, created_by, created_at"
        f" FROM {_MAINTENANCE_TABLE} ORDER BY start_ms"
    ).fetchall()
    return [MaintenanceWindow(*row) for row in rows]


def _save_window(db: sqlite_utils.Database, window: MaintenanceWindow) -> None:
    db.execute(
        f"INSERT INTO {_MAINTENANCE_TABLE}"
        " (id, device_id, zone, start_ms, end_ms, reason, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            window.id,
            window.device_id,
            window.zone,
            window.start_ms,
            window.end_ms,
            window.reason,
            window.created_by,
            window.created_at,
        ),
    )


def _delete_window(db: sqlite_utils.Database, window_id: str) -> None:
    db.execute(f"DELETE FROM {_MAINTENANCE_TABLE} WHERE id = ?", (window_id,))
