"""Commands: the CommandBus that runs what device types declare.

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
"""

from __future__ import annotations

import enum
import json
import logging
import math
import secrets
from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .declarations import (
    CommandSpec,
    Feedback,
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
    text,
)
from .points import PointDB, PointValue, now_ms
from .store import JournalEntry, Store
from .users import Role, User

if TYPE_CHECKING:
    from .devices import DeviceType

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

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- outcomes, errors


class CommandOutcome(enum.StrEnum):
    """How a command attempt ended (or where it waits)."""

    SUCCEEDED = "succeeded"
    """The handler returned in time and the feedback point reached its target."""
    FAILED = "failed"
    """The handler raised: the equipment refused or the link failed."""
    TIMED_OUT = "timed_out"
    """The handler did not return within the command's ``timeout``."""
    FEEDBACK_TIMEOUT = "feedback_timeout"
    """The handler returned but the feedback point did not reach its target in time."""
    PENDING_CONFIRMATION = "pending_confirmation"
    """Selected: the same user must confirm (operate) within ``confirm_within`` seconds."""
    PENDING_APPROVAL = "pending_approval"
    """Waiting for a second person's approval within ``approve_within`` seconds."""
    REFUSED = "refused"
    """Not run: invalid, not permitted, interlocked, offline, busy..."""
    LAPSED = "lapsed"
    """A selection or an approval request expired before it was confirmed or approved."""
    REJECTED = "rejected"
    """The second person rejected the command."""
    CANCELLED = "cancelled"
    """Withdrawn by its author, or interrupted (the caller went away, the hub stopped)."""

    @property
    def pending(self) -> bool:
        """True while the command waits for a confirmation or an approval."""
        return self in (CommandOutcome.PENDING_CONFIRMATION, CommandOutcome.PENDING_APPROVAL)


class CommandError(Exception):
    """Why a command (or a confirmation, approval...) was refused; a user-caused error.

    ``status`` is the HTTP status the API answers with; ``code`` a stable word
    for programs; ``text`` the message in French and English (``str(error)``
    is the English one). Once the refusal is journaled, ``result`` holds its
    :class:`CommandResult` (with the journaled attempt's id).
    """

    status: int = 400
    code: str = "refused"

    def __init__(self, message: str, fr: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.text: dict[str, str] = {"fr": fr or message, "en": message}
        self.result: CommandResult | None = None

    @property
    def message(self) -> str:
        """The English message."""
        return self.text["en"]

    def journal_data(self) -> dict[str, Any]:
        """Details of the refusal for the journal (beyond code and text)."""
        return {}

    def as_json(self) -> dict[str, Any]:
        """The error as the API returns it."""
        body: dict[str, Any] = {
            "error": self.code,
            "status": self.status,
            "message": self.message,
            "text": dict(self.text),
            **self.journal_data(),
        }
        if self.result is not None:
            body["id"] = self.result.id
        return body


class UnknownDeviceError(CommandError):
    """No device has this id (or no device matches a group order)."""

    status = 404
    code = "unknown_device"


class UnknownCommandError(CommandError):
    """The device has no command of this name."""

    status = 404
    code = "unknown_command"


class InvalidArgumentsError(CommandError):
    """The arguments (or the member) are wrong; ``problems`` lists every one of them."""

    status = 422
    code = "invalid_arguments"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        joined = "; ".join(self.problems)
        super().__init__(f"invalid arguments: {joined}", f"arguments invalides : {joined}")

    def journal_data(self) -> dict[str, Any]:
        """The list of problems."""
        return {"problems": self.problems}


class NotPermittedError(CommandError):
    """The user's role is too low, the zone is not theirs, or they approve their own command."""

    status = 403
    code = "not_permitted"


class InterlockedError(CommandError):
    """An interlock does not hold: the command would be unsafe now."""

    status = 409
    code = "interlocked"

    def __init__(self, lock: Interlock, point_id: str, value: PointValue | None) -> None:
        self.interlock = lock
        self.point_id = point_id
        self.value = value
        shown = "unknown" if value is None else repr(value.value)
        if value is not None and not value.quality.is_good:
            shown += f" ({value.quality})"
        reason = text(lock.reason) or {"fr": "verrouillage", "en": "interlock"}
        en = reason.get("en") or next(iter(reason.values()))
        fr = reason.get("fr") or en
        super().__init__(
            f"interlocked: {en} ({point_id} = {shown})", f"verrouillé : {fr} ({point_id} = {shown})"
        )
        self.reason = {"fr": fr, "en": en}

    def journal_data(self) -> dict[str, Any]:
        """The interlock's point, its value and quality."""
        return {
            "interlock": {
                "point": self.point_id,
                "value": None if self.value is None else self.value.value,
                "quality": None if self.value is None else str(self.value.quality),
                "reason": self.reason,
            }
        }


class ConfirmationError(CommandError):
    """Unknown or mismatched select token (409), expired one (410), or not the selecting user."""

    status = 409
    code = "confirmation"


class ApprovalError(CommandError):
    """Unknown approval request (404) or expired one (410)."""

    status = 404
    code = "approval"


class DeviceOfflineError(CommandError):
    """The device's ``online`` point is not True: nobody would carry the command out."""

    status = 503
    code = "device_offline"


class DeviceBusyError(CommandError):
    """Too many commands already queued for this device."""

    status = 503
    code = "device_busy"


class JournalUnavailableError(CommandError):
    """The journal could not record the order: it is not sent (nothing runs unaudited)."""

    status = 503
    code = "journal_unavailable"


class TooManyPendingError(CommandError):
    """Too many selections or approval requests are open; finish or cancel some first."""

    status = 503
    code = "too_many_pending"


_MESSAGES: dict[CommandOutcome, tuple[str, str]] = {
    CommandOutcome.SUCCEEDED: ("Commande exécutée", "Command executed"),
    CommandOutcome.FAILED: ("Échec de la commande", "Command failed"),
    CommandOutcome.TIMED_OUT: ("L'équipement n'a pas répondu à temps", "No answer in time"),
    CommandOutcome.FEEDBACK_TIMEOUT: (
        "Retour d'état non atteint à temps",
        "Feedback not reached in time",
    ),
    CommandOutcome.PENDING_CONFIRMATION: ("Confirmation attendue", "Waiting for confirmation"),
    CommandOutcome.PENDING_APPROVAL: (
        "En attente de validation par une seconde personne",
        "Waiting for a second person's approval",
    ),
    CommandOutcome.REFUSED: ("Commande refusée", "Command refused"),
    CommandOutcome.LAPSED: ("Délai dépassé, commande abandonnée", "Expired, command dropped"),
    CommandOutcome.REJECTED: ("Commande rejetée", "Command rejected"),
    CommandOutcome.CANCELLED: ("Commande annulée", "Command cancelled"),
}


def _message(outcome: CommandOutcome, detail: str = "") -> dict[str, str]:
    fr, en = _MESSAGES[outcome]
    if detail:
        return {"fr": f"{fr} : {detail}", "en": f"{en}: {detail}"}
    return {"fr": fr, "en": en}


# --------------------------------------------------------------------------- requests, results


@dataclass(frozen=True)
class CommandRequest:
    """One order to one device: what, to whom, by whom, from where.

    ``member`` names the circuit, port... for a command declared ``per`` one
    (``None`` otherwise). ``origin`` says where it came from (``"api"``,
    ``"rule"``, ``"schedule"``...). ``confirmation`` carries the token of an
    earlier selection to operate it in the same call.
    """

    device_id: str
    command: str
    arguments: Mapping[str, Any]
    member: str | None
    user: User
    comment: str = ""
    origin: str = "api"
    confirmation: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class CommandResult:
    """What became of one command attempt (as journaled).

    ``token`` is set while the command waits for its confirmation
    (``pending_confirmation``), ``approval_id`` while it waits for a second
    person (``pending_approval``), with ``expires_in`` seconds left.
    ``status`` is the refusal's HTTP-like status for refused attempts.
    """

    id: str
    device_id: str | None
    command: str | None
    member: str | None
    outcome: CommandOutcome
    message: Mapping[str, str]
    detail: str = ""
    duration_ms: int = 0
    feedback: Any = None
    token: str | None = None
    approval_id: str | None = None
    expires_in: float | None = None
    user: str | None = None
    approver: str | None = None
    confirmed_by: str | None = None
    status: int | None = None
    code: str | None = None
    group: str | None = None

    @property
    def ok(self) -> bool:
        """True if the command succeeded."""
        return self.outcome is CommandOutcome.SUCCEEDED

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "command": self.command,
            "member": self.member,
            "outcome": self.outcome.value,
            "message": dict(self.message),
            "detail": self.detail,
            "duration_ms": self.duration_ms,
            "feedback": _jsonable(self.feedback),
            "token": self.token,
            "approval_id": self.approval_id,
            "expires_in": self.expires_in,
            "user": self.user,
            "approver": self.approver,
            "confirmed_by": self.confirmed_by,
            "status": self.status,
            "code": self.code,
            "group": self.group,
        }


