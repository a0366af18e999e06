"""The ISA-18.2 state machine: a pure function from a status and an event to the next status."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import AlarmActionError

if TYPE_CHECKING:
    pass


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
