"""Planned maintenance windows: alarms of a zone or a device hidden while the work is announced."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ..points import now_ms
from ..users import Role, User
from .errors import AlarmActionError, UnknownAlarmError
from .model import MaintenanceWindow, Transition
from .parts import _AlarmManagerParts

if TYPE_CHECKING:
    import sqlite_utils


_MAINTENANCE_TABLE = "alarm_maintenance"


# =========================================================================== maintenance table


def _create_maintenance_table(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {_MAINTENANCE_TABLE} ("
        " id TEXT PRIMARY KEY, device_id TEXT, zone TEXT,"
        " start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, reason TEXT NOT NULL,"
        " created_by TEXT NOT NULL, created_at INTEGER NOT NULL)"
    )


def _load_windows(db: sqlite_utils.Database) -> list[MaintenanceWindow]:
    rows = db.execute(
        "SELECT id, device_id, zone, start_ms, end_ms, reason, created_by, created_at"
        f" FROM {_MAINTENANCE_TABLE} ORDER BY start_ms"
    ).fetchall()
    return [MaintenanceWindow(*row) for row in rows]


def _save_window(db: sqlite_utils.Database, window: MaintenanceWindow) -> None:
    db.execute(
        f"INSERT INTO {_MAINTENANCE_TABLE}"
        " (id, device_id, zone, start_ms, end_ms, reason, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            window.id,
            window.device_id,
            window.zone,
            window.start_ms,
            window.end_ms,
            window.reason,
            window.created_by,
            window.created_at,
        ),
    )


def _delete_window(db: sqlite_utils.Database, window_id: str) -> None:
    db.execute(f"DELETE FROM {_MAINTENANCE_TABLE} WHERE id = ?", (window_id,))


class _MaintenanceWindows(_AlarmManagerParts):
    """The manager's maintenance windows: add, remove, open and close them, hide what they cover."""

    def maintenance_windows(self) -> list[MaintenanceWindow]:
        """The planned maintenance windows, current and future, by start time."""
        return sorted(self._windows.values(), key=lambda w: (w.start_ms, w.id))

    # ------------------------------------------------------------------ maintenance

    async def add_maintenance(
        self,
        user: User,
        *,
        device_id: str | None = None,
        zone: str | None = None,
        start_ms: int,
        end_ms: int,
        reason: str,
    ) -> MaintenanceWindow:
        """Plan maintenance of a device or a zone (supervisor); journaled and persisted.

        Between ``start_ms`` and ``end_ms`` the alarms concerned are not
        annunciated; the window is forgotten when it ends.
        """
        if (device_id is None) == (zone is None):
            raise AlarmActionError("a maintenance window is for one device or one zone")
        if device_id is not None:
            alarms = self._by_device.get(device_id)
            if not alarms:
                raise AlarmActionError(f"device {device_id!r} has no alarms")
            window_zone = alarms[0].zone
        else:
            assert zone is not None
            window_zone = zone
        self._authorise(user, window_zone, Role.SUPERVISOR, "plan maintenance")
        reason = reason.strip()
        if not reason:
            raise AlarmActionError("a maintenance window needs a reason")
        if end_ms <= start_ms:
            raise AlarmActionError("a maintenance window must end after it starts")
        now = now_ms()
        if end_ms <= now:
            raise AlarmActionError("a maintenance window must end in the future")
        self._ready()
        window = MaintenanceWindow(
            secrets.token_hex(6), device_id, zone, start_ms, end_ms, reason, user.name, now
        )
        await self.store.call(lambda db: _save_window(db, window))
        self._record(
            Transition("maintenance_added", "", now, user.name, reason, data=window.as_json()),
            None,
        )
        self._open_window(window)
        await self._commit()
        return window

    async def remove_maintenance(self, window_id: str, user: User) -> MaintenanceWindow:
        """End or cancel a maintenance window (supervisor); journaled."""
        window = self._windows.get(window_id)
        if window is None:
            raise UnknownAlarmError(window_id)
        self._authorise(user, self._window_zone(window), Role.SUPERVISOR, "end maintenance")
        self._ready()
        await self.store.call(lambda db: _delete_window(db, window_id))
        del self._windows[window_id]
        self._open_windows.discard(window_id)
        self._refresh_maintenance(window)
        self._record(
            Transition(
                "maintenance_removed", "", now_ms(), user.name, window.reason, data=window.as_json()
            ),
            None,
        )
        await self._commit()
        return window

    def _schedule_window(self, window: MaintenanceWindow) -> bool:
        """Remember a window and set its timers; True if it is open now."""
        self._windows[window.id] = window
        now = now_ms()
        # Timers run on the monotonic clock: convert the wall-clock bounds once, here.
        self._schedule(max(0.0, (window.end_ms - now) / 1000), "window_end", window.id, 0)
        if window.start_ms <= now:
            self._open_windows.add(window.id)
            return True
        self._schedule((window.start_ms - now) / 1000, "window_start", window.id, 0)
        return False

    def _open_window(self, window: MaintenanceWindow) -> None:
        if self._schedule_window(window):
            self._refresh_maintenance(window)

    def _window_zone(self, window: MaintenanceWindow) -> str:
        if window.zone is not None:
            return window.zone
        alarms = self._by_device.get(window.device_id or "")
        return alarms[0].zone if alarms else ""

    async def _delete_expired_windows(self) -> None:
        if not self._expired_windows:
            return
        expired = list(self._expired_windows)

        def delete(db: sqlite_utils.Database) -> None:
            for window_id in expired:
                _delete_window(db, window_id)

        await self.store.call(delete)
        self._expired_windows.difference_update(expired)

    def _refresh_maintenance(self, window: MaintenanceWindow) -> None:
        if window.device_id is not None:
            concerned = self._by_device.get(window.device_id, [])
        else:
            concerned = [a for a in self._alarms.values() if a.zone == window.zone]
        open_windows = [self._windows[w] for w in self._open_windows if w in self._windows]
        for alarm in concerned:
            inside = any(w.covers(alarm) for w in open_windows)
            if inside != alarm.maintenance:
                self._transit(
                    alarm,
                    "start_maintenance" if inside else "end_maintenance",
                    comment=window.reason,
                    data={"window": window.id},
                )
