"""Journaling: every transition is written to the journal before anybody is told, and restored after a restart."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ..points import now_ms
from ..store import JournalEntry
from .model import Alarm, Transition
from .parts import _AlarmManagerParts
from .states import _NORMAL
from .subscriptions import AlarmEvent

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


JOURNAL_KINDS: dict[str, str] = {
    "raised": "alarm",
    "cleared": "alarm",
    "acknowledged": "ack",
    "shelved": "shelve",
    "unshelved": "shelve",
    "suppressed": "suppression",
    "unsuppressed": "suppression",
    "out_of_service": "out_of_service",
    "in_service": "out_of_service",
    "maintenance_started": "maintenance",
    "maintenance_ended": "maintenance",
    "maintenance_added": "maintenance",
    "maintenance_removed": "maintenance",
    "procedure_step": "procedure_step",
    "flood_started": "flood",
    "flood_ended": "flood",
}
"""The journal ``kind`` under which each transition kind is written."""


def _wall_ms() -> int:
    return now_ms()


class _Journal(_AlarmManagerParts):
    """The manager's journaling: write pending transitions first, then tell; restore saved state."""

    async def _flush(self) -> None:
        """Journal every pending transition and save its alarm's state, then publish."""
        batch = self._in_flight = self._pending
        self._pending = []
        try:
            items: list[tuple[str | None, Mapping[str, Any] | None, JournalEntry]] = []
            for item in batch:
                alarm = item.alarm
                items.append(
                    (
                        alarm.id if alarm is not None else None,
                        alarm._persisted() if alarm is not None else None,
                        self._journal_entry(item.transition, alarm),
                    )
                )
            await self.store.save_alarm_states(items)
        except BaseException:
            self._pending[:0] = batch
            self._in_flight = []
            raise
        self._in_flight = []
        snapshots: dict[str, dict[str, Any]] = {}
        for item in batch:
            alarm = item.alarm
            snapshot = None
            if alarm is not None:
                snapshot = snapshots.get(alarm.id)
                if snapshot is None:
                    snapshot = snapshots[alarm.id] = alarm.as_json()
            event = AlarmEvent(item.transition, snapshot)
            for sub in list(self._subscriptions):
                sub._offer(event)
            if alarm is not None and self.on_transition is not None:
                try:
                    self.on_transition(alarm, item.transition)
                except Exception:  # a plugin's bug must not stop the alarms
                    log.exception("on_transition failed for %s", item.transition)
            if item.done is not None:
                item.done.set()

    def _journal_entry(self, transition: Transition, alarm: Alarm | None) -> JournalEntry:
        data = transition.as_json()
        data.pop("user")
        data.pop("alarm")
        data.pop("ts")
        if alarm is not None:
            data["priority"] = str(alarm.priority)
            data["zone"] = alarm.zone
            subject = alarm.message.get("fr") or alarm.message.get("en") or alarm.name
            message = f"{transition.kind}: {subject}"
            if not transition.annunciated:
                message += f" ({alarm.display_state})"
        else:
            message = f"{transition.kind}: {transition.data.get('zone') or transition.data.get('device_id') or ''}"
        if transition.comment:
            message += f" — {transition.comment}"
        return JournalEntry(
            kind=JOURNAL_KINDS.get(transition.kind, "alarm"),
            message=message,
            user=transition.user,
            device=(alarm.device_id or None) if alarm is not None else None,
            point=alarm.point_id if alarm is not None else None,
            alarm=alarm.id if alarm is not None else None,
            data=data,
            ts=transition.ts,
        )

    async def wait_journaled(self) -> None:
        """Wait until every transition that happened so far is journaled and published."""
        self._ready()
        await self._commit()

    async def _commit(self) -> None:
        """Wait until everything queued so far is journaled (the operator's guarantee)."""
        queue = self._pending or self._in_flight
        if not queue:
            return
        last = queue[-1]
        if last.done is None:
            last.done = anyio.Event()
        self._wake_up()
        await last.done.wait()
        if last.error is not None:
            raise last.error

    def _restore_one(self, alarm: Alarm) -> None:
        saved = (self._saved or {}).get(alarm.id)
        if saved is None:
            return
        alarm._restore(saved)
        if alarm.shelved:
            # Its expiry is journaled by the timer, even if it passed while we were down.
            remaining = max(0.0, ((alarm.shelved_until or 0) - now_ms()) / 1000)
            alarm._shelve_gen += 1
            self._schedule(remaining, "shelve", alarm, alarm._shelve_gen)

    def _reveal_if_unseen(self, alarm: Alarm) -> None:
        """Raise a restored alarm that is active, no longer hidden, and was never annunciated.

        It happens when what hid it is gone after the restart (a maintenance
        window deleted by hand, a declaration now unsuppressible): nothing
        active and visible may stay silent.
        """
        if alarm.active and alarm.state is _NORMAL and not alarm.hidden:
            alarm.active = alarm.condition = False
            self._transit(alarm, "raise")
            alarm.condition = True

    def _restore_hiding(self, alarm: Alarm) -> None:
        """Recompute the hiding that is not persisted: suppression and maintenance."""
        alarm.maintenance = any(self._windows[w].covers(alarm) for w in self._open_windows)
        comm = self._communication.get(alarm.device_id)
        if comm is not None and comm is not alarm and alarm.spec.suppressible:
            alarm.suppressed = comm.active
