"""The command audit: every order journaled before it is sent, and every attempt's outcome after it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..store import JournalEntry
from .errors import CommandError, JournalUnavailableError, _message
from .parts import _CommandBusParts
from .records import (
    CommandOutcome,
    CommandResult,
    _Attempt,
    _bounded_arguments,
    _jsonable,
    _ms_since,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class _Audit(_CommandBusParts):
    """The bus's audit: an order is journaled before it is sent, and every attempt's outcome after."""

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
