"""The embedded store: one SQLite file in WAL mode, every call in one worker thread."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import sqlite_utils

from ..points import now_ms
from .history import _ROW, _SqliteHistory
from .interface import AlarmStateWrite, JournalEntry, Store, T
from .journal import _ROW_ERRORS, _SqliteJournal, chain_journal
from .placeholders import storable_data

log = logging.getLogger(__name__)


class SqliteStore(_SqliteJournal, _SqliteHistory, Store):
    """The embedded store: one SQLite file, WAL mode, through sqlite-utils.

    ``retention_days`` maps a point's history class (``PointSpec.history``)
    to days kept; ``"none"`` is never recorded; a class not listed uses
    ``"default"``. ``max_pending`` bounds the history buffer: past it the
    oldest queued changes are dropped and counted in ``history_dropped``.

    History rows are keyed by (point, source time in ms): when a point changes
    twice within one millisecond, the change recorded last is the one kept.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 1.0,
        retention_days: Mapping[str, float] | None = None,
        max_pending: int = 1_000_000,
        prune_interval: float = 3600.0,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.retention_days = {"default": 365.0, **(retention_days or {})}
        self.max_pending = max_pending
        self.prune_interval = prune_interval
        self.history_dropped = 0
        self.history_written = 0
        self.history_rejected = 0
        """Changes SQLite could not store (a value out of its range), skipped and logged."""
        self.journal_replaced = 0
        """Journal entries written as a placeholder because they could not be written as sent."""
        self.on_journal_replaced: Callable[[int, str], None] | None = None
        """Called on the event loop with the count and the last reason when it grows."""
        self._replaced_reported = 0
        self._replaced_reason = ""
        self._chain_head: tuple[int, str] | None = None
        # Flat: five scalars per change, not a tuple. A tuple per queued change is
        # a garbage-collected object that lives until the flush; a million of
        # them trigger full collections over the whole point database.
        self._pending: deque[Any] = deque(maxlen=max_pending * _ROW)
        self._point_keys: dict[str, int] = {}
        self._point_classes: dict[str, str] = {}
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    # -- plumbing ----------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)

        def locked() -> T:
            with self._lock:
                return function(*args)

        return await anyio.to_thread.run_sync(locked, limiter=self._limiter)

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils database (only for use inside :meth:`call`)."""
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        """Open the file, switch to WAL and create the tables."""
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(connection)
        db.enable_wal()
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS journal (
                id INTEGER PRIMARY KEY,
                ts INTEGER NOT NULL,
                kind TEXT NOT NULL,
                message TEXT NOT NULL DEFAULT '',
                user TEXT, device TEXT, point TEXT, alarm TEXT,
                data TEXT NOT NULL DEFAULT '{}',
                prev_hash TEXT, hash TEXT
            );
            CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts);
            CREATE INDEX IF NOT EXISTS journal_kind_ts ON journal (kind, ts);
            CREATE INDEX IF NOT EXISTS journal_device_ts ON journal (device, ts);
            CREATE INDEX IF NOT EXISTS journal_alarm ON journal (alarm);
            CREATE TABLE IF NOT EXISTS alarm_state (
                key TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                updated INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS history_point (
                key INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                class TEXT NOT NULL DEFAULT 'default'
            );
            CREATE TABLE IF NOT EXISTS history (
                point INTEGER NOT NULL,
                ts INTEGER NOT NULL,
                value,
                quality TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (point, ts)
            ) WITHOUT ROWID;
            """
        )
        self._db = db
        chain_journal(db.conn)
        for key, point_id, klass in db.execute("SELECT key, id, class FROM history_point"):
            self._point_keys[point_id] = key
            self._point_classes[point_id] = klass

    async def close(self) -> None:
        """Flush history, then close the file (even if the last flush fails)."""
        if self._db is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.flush_history()
            finally:
                await self._run(self._close_sync)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error (store thread only)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        # The journal's head is known within this transaction only (read again in the next).
        self._chain_head = None
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may already have ended the transaction.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._chain_head = None

    async def call(self, function: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``function(db)`` in the store's thread, serialised with every other access."""
        return await self._run(lambda: function(self.db))

    # -- alarm state ---------------------------------------------------------

    async def save_alarm_state(
        self, key: str, state: Mapping[str, Any] | None, entry: JournalEntry | None = None
    ) -> JournalEntry | None:
        """Write the alarm's state and its journal entry in one transaction."""
        (written,) = await self._run(self._save_alarm_states, [(key, state, entry)])
        return written

    async def save_alarm_states(
        self, items: Sequence[AlarmStateWrite]
    ) -> list[JournalEntry | None]:
        """Write many alarm states and their journal entries in one transaction."""
        if not items:
            return []
        try:
            return await self._run(self._save_alarm_states, list(items))
        finally:
            self._report_replaced()

    def _save_alarm_states(self, items: list[AlarmStateWrite]) -> list[JournalEntry | None]:
        conn = self.db.conn
        written: list[JournalEntry | None] = []
        updated = now_ms()
        with self._transaction():
            for key, state, entry in items:
                written.append(self._journal_sync(entry) if entry is not None else None)
                if key is None:
                    continue
                if state is None:
                    conn.execute("DELETE FROM alarm_state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO alarm_state (key, state, updated) VALUES (?, ?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
                        " updated = excluded.updated",
                        (key, _state_json(state), updated),
                    )
        return written

    async def load_alarm_states(self) -> dict[str, dict[str, Any]]:
        """Every persisted alarm state, by key."""

        def load() -> dict[str, dict[str, Any]]:
            return {
                key: json.loads(state)
                for key, state in self.db.execute("SELECT key, state FROM alarm_state")
            }

        return await self._run(load)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush history every ``flush_interval`` s and prune every ``prune_interval`` s.

        A failed write is logged and retried at the next flush (its changes
        stay buffered); on cancellation the buffer is flushed one last time.
        """
        task_status.started()
        next_prune = anyio.current_time() + 60.0
        try:
            while True:
                await anyio.sleep(self.flush_interval)
                try:
                    await self.flush_history()
                    if anyio.current_time() >= next_prune:
                        next_prune = anyio.current_time() + self.prune_interval
                        deleted = await self.prune()
                        if deleted:
                            log.info("history retention: %d rows deleted", deleted)
                except sqlite3.Error:
                    log.exception("history write failed; will retry")
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush_history()


def _state_json(state: Mapping[str, Any]) -> str:
    """An alarm's state as JSON; what JSON cannot hold made safe rather than failing the batch."""
    try:
        return json.dumps(dict(state), default=str)
    except _ROW_ERRORS:
        return json.dumps(storable_data(state), default=str)
