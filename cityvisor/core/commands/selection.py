"""Parked commands: select before operate, and two-person approval, until confirmed, approved, rejected or expired."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from ..declarations import (
    CommandSpec,
)
from ..points import now_ms
from ..users import Role, User
from .errors import (
    ApprovalError,
    CommandError,
    ConfirmationError,
    NotPermittedError,
    TooManyPendingError,
)
from .parts import _CommandBusParts
from .records import (
    CommandOutcome,
    CommandRequest,
    CommandResult,
    GroupResult,
    PendingCommand,
    _Attempt,
    _GroupOrder,
    _new_id,
)

if TYPE_CHECKING:
    from ..devices import DeviceType

log = logging.getLogger(__name__)


class _SelectionAndApproval(_CommandBusParts):
    """The bus's parked commands: select before operate, two-person approval, cancel and reject."""

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
