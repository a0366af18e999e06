"""What the CommandBus's parts share: its state, and the methods they call on each other.

:class:`~cityvisor.core.commands.bus.CommandBus` is assembled from one class
per responsibility (parked commands awaiting a confirmation or an approval,
group orders, the audit in the journal), each in its own module. They all
run on one object, so each may use the bus's state and the methods another
part defines. This base class declares that shared surface for the type
checker only: at run time it is empty, and every method is the one its part
defines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..users import Role

if TYPE_CHECKING:
    import anyio

    from ..declarations import CommandSpec
    from ..devices import DeviceType
    from ..points import PointDB
    from ..store import JournalEntry, Store
    from ..users import User
    from .errors import CommandError
    from .records import (
        CommandOutcome,
        CommandRequest,
        CommandResult,
        GroupResult,
        PendingCommand,
        _Attempt,
        _GroupOrder,
    )


class _CommandBusParts:
    """The state and the cross-part methods of the CommandBus, declared for type checking."""

    if TYPE_CHECKING:
        points: PointDB
        store: Store
        devices: Mapping[str, DeviceType]
        max_pending: int
        max_queue: int
        group_concurrency: int
        outcomes: Counter[str]
        group_outcomes: Counter[str]
        _selections: dict[str, PendingCommand]
        _approvals: dict[str, PendingCommand]
        _announced: set[str]
        _locks: dict[str, anyio.Lock]
        _queued: Counter[str]
        _wake: anyio.Event | None

        # bus.py
        async def _attempt(self, attempt: _Attempt, *, gated: bool) -> CommandResult: ...
        @staticmethod
        def _needs_approval(device: DeviceType, spec: CommandSpec) -> bool: ...
        async def _operate(
            self,
            pending: PendingCommand,
            started: float,
            *,
            approver: str | None = None,
            confirmed_by: str | None = None,
            approval_comment: str = "",
        ) -> CommandResult | GroupResult: ...
        async def _close(
            self,
            pending: PendingCommand,
            outcome: CommandOutcome,
            user: User | None,
            comment: str,
            started: float,
            *,
            detail: str = "",
        ) -> CommandResult | GroupResult: ...
        async def _refused(self, attempt: _Attempt, error: CommandError) -> CommandError: ...

        # selection.py
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
        ) -> PendingCommand: ...
        def _park_command(
            self,
            kind: str,
            request: CommandRequest,
            device: DeviceType,
            spec: CommandSpec,
            arguments: dict[str, Any],
        ) -> PendingCommand: ...
        async def _announce(self, pending: PendingCommand, journaled: Awaitable[Any]) -> Any: ...
        def _forget(self, pending: PendingCommand) -> None: ...
        def _all_pending(self) -> Iterator[PendingCommand]: ...
        def _take_selection(
            self, token: str, user: User, request: CommandRequest | None = None
        ) -> PendingCommand: ...

        # groups.py
        async def _run_group(
            self,
            order: _GroupOrder,
            started: float,
            *,
            approver: str | None = None,
            confirmed_by: str | None = None,
            approval_comment: str = "",
            pending: str | None = None,
        ) -> GroupResult: ...
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
        ) -> GroupResult: ...
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
        ) -> None: ...

        # audit.py
        async def _write_sending(self, entry: JournalEntry, what: str) -> None: ...
        async def _journal_sending(
            self, attempt: _Attempt, arguments: Mapping[str, Any]
        ) -> None: ...
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
        ) -> CommandResult: ...
