"""The CommandBus: validate, authorise, check interlocks, run one command per device at a time, verify."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..declarations import (
    CommandSpec,
)
from ..points import PointDB, PointValue
from ..store import Store
from ..users import User
from .audit import _Audit
from .errors import (
    CommandError,
    ConfirmationError,
    DeviceBusyError,
    DeviceOfflineError,
    InterlockedError,
    InvalidArgumentsError,
    JournalUnavailableError,
    NotPermittedError,
    UnknownCommandError,
    UnknownDeviceError,
)
from .groups import _GroupOrders
from .records import (
    CommandOutcome,
    CommandRequest,
    CommandResult,
    GroupResult,
    PendingCommand,
    _Attempt,
    _new_id,
    _relative_point_id,
)
from .selection import _SelectionAndApproval

if TYPE_CHECKING:
    from ..devices import DeviceType

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the bus


class CommandBus(_SelectionAndApproval, _GroupOrders, _Audit):
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
