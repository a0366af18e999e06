"""Command records: requests, results, group results, pending commands and attempts."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..points import now_ms
from ..users import Role, User
from .errors import CommandOutcome, _message

if TYPE_CHECKING:
    from ..devices import DeviceType


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
