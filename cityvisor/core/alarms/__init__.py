"""Alarms: the ISA-18.2 state machine and the AlarmManager (this package re-exports them).

An alarm is an abnormal condition on a point that an operator must see and
acknowledge. Device types declare their default alarms with :func:`alarm`;
a deployment adds more in its config. Each declaration becomes one alarm per
device (and per member, for per-circuit or per-port points).

The package has three layers, each usable without the next:

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

Where each part lives: ``states.py`` (the state machine), ``model.py`` (one
alarm and its transitions, procedures and maintenance windows),
``subscriptions.py`` (what a subscriber receives), ``errors.py``, and the
:class:`AlarmManager` in ``manager.py`` (registry, evaluation, timers, the run
task), assembled with its parts: ``journal.py`` (journal first, then tell;
restore after a restart), ``actions.py`` (operator actions),
``maintenance.py`` (planned maintenance windows) and ``kpis.py`` (floods and
ISA-18.2 KPIs), which share the state ``parts.py`` declares.

States follow ISA-18.2 / IEC 62682: ``normal``, ``unack_active``,
``ack_active``, ``rtn_unack`` (returned to normal, unacknowledged). Shelved,
suppressed by design, out of service and maintenance are orthogonal *hiding*
conditions: a hidden alarm keeps tracking its condition but is not
annunciated, and never needs an acknowledgement for what happened while it
was hidden.
"""

from __future__ import annotations

from ..declarations import COMMUNICATION_ALARM, AlarmSpec, Condition, Priority, alarm, text
from .errors import AlarmActionError, AlarmError, AlarmPermissionError, UnknownAlarmError
from .journal import JOURNAL_KINDS
from .manager import AlarmManager
from .model import Alarm, MaintenanceWindow, Procedure, Transition
from .states import EVENTS, AlarmState, AlarmStatus, Step, next_status
from .subscriptions import AlarmEvent, AlarmResync, AlarmSubscription

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