@dataclass(frozen=True)
class GroupResult:
    """What became of a group order: one result per target device (and member).

    ``outcome`` is the common outcome when every target ended the same way,
    ``failed`` when they did not (``summary`` counts each outcome), or
    ``pending_confirmation`` / ``pending_approval`` while the order waits
    (then ``results`` is empty and ``token`` / ``approval_id`` is set).
    """

    id: str
    command: str
    arguments: Mapping[str, Any]
    selector: Mapping[str, Any]
    outcome: CommandOutcome
    results: Sequence[CommandResult] = ()
    targets: int = 0
    duration_ms: int = 0
    token: str | None = None
    approval_id: str | None = None
    expires_in: float | None = None
    user: str | None = None
    approver: str | None = None
    confirmed_by: str | None = None

    @property
    def summary(self) -> dict[str, int]:
        """How many targets ended with each outcome."""
        return dict(Counter(r.outcome.value for r in self.results))

    def as_json(self) -> dict[str, Any]:
        """The group result as a JSON-ready dict."""
        return {
            "id": self.id,
            "group": True,
            "command": self.command,
            "arguments": _jsonable(dict(self.arguments)),
            "selector": dict(self.selector),
            "outcome": self.outcome.value,
            "message": _message(self.outcome),
            "targets": self.targets,
            "summary": self.summary,
            "duration_ms": self.duration_ms,
            "token": self.token,
            "approval_id": self.approval_id,
            "expires_in": self.expires_in,
            "user": self.user,
            "approver": self.approver,
            "confirmed_by": self.confirmed_by,
            "results": [r.as_json() for r in self.results],
        }


@dataclass(eq=False)
class _GroupOrder:
    id: str
    command: str
    arguments: dict[str, Any]
    selector: dict[str, Any]
    targets: list[tuple[DeviceType, str | None]]
    user: User
    comment: str
    origin: str


@dataclass(eq=False)
class PendingCommand:
    """A command or group order waiting for its confirmation or a second person's approval.

    ``kind`` is ``"confirmation"`` (``id`` is the select token) or
    ``"approval"`` (``id`` is the approval id). For a group order
    ``device_id`` is None and ``targets`` counts the devices.
    """

    id: str
    kind: str
    command: str
    arguments: dict[str, Any]
    requested_by: User
    comment: str
    origin: str
    created_ms: int
    expires_at: float
    """Deadline on the monotonic clock (``anyio.current_time()``)."""
    device_id: str | None = None
    member: str | None = None
    zone: str | None = None
    role: Role = Role.OPERATOR
    approver_role: Role = Role.SUPERVISOR
    """For an approval request: the lowest role that may approve or reject it."""
    group: _GroupOrder | None = None

    @property
    def expires_in(self) -> float:
        """Seconds left before it lapses (never negative)."""
        return max(0.0, self.expires_at - anyio.current_time())

    def as_json(self) -> dict[str, Any]:
        """The pending command for the HMI's lists."""
        expires_in = self.expires_in
        return {
            "id": self.id,
            "kind": self.kind,
            "command": self.command,
            "arguments": _jsonable(self.arguments),
            "device_id": self.device_id,
            "member": self.member,
            "zone": self.zone,
            "role": str(self.role),
            "approver_role": str(self.approver_role) if self.kind == "approval" else None,
            "requested_by": self.requested_by.name,
            "comment": self.comment,
            "origin": self.origin,
            "created_ms": self.created_ms,
            "expires_in": round(expires_in, 3),
            "expires_ms": now_ms() + int(expires_in * 1000),
            "group": None
            if self.group is None
            else {"selector": self.group.selector, "targets": len(self.group.targets)},
        }


@dataclass(eq=False)
class _Attempt:
    """The bookkeeping of one attempt, from its arrival to its journal entry."""

    id: str
    device_id: str | None
    command: str | None
    member: str | None
    arguments: Any
    user: User
    comment: str
    origin: str
    started: float
    request: CommandRequest | None = None
    approver: str | None = None
    confirmed_by: str | None = None
    approval_comment: str = ""
    group: str | None = None
    pending: str | None = None
    requested_by: str | None = None
    order_journaled: bool = False
    """True for a target of a group order whose ``command_sent`` entry is written already."""

    @classmethod
    def of(cls, request: CommandRequest, started: float, **extra: Any) -> _Attempt:
        return cls(
            id=_new_id(),
            device_id=request.device_id,
            command=request.command,
            member=request.member,
            arguments=request.arguments,
            user=request.user,
            comment=request.comment,
            origin=request.origin,
            started=started,
            request=request,
            **extra,
        )


