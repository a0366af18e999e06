"""Commands: the CommandBus that runs what device types declare (this package re-exports it).

A command is an operator's or a rule's order to a device: set a level, raise
a bollard, disable a port. Device types declare commands with
:func:`command` on an async method (in :mod:`cityvisor.core.declarations`); the declaration says which parameters
it takes (types and ranges), who may send it, whether it needs
confirmation or a second person's approval, which interlocks must hold, and
which point value proves it worked.

The :class:`CommandBus` runs them. For every request it validates the
arguments, authorises the user (role and zone), checks that the device is
online and that the interlocks hold, then either runs the command or parks
it: *select before operate* (the same user confirms within
``confirm_within`` seconds) or *two-person approval* (another user with the
command's ``approver_role``, a supervisor by default, approves within
``approve_within`` seconds). Commands to
one device run one at a time, in arrival order; different devices run in
parallel. A command succeeds when its handler returned in time and its
feedback point reached the expected value. Every attempt, refused ones
included, is written to the journal before the caller hears the outcome.

Nothing reaches a device unaudited: the order is journaled (kind
``command_sent``, with the attempt's id) *before* its handler is called, and
its outcome (kind ``command``, same id) after. When the journal cannot take
the first entry, the command is refused (``journal_unavailable``) and never
sent.

Where each part lives: ``records.py`` (outcomes, requests, results, pending
commands), ``errors.py`` (every refusal), and the :class:`CommandBus` in
``bus.py`` (validate, authorise, gate, queue per device, run, verify),
assembled with its parts: ``selection.py`` (select before operate,
two-person approval), ``groups.py`` (group orders) and ``audit.py`` (the
journal before and after), which share the state ``parts.py`` declares.
"""

from __future__ import annotations

from ..declarations import (
    CommandSpec,
    Feedback,
    Handler,
    Interlock,
    Param,
    boolean,
    choice,
    command,
    integer,
    interlock,
    number,
    reaches,
    string,
)
from .bus import CommandBus
from .errors import (
    ApprovalError,
    CommandError,
    ConfirmationError,
    DeviceBusyError,
    DeviceOfflineError,
    InterlockedError,
    InvalidArgumentsError,
    JournalUnavailableError,
    NotPermittedError,
    TooManyPendingError,
    UnknownCommandError,
    UnknownDeviceError,
)
from .records import CommandOutcome, CommandRequest, CommandResult, GroupResult, PendingCommand

__all__ = [
    "ApprovalError",
    "CommandBus",
    "CommandError",
    "CommandOutcome",
    "CommandRequest",
    "CommandResult",
    "CommandSpec",
    "ConfirmationError",
    "DeviceBusyError",
    "DeviceOfflineError",
    "Feedback",
    "GroupResult",
    "Handler",
    "Interlock",
    "InterlockedError",
    "InvalidArgumentsError",
    "JournalUnavailableError",
    "NotPermittedError",
    "Param",
    "PendingCommand",
    "TooManyPendingError",
    "UnknownCommandError",
    "UnknownDeviceError",
    "boolean",
    "choice",
    "command",
    "integer",
    "interlock",
    "number",
    "reaches",
    "string",
]
