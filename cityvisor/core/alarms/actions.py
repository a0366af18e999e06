"""Operator actions on alarms: acknowledge, shelve and unshelve, out of service, procedure steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..points import now_ms
from ..users import Role, User
from .errors import AlarmActionError
from .model import Alarm, Transition
from .parts import _AlarmManagerParts

if TYPE_CHECKING:
    pass


class _OperatorActions(_AlarmManagerParts):
    """The manager's operator actions: acknowledge, shelve, unshelve, out of service, procedure steps."""

    async def acknowledge(self, alarm_id: str, user: User, comment: str = "") -> Alarm:
        """Acknowledge an alarm (operator, in its zone); return once it is journaled.

        ``unack_active`` becomes ``ack_active`` (or ``normal`` if latched and
        cleared); ``rtn_unack`` becomes ``normal``. Raise
        :class:`AlarmActionError` if there is nothing to acknowledge.
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"acknowledge {alarm_id}")
        self._ready()
        self._transit(alarm, "ack", user=user.name, comment=comment.strip())
        await self._commit()
        return alarm

    async def shelve(self, alarm_id: str, user: User, duration: float, reason: str) -> Alarm:
        """Shelve an alarm for ``duration`` seconds (supervisor, reason required).

        It is unshelved by itself when the time is up (journaled too).
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.SUPERVISOR, f"shelve {alarm_id}")
        reason = reason.strip()
        if not reason:
            raise AlarmActionError(f"{alarm_id}: shelving needs a reason")
        if not (0 < duration <= self.max_shelve):
            raise AlarmActionError(
                f"{alarm_id}: shelve duration must be between 0 and {self.max_shelve:g} s,"
                f" not {duration:g}"
            )
        self._ready()
        ts = now_ms()
        until = ts + int(duration * 1000)
        self._transit(
            alarm,
            "shelve",
            user=user.name,
            comment=reason,
            data={"until": until, "duration_s": duration},
            ts=ts,
        )
        alarm.shelved_until = until
        alarm.shelve_reason = reason
        alarm.shelved_by = user.name
        alarm._shelve_gen += 1
        self._schedule(duration, "shelve", alarm, alarm._shelve_gen)
        await self._commit()
        return alarm

    async def unshelve(self, alarm_id: str, user: User) -> Alarm:
        """Bring a shelved alarm back before its time (operator, in its zone)."""
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"unshelve {alarm_id}")
        self._ready()
        self._unshelve(alarm, user.name, "")
        await self._commit()
        return alarm

    def _unshelve(
        self, alarm: Alarm, user: str | None, comment: str, expired: bool = False
    ) -> None:
        data = {"expired": True} if expired else {}
        self._transit(alarm, "unshelve", user=user, comment=comment, data=data)
        alarm.shelved_until = None
        alarm.shelve_reason = ""
        alarm.shelved_by = None
        alarm._shelve_gen += 1

    async def set_out_of_service(
        self, alarm_id: str, user: User, out: bool, reason: str = ""
    ) -> Alarm:
        """Take an alarm out of service (``out=True``, reason required) or back in (supervisor)."""
        alarm = self.get(alarm_id)
        action = "take out of service" if out else "return to service"
        self._authorise(user, alarm.zone, Role.SUPERVISOR, f"{action} {alarm_id}")
        reason = reason.strip()
        if out and not reason:
            raise AlarmActionError(f"{alarm_id}: taking an alarm out of service needs a reason")
        self._ready()
        self._transit(
            alarm,
            "remove_from_service" if out else "return_to_service",
            user=user.name,
            comment=reason,
        )
        alarm.out_of_service_reason = reason if out else ""
        alarm.out_of_service_by = user.name if out else None
        await self._commit()
        return alarm

    async def tick_step(self, alarm_id: str, step: int, user: User, done: bool = True) -> Alarm:
        """Tick (or untick) step ``step`` (0-based) of the alarm's procedure, journaled.

        The checklist belongs to the current occurrence: it starts empty each
        time the alarm is raised again.
        """
        alarm = self.get(alarm_id)
        self._authorise(user, alarm.zone, Role.OPERATOR, f"follow the procedure of {alarm_id}")
        if alarm.procedure is None:
            raise AlarmActionError(f"{alarm_id}: the alarm has no procedure")
        procedure = self.procedures.get(alarm.procedure)
        if procedure is None:
            raise AlarmActionError(f"{alarm_id}: procedure {alarm.procedure!r} is not loaded")
        if not 0 <= step < len(procedure.steps):
            raise AlarmActionError(
                f"{alarm_id}: procedure {procedure.id} has steps 0 to {len(procedure.steps) - 1},"
                f" not {step}"
            )
        self._ready()
        ts = now_ms()
        alarm.checklist[step] = {"done": done, "by": user.name, "ts": ts}
        alarm.checklist_version = procedure.version
        alarm.counts["procedure_step"] += 1
        self._record(
            Transition(
                "procedure_step",
                alarm.id,
                ts,
                user.name,
                "",
                alarm.state.value,
                alarm.state.value,
                alarm.value,
                not alarm.hidden,
                {
                    "procedure": procedure.id,
                    "version": procedure.version,
                    "step": step,
                    "done": done,
                    "text": dict(procedure.steps[step]),
                },
            ),
            alarm,
        )
        await self._commit()
        return alarm