def _new_id() -> str:
    return secrets.token_hex(8)


def _ms_since(started: float) -> int:
    return int((anyio.current_time() - started) * 1000)


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it, else its repr (the journal never fails on odd input)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _bounded_arguments(arguments: Any, limit: int = 2000) -> Any:
    """Arguments for the journal, cut short when a caller sent something huge."""
    value = _jsonable(dict(arguments) if isinstance(arguments, Mapping) else arguments)
    encoded = json.dumps(value, ensure_ascii=False)
    if len(encoded) > limit:
        return {"truncated": encoded[:limit]}
    return value


def _relative_point_id(device: DeviceType, name: str, member: str | None) -> str:
    """A point named by a command (interlock, feedback): the member's own, if it has one."""
    spec = device.point_specs.get(name)
    return device.point_id(name, member if spec is not None and spec.per else None)


# --------------------------------------------------------------------------- the bus


class CommandBus:
    """Validates, authorises, interlocks, confirms, runs, verifies and audits commands.

    ``devices`` is the hub's mapping of device id to device (read at every
    request, so devices added later are seen). Run :meth:`run` in the hub's
    task group so that selections and approval requests lapse on time.

    Memory stays bounded: at most ``max_pending`` open selections and as
    many approval requests, at most ``max_queue`` commands waiting for one
    device, at most ``group_concurrency`` targets of a group order in flight.
    ``outcomes`` counts journaled attempts by outcome, ``group_outcomes``
    group orders (for metrics).
    """

    def __init__(
        self,
        points: PointDB,
        store: Store,
        devices: Mapping[str, DeviceType],
        *,
        max_pending: int = 1000,
        max_queue: int = 256,
        group_concurrency: int = 32,
    ) -> None:
        self.points = points
        self.store = store
        self.devices = devices
        self.max_pending = max_pending
        self.max_queue = max_queue
        self.group_concurrency = group_concurrency
        self.outcomes: Counter[str] = Counter()
        self.group_outcomes: Counter[str] = Counter()
        self._selections: dict[str, PendingCommand] = {}
        self._approvals: dict[str, PendingCommand] = {}
        self._announced: set[str] = set()
        self._locks: dict[str, anyio.Lock] = {}
        self._queued: Counter[str] = Counter()
        self._wake: anyio.Event | None = None

    # -- single commands -----------------------------------------------------

    async def execute(self, request: CommandRequest) -> CommandResult:
        """Run one command, or park it for confirmation or approval; say what became of it.

        Raise a :class:`CommandError` subclass when it is refused, once the
        refusal is journaled (the error's ``result`` is the journaled result).
        A request carrying ``confirmation`` operates that earlier selection.
        """
        return await self._attempt(_Attempt.of(request, anyio.current_time()), gated=True)

    async def confirm(self, token: str, user: User) -> CommandResult | GroupResult:
        """Operate a selected command (select-before-operate) with its token.

        Only the user who selected it may confirm, before the selection
        expires; permissions, the device's state and the interlocks are
        checked again now. A group order's token returns a :class:`GroupResult`.
        """
        started = anyio.current_time()
        try:
            pending = self._take_selection(token, user)
        except ConfirmationError as error:
            raise await self._refuse_action(token, user, error, started) from None
        return await self._operate(pending, started, confirmed_by=user.name)

    async def approve(
        self, approval_id: str, user: User, comment: str = ""
    ) -> CommandResult | GroupResult:
        """Approve, and so run, a command waiting for a second person.

        The approver must be another user than its author, with the
        command's ``approver_role`` (supervisor unless declared otherwise,
        never below the command's role) in the device's zone (in every
        target's zone for a group order). Permissions, the device's state and the interlocks are
        checked again now.
        """
        started = anyio.current_time()
        try:
            pending = self._take_approval(approval_id, user)
        except CommandError as error:
            raise await self._refuse_action(approval_id, user, error, started) from None
        return await self._operate(pending, started, approver=user.name, approval_comment=comment)

    async def reject(
        self, approval_id: str, user: User, comment: str = ""
    ) -> CommandResult | GroupResult:
        """Reject a command waiting for approval; its author rejecting it cancels it instead."""
        started = anyio.current_time()
        pending = self._approvals.get(approval_id)
        if pending is not None and pending.requested_by.name == user.name:
            return await self.cancel(approval_id, user, comment)
        try:
            pending = self._take_approval(approval_id, user)
        except CommandError as error:
            raise await self._refuse_action(approval_id, user, error, started) from None
        return await self._close(pending, CommandOutcome.REJECTED, user, comment, started)

    async def cancel(
        self, pending_id: str, user: User, comment: str = ""
    ) -> CommandResult | GroupResult:
        """Withdraw a selection or an approval request (its author, or an admin)."""
        started = anyio.current_time()
        pending = self._selections.get(pending_id) or self._approvals.get(pending_id)
        try:
            if pending is None or pending.id not in self._announced:
                raise ConfirmationError(
                    "unknown or already decided command", "commande inconnue ou déjà traitée"
                )
            if pending.requested_by.name != user.name and not user.has_role(Role.ADMIN):
                raise NotPermittedError(
                    f"only {pending.requested_by.name} or an admin may cancel this command",
                    f"seul(e) {pending.requested_by.name} ou un administrateur peut annuler "
                    "cette commande",
                )
        except CommandError as error:
            raise await self._refuse_action(pending_id, user, error, started) from None
        self._forget(pending)
        return await self._close(pending, CommandOutcome.CANCELLED, user, comment, started)

    def pending_approvals(self, user: User | None = None) -> list[PendingCommand]:
        """Open approval requests, oldest first (only those ``user`` may approve, if given)."""
        pending = [p for p in self._approvals.values() if p.id in self._announced]
        if user is not None:
            pending = [p for p in pending if self._approver_problem(p, user) is None]
        return pending

    def pending_confirmations(self, user: User | None = None) -> list[PendingCommand]:
        """Open selections, oldest first (only ``user``'s own, if given)."""
        pending = [p for p in self._selections.values() if p.id in self._announced]
        if user is not None:
            pending = [p for p in pending if p.requested_by.name == user.name]
        return pending

    # -- group orders --------------------------------------------------------

    async def execute_group(
        self,
        command: str,
        arguments: Mapping[str, Any],
        user: User,
        *,
        zone: str | None = None,
        family: str | None = None,
        tag: str | None = None,
        type_name: str | None = None,
        members: str | Sequence[str] = "all",
        comment: str = "",
        origin: str = "api",
    ) -> GroupResult:
        """Send one command to every device matching a selector; one result per target.

        Devices match when they have the command and every criterion given
        (``zone``, ``family``, a ``tag`` among the device's tags, the device
        type's ``type_name``); at least one criterion is required. A command
        declared ``per`` member goes to every member (``members="all"``) or
        to the listed ones. Targets run concurrently (still one at a time
        per device); a refused target is a result, not an exception.

        If any target's command needs confirmation or approval, the *order*
        is parked once: one token (or approval id) covers every target, and
        :meth:`confirm` (or :meth:`approve`) runs them all and returns the
        :class:`GroupResult`. The journal holds one entry per step of the
        order plus one per target attempt (linked by the group id).
        """
        started = anyio.current_time()
        selector: dict[str, Any] = {
            "zone": zone,
            "family": family,
            "tag": tag,
            "type_name": type_name,
            "members": members if isinstance(members, str) else list(members),
        }
        order = _GroupOrder(
            id=_new_id(),
            command=command,
            arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
            selector={k: v for k, v in selector.items() if v is not None},
            targets=[],
            user=user,
            comment=comment,
            origin=origin,
        )
        pending: PendingCommand | None = None
        try:
            if not isinstance(arguments, Mapping):
                raise InvalidArgumentsError(["arguments must be an object"])
            order.targets = self._group_targets(order, members)
            # One spec per device type (specs hold dicts: dedupe by identity, not hash).
            specs = list(
                {id(s): s for s in (d.command_specs[command] for d, _ in order.targets)}.values()
            )
            problems: list[str] = []
            for spec in specs:
                problems += [p for p in spec.check(arguments)[1] if p not in problems]
            if problems:
                raise InvalidArgumentsError(problems)
            approval = any(
                self._needs_approval(d, d.command_specs[command]) for d, _ in order.targets
            )
            if approval or any(spec.confirm for spec in specs):
                pending = self._park(
                    "approval" if approval else "confirmation",
                    command=command,
                    arguments=order.arguments,
                    user=user,
                    comment=comment,
                    origin=origin,
                    within=min(s.approve_within if approval else s.confirm_within for s in specs),
                    role=max(s.role for s in specs),
                    approver_role=max(s.approver_role_needed for s in specs),
                    group=order,
                )
        except CommandError as error:
            result = self._group_result(order, CommandOutcome.REFUSED, started)
            await self._journal_group(order, result, error=error)
            raise
        if pending is None:
            return await self._run_group(order, started)
        outcome = (
            CommandOutcome.PENDING_APPROVAL
            if pending.kind == "approval"
            else CommandOutcome.PENDING_CONFIRMATION
        )
        result = self._group_result(order, outcome, started, pending=pending)
        await self._announce(pending, self._journal_group(order, result, pending=pending.id))
        return result

    def _group_targets(
        self, order: _GroupOrder, members: str | Sequence[str]
    ) -> list[tuple[DeviceType, str | None]]:
        selector = order.selector
        if not any(k in selector for k in ("zone", "family", "tag", "type_name")):
            raise InvalidArgumentsError(
                ["a group order needs at least one of zone, family, tag, type_name"]
            )
        if isinstance(members, str) and members != "all":
            raise InvalidArgumentsError(['members must be "all" or a list of member names'])
        devices = [
            d
            for d in self.devices.values()
            if order.command in d.command_specs
            and selector.get("zone", d.zone) == d.zone
            and selector.get("family", d.family) == d.family
            and ("tag" not in selector or selector["tag"] in d.info.tags)
            and selector.get("type_name", d.type_name) == d.type_name
        ]
        if not devices:
            criteria = ", ".join(f"{k}={v}" for k, v in selector.items() if k != "members")
            raise UnknownDeviceError(
                f"no device with a command {order.command!r} matches {criteria}",
                f"aucun équipement avec une commande {order.command!r} ne correspond à {criteria}",
            )
        if not isinstance(members, str) and not members:
            raise InvalidArgumentsError(['members must be "all" or a non-empty list'])
        targets: list[tuple[DeviceType, str | None]] = []
        for device in devices:
            per = device.command_specs[order.command].per
            if per is None:
                targets.append((device, None))
            elif isinstance(members, str):
                try:
                    targets += [(device, m) for m in device.members(per)]
                except (TypeError, ValueError):
                    targets.append((device, None))  # refused as a target, with the reason
            else:
                targets += [(device, m) for m in members]
        return targets

    async def _run_group(
        self,
        order: _GroupOrder,
        started: float,
        *,
        approver: str | None = None,
        confirmed_by: str | None = None,
        approval_comment: str = "",
        pending: str | None = None,
    ) -> GroupResult:
        # One command_sent entry for the whole order, before any target is sent: a
        # 10,000-lamp order costs one synced write up front, not one per lamp.
        try:
            await self._journal_group_sending(order, approver, confirmed_by, pending)
        except JournalUnavailableError as error:
            result = self._group_result(order, CommandOutcome.REFUSED, started)
            try:
                await self._journal_group(order, result, pending=pending, error=error)
            except Exception:
                log.exception("could not journal the refusal of group order %s", order.id)
            raise
        results: list[CommandResult | None] = [None] * len(order.targets)
        # A semaphore, not a limiter: the parent takes a slot before it spawns, so a
        # 10,000-lamp order never has more than group_concurrency tasks alive.
        slots = anyio.Semaphore(self.group_concurrency)

        async def one(index: int, device: DeviceType, member: str | None) -> None:
            try:
                request = CommandRequest(
                    device.id,
                    order.command,
                    order.arguments,
                    member,
                    order.user,
                    order.comment,
                    order.origin,
                )
                attempt = _Attempt.of(
                    request,
                    anyio.current_time(),
                    approver=approver,
                    confirmed_by=confirmed_by,
                    approval_comment=approval_comment,
                    group=order.id,
                    pending=pending,
                    order_journaled=True,
                )
                try:
                    results[index] = await self._attempt(attempt, gated=False)
                except CommandError as error:
                    results[index] = error.result
            finally:
                slots.release()

        async with anyio.create_task_group() as tg:
            for index, (device, member) in enumerate(order.targets):
                await slots.acquire()
                tg.start_soon(one, index, device, member, name=f"group {order.id} {device.id}")
        done = [r for r in results if r is not None]
        kinds = {r.outcome for r in done}
        outcome = kinds.pop() if len(kinds) == 1 else CommandOutcome.FAILED
        result = self._group_result(
            order,
            outcome,
            started,
            results=done,
            approver=approver,
            confirmed_by=confirmed_by,
        )
        await self._journal_group(order, result, pending=pending, approval_comment=approval_comment)
        return result

    @staticmethod
    def _group_result(
        order: _GroupOrder,
        outcome: CommandOutcome,
        started: float,
        *,
        results: Sequence[CommandResult] = (),
        pending: PendingCommand | None = None,
        approver: str | None = None,
        confirmed_by: str | None = None,
    ) -> GroupResult:
        return GroupResult(
            id=order.id,
            command=order.command,
            arguments=order.arguments,
            selector=order.selector,
            outcome=outcome,
            results=tuple(results),
            targets=len(order.targets),
            duration_ms=_ms_since(started),
            token=pending.id if pending is not None and pending.kind == "confirmation" else None,
            approval_id=pending.id if pending is not None and pending.kind == "approval" else None,
            expires_in=pending.expires_in if pending is not None else None,
            user=order.user.name,
            approver=approver,
            confirmed_by=confirmed_by,
        )

    # -- the expiry task -----------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lapse expired selections and approval requests (journaled), until cancelled.

        It sleeps until the next deadline or until something new is parked.
        On shutdown the commands still waiting are journaled as cancelled, so
        that no audit trail ends on a pending step.
        """
        task_status.started()
        try:
            while True:
                self._wake = anyio.Event()
                deadline = min((p.expires_at for p in self._all_pending()), default=math.inf)
                delay = deadline - anyio.current_time()
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await self._wake.wait()
                now = anyio.current_time()
                for pending in [p for p in self._all_pending() if p.expires_at <= now]:
                    self._forget(pending)
                    try:
                        await self._close(pending, CommandOutcome.LAPSED, None, "", now)
                    except Exception:  # a full disk must not stop expiry of the others
                        log.exception("could not journal the lapse of %s", pending.id)
        finally:
            self._wake = None
            with anyio.move_on_after(5, shield=True):
                for pending in list(self._all_pending()):
                    self._forget(pending)
                    try:
                        await self._close(
                            pending,
                            CommandOutcome.CANCELLED,
                            None,
                            "",
                            anyio.current_time(),
                            detail="the hub stopped",
                        )
                    except Exception:  # the store may be closing too: log, never mask the cancel
                        log.exception("could not journal the cancellation of %s", pending.id)

    # -- the pipeline --------------------------------------------------------

    async def _attempt(self, attempt: _Attempt, *, gated: bool) -> CommandResult:
        """Check a request, then park it or run it; journal every outcome."""
        request = attempt.request
        assert request is not None
        pending: PendingCommand | None = None
        lapsed: PendingCommand | None = None
        try:
            device, spec, arguments = self._resolve(request)
            self._authorise(request.user, spec, device)
            # Online before interlocks: an offline device's points are all bad, and
            # "offline" is the reason the operator needs, not a failed interlock.
            self._check_online(device, spec)
            self._check_interlocks(device, spec, request.member)
            approval = self._needs_approval(device, spec)
            if gated and request.confirmation is None and (approval or spec.confirm):
                # Approval is the deliberate second act: it stands in for select-before-operate.
                kind = "approval" if approval else "confirmation"
                pending = self._park_command(kind, request, device, spec, arguments)
            else:
                # Before a select token is used up: a busy refusal must leave it valid.
                if self._queued[device.id] >= self.max_queue:
                    raise DeviceBusyError(
                        f"{self.max_queue} commands already wait for {device.id}; try again later",
                        f"{self.max_queue} commandes attendent déjà {device.id} ; "
                        "réessayez plus tard",
                    )
                if gated and request.confirmation is not None:
                    try:
                        selected = self._take_selection(request.confirmation, request.user, request)
                    except ConfirmationError as error:
                        lapsed = getattr(error, "lapsed", None)
                        raise
                    attempt.confirmed_by = request.user.name
                    attempt.pending = selected.id
                    arguments = selected.arguments
        except CommandError as error:
            if lapsed is not None:
                await self._close(lapsed, CommandOutcome.LAPSED, None, "", attempt.started)
            raise await self._refused(attempt, error) from None
        if pending is None:
            return await self._run(attempt, device, spec, arguments)
        attempt.pending = pending.id
        outcome = (
            CommandOutcome.PENDING_APPROVAL
            if pending.kind == "approval"
            else CommandOutcome.PENDING_CONFIRMATION
        )
        return await self._announce(
            pending,
            self._record(
                attempt,
                outcome,
                arguments=arguments,
                detail=f"within {round(pending.expires_in, 1):g} s",
                token=pending.id if pending.kind == "confirmation" else None,
                approval_id=pending.id if pending.kind == "approval" else None,
                expires_in=pending.expires_in,
            ),
        )

    def _resolve(self, request: CommandRequest) -> tuple[DeviceType, CommandSpec, dict[str, Any]]:
        device = self.devices.get(request.device_id)
        if device is None:
            raise UnknownDeviceError(
                f"unknown device {request.device_id!r}", f"équipement inconnu {request.device_id!r}"
            )
        spec = device.command_specs.get(request.command)
        if spec is None:
            known = ", ".join(sorted(device.command_specs)) or "none"
            raise UnknownCommandError(
                f"{device.id} has no command {request.command!r} (commands: {known})",
                f"{device.id} n'a pas de commande {request.command!r} (commandes : {known})",
            )
        arguments, problems = spec.check(request.arguments)
        problems = self._member_problems(device, spec, request.member) + problems
        if problems:
            raise InvalidArgumentsError(problems)
        return device, spec, arguments

    @staticmethod
    def _member_problems(device: DeviceType, spec: CommandSpec, member: str | None) -> list[str]:
        if spec.per is None:
            if member is not None:
                return [f"{spec.name} applies to the whole device, not to member {member!r}"]
            return []
        try:
            names = device.members(spec.per)
        except (TypeError, ValueError) as error:
            return [f"cannot list the {spec.per}s of {device.id}: {error}"]
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        if member is None:
            return [f"{spec.name} needs a {spec.per} (one of: {shown})"]
        if member not in names:
            return [f"{device.id} has no {spec.per} {member!r} (one of: {shown})"]
        return []

    @staticmethod
    def _authorise(user: User, spec: CommandSpec, device: DeviceType) -> None:
        if not user.has_role(spec.role):
            raise NotPermittedError(
                f"{spec.name} needs the {spec.role} role; {user.name} is {user.role}",
                f"{spec.name} demande le rôle {spec.role} ; {user.name} est {user.role}",
            )
        if not user.in_zone(device.zone):
            raise NotPermittedError(
                f"{user.name} may not act in zone {device.zone}",
                f"{user.name} n'a pas accès à la zone {device.zone}",
            )

    def _check_online(self, device: DeviceType, spec: CommandSpec) -> None:
        if not spec.requires_online:
            return
        point_id = device.point_id("online")
        value = self.points.value(point_id) if point_id in self.points else None
        if value is None or value.value is not True or not value.quality.is_good:
            raise DeviceOfflineError(f"{device.id} is offline", f"{device.id} est hors ligne")

    def _check_interlocks(self, device: DeviceType, spec: CommandSpec, member: str | None) -> None:
        for lock in spec.interlocks:
            point_id = _relative_point_id(device, lock.point, member)
            value = self.points.value(point_id) if point_id in self.points else None
            if value is None or not lock.holds(value.value, value.quality.is_good):
                raise InterlockedError(lock, point_id, value)

    @staticmethod
    def _needs_approval(device: DeviceType, spec: CommandSpec) -> bool:
        return spec.two_person or spec.name in device.info.require_approval

    async def _run(
        self, attempt: _Attempt, device: DeviceType, spec: CommandSpec, arguments: dict[str, Any]
    ) -> CommandResult:
        """Queue behind the device's earlier commands, then run, verify and journal."""
        member = attempt.member
        lock = self._locks.get(device.id)
        if lock is None:
            # anyio's Lock is fair (FIFO): commands to one device run in arrival order.
            lock = self._locks[device.id] = anyio.Lock()
        refusal: CommandError | None = None
        outcome, detail, feedback = CommandOutcome.CANCELLED, "", None
        self._queued[device.id] += 1
        waiting = True
        try:
            async with lock:
                waiting = False
                self._queued[device.id] -= 1
                try:
                    # Checked again now: a command that queued behind others may find
                    # the device changed (a maintenance switch, a vehicle on the loop).
                    self._check_online(device, spec)
                    self._check_interlocks(device, spec, member)
                    # The audit trail first: an order the journal did not take is not sent.
                    if not attempt.order_journaled:
                        await self._journal_sending(attempt, arguments)
                except CommandError as error:
                    refusal = error
                else:
                    outcome, detail, feedback = await self._carry_out(
                        device, spec, member, arguments
                    )
        except anyio.get_cancelled_exc_class():
            # The caller went away (or the hub stops): the audit trail still gets its end.
            with anyio.move_on_after(5, shield=True):
                await self._record(
                    attempt,
                    CommandOutcome.CANCELLED,
                    arguments=arguments,
                    detail="interrupted before its outcome was known",
                )
            raise
        finally:
            if waiting:
                self._queued[device.id] -= 1
        if refusal is not None:
            raise await self._refused(attempt, refusal)
        return await self._record(
            attempt, outcome, arguments=arguments, detail=detail, feedback=feedback
        )

    async def _carry_out(
        self, device: DeviceType, spec: CommandSpec, member: str | None, arguments: dict[str, Any]
    ) -> tuple[CommandOutcome, str, Any]:
        """Call the handler under its timeout, then wait for the feedback.

        Only :meth:`_run` calls it, once :meth:`_journal_sending` has written the order.
        """
        target_args = (device, member) if spec.per is not None else (device,)
        with anyio.move_on_after(spec.timeout) as scope:
            try:
                await spec.handler(*target_args, **arguments)
            except Exception as error:  # a handler's failure is an outcome, never a crash
                device.log.warning(
                    "command %s on %s failed: %r", spec.name, device.id, error, exc_info=True
                )
                return CommandOutcome.FAILED, str(error) or type(error).__name__, None
        if scope.cancelled_caught:
            return CommandOutcome.TIMED_OUT, f"no answer within {spec.timeout:g} s", None
        feedback = spec.feedback
        if feedback is None:
            return CommandOutcome.SUCCEEDED, "", None
        target = feedback.target(arguments)
        within: Any = feedback.within
        if isinstance(within, str):
            within = getattr(device.config, within, None)
        if isinstance(within, bool) or not isinstance(within, int | float):
            return (
                CommandOutcome.FAILED,
                f"feedback window {feedback.within!r} is not a number of seconds",
                None,
            )
        point_id = _relative_point_id(device, feedback.point, member)

        def reached(value: PointValue) -> bool:
            # Runs inside the driver's publish(): it must never raise.
            try:
                return value.quality.is_good and feedback.reached(value.value, target)
            except Exception:
                return False

        value = await self.points.wait_for(point_id, reached, float(within))
        if value is None:
            last = self.points.value(point_id)
            return (
                CommandOutcome.FEEDBACK_TIMEOUT,
                f"{point_id} is {last.value!r} ({last.quality}), expected {target!r} "
                f"within {within:g} s",
                last.value,
            )
        return CommandOutcome.SUCCEEDED, "", value.value

    # -- pending commands ----------------------------------------------------

    def _park(
        self,
        kind: str,
        *,
        command: str,
        arguments: dict[str, Any],
        user: User,
        comment: str,
        origin: str,
        within: float,
        role: Role,
        approver_role: Role = Role.SUPERVISOR,
        device: DeviceType | None = None,
        member: str | None = None,
        group: _GroupOrder | None = None,
    ) -> PendingCommand:
        """Register a selection or an approval request (not usable until announced)."""
        registry = self._approvals if kind == "approval" else self._selections
        if len(registry) >= self.max_pending:
            what = "approval requests" if kind == "approval" else "selections"
            raise TooManyPendingError(
                f"{len(registry)} {what} are already open; decide or cancel some first",
                f"{len(registry)} commandes sont déjà en attente ; traitez-en d'abord",
            )
        # A select token is a secret of the operator's session; an approval id is
        # shown to every supervisor, so a short random id is enough.
        pending_id = secrets.token_urlsafe(16) if kind == "confirmation" else _new_id()
        pending = PendingCommand(
            id=pending_id,
            kind=kind,
            command=command,
            arguments=arguments,
            requested_by=user,
            comment=comment,
            origin=origin,
            created_ms=now_ms(),
            expires_at=anyio.current_time() + within,
            device_id=device.id if device is not None else None,
            member=member,
            zone=device.zone if device is not None else None,
            role=role,
            approver_role=approver_role,
            group=group,
        )
        registry[pending_id] = pending
        if self._wake is not None:
            self._wake.set()
        return pending

    def _park_command(
        self,
        kind: str,
        request: CommandRequest,
        device: DeviceType,
        spec: CommandSpec,
        arguments: dict[str, Any],
    ) -> PendingCommand:
        return self._park(
            kind,
            command=spec.name,
            arguments=arguments,
            user=request.user,
            comment=request.comment,
            origin=request.origin,
            within=spec.approve_within if kind == "approval" else spec.confirm_within,
            role=spec.role,
            approver_role=spec.approver_role_needed,
            device=device,
            member=request.member,
        )

    async def _announce(self, pending: PendingCommand, journaled: Awaitable[Any]) -> Any:
        """Journal a new pending command, then make it usable (never the other way round)."""
        try:
            result = await journaled
        except BaseException:
            self._forget(pending)
            raise
        self._announced.add(pending.id)
        return result

    def _forget(self, pending: PendingCommand) -> None:
        self._selections.pop(pending.id, None)
        self._approvals.pop(pending.id, None)
        self._announced.discard(pending.id)

    def _all_pending(self) -> Iterator[PendingCommand]:
        yield from list(self._selections.values())
        yield from list(self._approvals.values())

    def _take_selection(
        self, token: str, user: User, request: CommandRequest | None = None
    ) -> PendingCommand:
        """The selection to operate now, removed from the open ones; or why not."""
        pending = self._selections.get(token)
        if pending is None or token not in self._announced:
            raise ConfirmationError(
                "unknown or already used confirmation token",
                "jeton de confirmation inconnu ou déjà utilisé",
            )
        if request is not None and (
            pending.group is not None
            or (pending.device_id, pending.command, pending.member)
            != (request.device_id, request.command, request.member)
        ):
            raise ConfirmationError(
                "the confirmation token belongs to another command",
                "le jeton de confirmation correspond à une autre commande",
            )
        if pending.requested_by.name != user.name:
            raise ConfirmationError(
                f"only {pending.requested_by.name}, who selected it, may confirm this command",
                f"seul(e) {pending.requested_by.name}, qui l'a sélectionnée, peut confirmer "
                "cette commande",
            )
        self._forget(pending)
        if pending.expires_at <= anyio.current_time():
            error = ConfirmationError(
                "the selection expired: select the command again",
                "la sélection a expiré : sélectionnez à nouveau la commande",
                status=410,
            )
            error.lapsed = pending  # type: ignore[attr-defined]
            raise error
        return pending

    def _take_approval(self, approval_id: str, user: User) -> PendingCommand:
        """The approval request to decide now, removed from the open ones; or why not."""
        pending = self._approvals.get(approval_id)
        if pending is None or approval_id not in self._announced:
            raise ApprovalError(
                "unknown or already decided approval request",
                "demande de validation inconnue ou déjà traitée",
            )
        problem = self._approver_problem(pending, user)
        if problem is not None:
            raise problem
        self._forget(pending)
        if pending.expires_at <= anyio.current_time():
            error = ApprovalError(
                "the approval request expired", "la demande de validation a expiré", status=410
            )
            error.lapsed = pending  # type: ignore[attr-defined]
            raise error
        return pending

    @staticmethod
    def _approver_problem(pending: PendingCommand, user: User) -> NotPermittedError | None:
        if user.name == pending.requested_by.name:
            return NotPermittedError(
                "a command needing two people cannot be approved by its author",
                "une commande à deux personnes ne peut pas être validée par son auteur",
            )
        if not user.has_role(pending.approver_role):
            return NotPermittedError(
                f"approving {pending.command} needs the {pending.approver_role} role; "
                f"{user.name} is {user.role}",
                f"valider {pending.command} demande le rôle {pending.approver_role} ; "
                f"{user.name} est {user.role}",
            )
        if pending.group is not None:
            zones = sorted({d.zone for d, _ in pending.group.targets})
        else:
            zones = [pending.zone or ""]
        outside = [z for z in zones if not user.in_zone(z)]
        if outside:
            return NotPermittedError(
                f"{user.name} may not act in zone {', '.join(outside)}",
                f"{user.name} n'a pas accès à la zone {', '.join(outside)}",
            )
        return None

    async def _operate(
        self,
        pending: PendingCommand,
        started: float,
        *,
        approver: str | None = None,
        confirmed_by: str | None = None,
        approval_comment: str = "",
    ) -> CommandResult | GroupResult:
        """Run a confirmed or approved command, checking everything again."""
        if pending.group is not None:
            return await self._run_group(
                pending.group,
                started,
                approver=approver,
                confirmed_by=confirmed_by,
                approval_comment=approval_comment,
                pending=pending.id,
            )
        assert pending.device_id is not None
        request = CommandRequest(
            pending.device_id,
            pending.command,
            pending.arguments,
            pending.member,
            pending.requested_by,
            pending.comment,
            pending.origin,
        )
        attempt = _Attempt.of(
            request,
            started,
            approver=approver,
            confirmed_by=confirmed_by,
            approval_comment=approval_comment,
            pending=pending.id,
        )
        return await self._attempt(attempt, gated=False)

    async def _close(
        self,
        pending: PendingCommand,
        outcome: CommandOutcome,
        user: User | None,
        comment: str,
        started: float,
        *,
        detail: str = "",
    ) -> CommandResult | GroupResult:
        """Journal the end of a command that never ran: rejected, cancelled or lapsed."""
        if not detail:
            if outcome is CommandOutcome.LAPSED:
                what = "approval" if pending.kind == "approval" else "confirmation"
                detail = f"no {what} in time"
            elif user is not None:
                detail = f"by {user.name}" + (f": {comment}" if comment else "")
        decided_by = user.name if user is not None else None
        if pending.group is not None:
            result = self._group_result(pending.group, outcome, started)
            await self._journal_group(
                pending.group,
                result,
                pending=pending.id,
                decided_by=decided_by,
                approval_comment=comment,
                detail=detail,
            )
            return result
        attempt = _Attempt(
            id=_new_id(),
            device_id=pending.device_id,
            command=pending.command,
            member=pending.member,
            arguments=pending.arguments,
            user=pending.requested_by,
            comment=pending.comment,
            origin=pending.origin,
            started=started,
            approver=decided_by if outcome is CommandOutcome.REJECTED else None,
            approval_comment=comment,
            pending=pending.id,
        )
        return await self._record(attempt, outcome, detail=detail, decided_by=decided_by)

    async def _refuse_action(
        self, pending_id: str, user: User, error: CommandError, started: float
    ) -> CommandError:
        """Journal a refused confirmation, approval, rejection or cancellation."""
        lapsed: PendingCommand | None = getattr(error, "lapsed", None)
        if lapsed is not None:
            # The lapse is the record: the command is over, whoever came too late.
            result = await self._close(lapsed, CommandOutcome.LAPSED, None, "", started)
            if isinstance(result, CommandResult):
                error.result = result
            return error
        pending = self._selections.get(pending_id) or self._approvals.get(pending_id)
        if pending is not None and pending_id not in self._announced:
            pending = None
        attempt = _Attempt(
            id=_new_id(),
            device_id=pending.device_id if pending else None,
            command=pending.command if pending else None,
            member=pending.member if pending else None,
            arguments=pending.arguments if pending else {},
            user=user,
            comment="",
            origin=pending.origin if pending else "api",
            started=started,
            pending=pending_id if pending else None,
            requested_by=pending.requested_by.name if pending else None,
        )
        return await self._refused(attempt, error)

    # -- the journal ---------------------------------------------------------

    async def _refused(self, attempt: _Attempt, error: CommandError) -> CommandError:
        """Journal a refusal; return the error, carrying its result, for the caller to raise."""
        try:
            error.result = await self._record(
                attempt, CommandOutcome.REFUSED, detail=error.message, error=error
            )
        except Exception:
            if not isinstance(error, JournalUnavailableError):
                raise
            # The journal that refused the order refuses its refusal too: nothing was sent.
            log.exception("could not journal the refusal of command %s", attempt.id)
        return error

    async def _journal_group_sending(
        self,
        order: _GroupOrder,
        approver: str | None,
        confirmed_by: str | None,
        pending: str | None,
    ) -> None:
        """Journal a group order about to be sent to its targets, or raise JournalUnavailableError.

        Each target's outcome follows as its own ``command`` entry with ``group`` set.
        """
        criteria = ", ".join(f"{k}={v}" for k, v in order.selector.items())
        await self._write_sending(
            JournalEntry(
                kind="command_sent",
                message=f"group {order.command} ({criteria}) to {len(order.targets)} targets: sending"[
                    :500
                ],
                user=order.user.name,
                data={
                    "group": order.id,
                    "command": order.command,
                    "arguments": _bounded_arguments(order.arguments),
                    "selector": order.selector,
                    "targets": len(order.targets),
                    "approver": approver,
                    "confirmed_by": confirmed_by,
                    "origin": order.origin,
                    "comment": order.comment,
                    "pending": pending,
                },
            ),
            order.id,
        )

    async def _write_sending(self, entry: JournalEntry, what: str) -> None:
        try:
            await self.store.journal(entry)
        except Exception as error:
            log.exception("could not journal command %s before sending it", what)
            raise JournalUnavailableError(
                f"the journal could not record the command ({type(error).__name__}): not sent",
                f"le journal n'a pas pu enregistrer la commande ({type(error).__name__}) : "
                "non envoyée",
            ) from error

    async def _journal_sending(self, attempt: _Attempt, arguments: Mapping[str, Any]) -> None:
        """Journal the order about to be sent; raise JournalUnavailableError if it cannot be."""
        target = attempt.device_id or "?"
        if attempt.member:
            target += f"/{attempt.member}"
        await self._write_sending(
            JournalEntry(
                kind="command_sent",
                message=f"{attempt.command} on {target}: sending"[:500],
                user=attempt.user.name,
                device=attempt.device_id,
                data={
                    "id": attempt.id,
                    "command": attempt.command,
                    "member": attempt.member,
                    "arguments": _bounded_arguments(arguments),
                    "approver": attempt.approver,
                    "confirmed_by": attempt.confirmed_by,
                    "origin": attempt.origin,
                    "comment": attempt.comment,
                    "group": attempt.group,
                    "pending": attempt.pending,
                },
            ),
            attempt.id,
        )

    async def _record(
        self,
        attempt: _Attempt,
        outcome: CommandOutcome,
        *,
        arguments: Any = None,
        detail: str = "",
        feedback: Any = None,
        error: CommandError | None = None,
        token: str | None = None,
        approval_id: str | None = None,
        expires_in: float | None = None,
        decided_by: str | None = None,
    ) -> CommandResult:
        """Write the attempt's journal entry (durably), then build its result."""
        duration = _ms_since(attempt.started)
        message = dict(error.text) if error is not None else _message(outcome, detail)
        if arguments is None:
            arguments = attempt.arguments
        result = CommandResult(
            id=attempt.id,
            device_id=attempt.device_id,
            command=attempt.command,
            member=attempt.member,
            outcome=outcome,
            message=message,
            detail=detail,
            duration_ms=duration,
            feedback=feedback,
            token=token,
            approval_id=approval_id,
            expires_in=expires_in,
            user=attempt.user.name,
            approver=attempt.approver,
            confirmed_by=attempt.confirmed_by,
            status=error.status if error is not None else None,
            code=error.code if error is not None else None,
            group=attempt.group,
        )
        data: dict[str, Any] = {
            "id": attempt.id,
            "command": attempt.command,
            "member": attempt.member,
            "arguments": _bounded_arguments(arguments),
            "outcome": outcome.value,
            "duration_ms": duration,
            "approver": attempt.approver,
            "confirmed_by": attempt.confirmed_by,
            "reason": None,
            "origin": attempt.origin,
            "comment": attempt.comment,
            "approval_comment": attempt.approval_comment,
            "detail": detail,
            "feedback": _jsonable(feedback),
            "group": attempt.group,
            "pending": attempt.pending,
            "requested_by": attempt.requested_by,
            "decided_by": decided_by,
            "text": message,
        }
        if error is not None:
            data["reason"] = dict(getattr(error, "reason", error.text))
            data["code"] = error.code
            data["status"] = error.status
            data.update(error.journal_data())
        target = attempt.device_id or "?"
        if attempt.member:
            target += f"/{attempt.member}"
        summary = f"{attempt.command or '?'} on {target}: {outcome.value}"
        if detail:
            summary += f" ({detail})"
        await self.store.journal(
            JournalEntry(
                kind="command",
                message=summary[:500],
                user=attempt.user.name,
                device=attempt.device_id,
                data=data,
            )
        )
        self.outcomes[outcome.value] += 1
        return result

    async def _journal_group(
        self,
        order: _GroupOrder,
        result: GroupResult,
        *,
        pending: str | None = None,
        error: CommandError | None = None,
        decided_by: str | None = None,
        approval_comment: str = "",
        detail: str = "",
    ) -> None:
        data: dict[str, Any] = {
            "group": order.id,
            "command": order.command,
            "arguments": _bounded_arguments(order.arguments),
            "selector": order.selector,
            "targets": len(order.targets),
            "outcome": result.outcome.value,
            "summary": result.summary,
            "duration_ms": result.duration_ms,
            "approver": result.approver,
            "confirmed_by": result.confirmed_by,
            "reason": None,
            "origin": order.origin,
            "comment": order.comment,
            "approval_comment": approval_comment,
            "detail": detail,
            "pending": pending,
            "decided_by": decided_by,
        }
        if error is not None:
            data["reason"] = dict(getattr(error, "reason", error.text))
            data["code"] = error.code
            data["status"] = error.status
            data.update(error.journal_data())
        criteria = ", ".join(f"{k}={v}" for k, v in order.selector.items())
        summary = f"group {order.command} ({criteria}) to {len(order.targets)} targets: "
        summary += result.outcome.value
        if detail or error is not None:
            summary += f" ({detail or (error.message if error else '')})"
        await self.store.journal(
            JournalEntry(kind="command", message=summary[:500], user=order.user.name, data=data)
        )
        self.group_outcomes[result.outcome.value] += 1
