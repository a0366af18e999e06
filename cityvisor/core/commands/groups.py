"""Group orders: one order to many devices by zone or tag, journaled once, with a result per device."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..store import JournalEntry
from ..users import User
from .errors import CommandError, InvalidArgumentsError, JournalUnavailableError, UnknownDeviceError
from .parts import _CommandBusParts
from .records import (
    CommandOutcome,
    CommandRequest,
    CommandResult,
    GroupResult,
    PendingCommand,
    _Attempt,
    _bounded_arguments,
    _GroupOrder,
    _ms_since,
    _new_id,
)

if TYPE_CHECKING:
    from ..devices import DeviceType

log = logging.getLogger(__name__)


class _GroupOrders(_CommandBusParts):
    """The bus's group orders: one order to many devices, journaled once, with a result per device."""

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
