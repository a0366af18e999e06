"""Persistence: the journal, alarm state, point history and the tables plugins need.

:class:`Store` is the interface the rest of the system uses; :class:`SqliteStore`
is the embedded default, one SQLite file in WAL mode through sqlite-utils.
A deployment that outgrows one file can put another implementation behind
the same interface (history in PostgreSQL, say) without touching plugins.

Two kinds of writes, two guarantees:

- the **journal** (alarm transitions, acknowledgements, commands, logins,
  configuration changes) is written and synced *before* the call returns:
  nothing is reported done that is not on disk;
- a journal entry that cannot be written as it is (text that has no UTF-8
  form, a number beyond SQLite's range, data JSON cannot hold) is written
  as a **placeholder** in its place: the same entry with its text made safe
  and ``data["replaced"]`` saying what was changed and why. One bad entry
  never stops the entries behind it, and is never silently dropped;
- **history** is buffered in memory (bounded) and written in batches at
  least every ``flush_interval`` seconds; it is the only thing a crash can
  lose, and only its last second.

SQLite calls are blocking: they run in one worker thread (``anyio.to_thread``
with a capacity limiter of one), never on the event loop.
"""

from __future__ import annotations

import abc
import json
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import sqlite_utils

from .points import PointSpec, PointValue, Quality, QualityStatus, now_ms
from .text import MAX_INTEGER, MIN_INTEGER, safe_text

__all__ = ["JournalEntry", "JournalScope", "SqliteStore", "Store", "TrendBucket"]

log = logging.getLogger(__name__)

T = TypeVar("T")

HistoryRow = tuple[str, int, Any, str, str]
"""A queued history change: point id, source time, value, quality text, history class."""

_ROW = 5
"""Fields per change in the flat history buffer (the fields of a :data:`HistoryRow`)."""

_PRUNE_CHUNK = 500
"""Points pruned per transaction: short transactions let journal writes interleave."""

DAY_MS = 86_400_000


@dataclass(frozen=True)
class JournalScope:
    """The part of the journal a reader limited to some zones may see.

    Entries about the ``devices`` of those zones; entries about no device that
    name one of the ``zones`` (``data["zone"]``: floods, zone maintenance); and
    everything ``user`` did themselves. Entries about no device and no zone
    (other users' logins, configuration) are not theirs to read.
    """

    devices: frozenset[str]
    zones: frozenset[str]
    user: str


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal: something that happened, who did it, to what.

    ``kind`` is a short word (``alarm``, ``ack``, ``shelve``, ``command``,
    ``login``, ``config``...); ``data`` holds the details as JSON-ready values.
    """

    kind: str
    message: str = ""
    user: str | None = None
    device: str | None = None
    point: str | None = None
    alarm: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    ts: int = 0
    id: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict."""
        return {
            "id": self.id,
            "ts": self.ts,
            "kind": self.kind,
            "message": self.message,
            "user": self.user,
            "device": self.device,
            "point": self.point,
            "alarm": self.alarm,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class TrendBucket:
    """Aggregated history of one point over one time bucket."""

    start: int
    count: int
    minimum: float | None
    maximum: float | None
    average: float | None
    last: Any


AlarmStateWrite = tuple[str | None, Mapping[str, Any] | None, JournalEntry | None]
"""One item of :meth:`Store.save_alarm_states`: alarm key, its state, its journal entry."""


class Store(abc.ABC):
    """What the hub needs from persistence. See :class:`SqliteStore`."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema; called once before anything else."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Write buffered history and release the database."""

    @abc.abstractmethod
    async def journal(self, entry: JournalEntry) -> JournalEntry:
        """Write one journal entry durably and return it with its id and time."""

    @abc.abstractmethod
    async def query_journal(
        self,
        *,
        kinds: Sequence[str] | None = None,
        device: str | None = None,
        user: str | None = None,
        alarm: str | None = None,
        since: int | None = None,
        until: int | None = None,
        search: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        scope: JournalScope | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, newest first, filtered; page with ``before_id``.

        ``scope`` limits them to what a reader of some zones may see (see
        :class:`JournalScope`); the limit applies after it, so pages stay full.
        """

    @abc.abstractmethod
    async def save_alarm_state(
        self, key: str, state: Mapping[str, Any] | None, entry: JournalEntry | None = None
    ) -> JournalEntry | None:
        """Persist one alarm's state (None deletes it) and its journal entry, atomically."""

    async def save_alarm_states(
        self, items: Sequence[AlarmStateWrite]
    ) -> list[JournalEntry | None]:
        """Several :meth:`save_alarm_state` in order; a key of None writes only its entry.

        Stores should override it to write everything in one transaction
        (this default writes item by item).
        """
        written: list[JournalEntry | None] = []
        for key, state, entry in items:
            if key is None:
                written.append(await self.journal(entry) if entry is not None else None)
            else:
                written.append(await self.save_alarm_state(key, state, entry))
        return written

    @abc.abstractmethod
    async def load_alarm_states(self) -> dict[str, dict[str, Any]]:
        """Every persisted alarm state, by alarm key."""

    @abc.abstractmethod
    def record(self, value: PointValue, spec: PointSpec) -> None:
        """Queue a point change for history (never blocks, never does I/O)."""

    @abc.abstractmethod
    async def flush_history(self) -> int:
        """Write queued history now; return the number of rows written."""

    @abc.abstractmethod
    async def history(
        self,
        point_id: str,
        start: int,
        end: int,
        *,
        bucket_ms: int | None = None,
        limit: int = 10_000,
    ) -> list[TrendBucket] | list[PointValue]:
        """Raw history of a point (``bucket_ms=None``) or its min/max/avg per bucket."""

    @abc.abstractmethod
    async def prune(self, now: int | None = None) -> int:
        """Delete history older than its retention; return rows deleted."""

    @abc.abstractmethod
    async def call(self, function: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``function(db)`` in the store's thread: for plugins' own tables."""

    @abc.abstractmethod
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush history and apply retention periodically, until cancelled."""


class SqliteStore(Store):
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
                data TEXT NOT NULL DEFAULT '{}'
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

    async def call(self, function: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``function(db)`` in the store's thread, serialised with every other access."""
        return await self._run(lambda: function(self.db))

    # -- journal -----------------------------------------------------------

    async def journal(self, entry: JournalEntry) -> JournalEntry:
        """Write ``entry`` durably; return it with its id and timestamp.

        An entry that cannot be written as it is comes back as the
        placeholder written in its place (see the module's docstring).
        """
        try:
            return await self._run(self._journal_sync, entry)
        finally:
            self._report_replaced()

    def _report_replaced(self) -> None:
        """Tell the hub (on the event loop, never from the store's thread) of new placeholders."""
        count = self.journal_replaced
        if count == self._replaced_reported:
            return
        self._replaced_reported = count
        if self.on_journal_replaced is not None:
            try:
                self.on_journal_replaced(count, self._replaced_reason)
            except Exception:  # the journal goes on whatever the listener does
                log.exception("on_journal_replaced failed")

    def _journal_sync(self, entry: JournalEntry) -> JournalEntry:
        ts = entry.ts or now_ms()
        try:
            data = json.dumps(dict(entry.data), default=str, ensure_ascii=False)
            return self._insert_journal(entry, ts, data)
        except _ROW_ERRORS as error:
            # This entry, not the database: write what can be written of it, and say so.
            reason = f"{type(error).__name__}: {safe_text(str(error))[:200]}"
            placeholder = _placeholder(entry, ts, reason)
            written = self._insert_journal(
                placeholder,
                placeholder.ts,
                json.dumps(placeholder.data, default=str, ensure_ascii=False),
            )
            self.journal_replaced += 1
            self._replaced_reason = reason
            log.error(
                "journal entry %s (%s) could not be written as sent (%s): placeholder %s written",
                safe_text(str(entry.kind))[:40],
                safe_text(str(entry.message))[:80],
                reason,
                written.id,
            )
            return written

    def _insert_journal(self, entry: JournalEntry, ts: int, data: str) -> JournalEntry:
        cursor = self.db.conn.execute(
            "INSERT INTO journal (ts, kind, message, user, device, point, alarm, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ts,
                entry.kind,
                entry.message,
                entry.user,
                entry.device,
                entry.point,
                entry.alarm,
                data,
            ),
        )
        return JournalEntry(
            kind=entry.kind,
            message=entry.message,
            user=entry.user,
            device=entry.device,
            point=entry.point,
            alarm=entry.alarm,
            data=entry.data,
            ts=ts,
            id=cursor.lastrowid,
        )

    async def query_journal(
        self,
        *,
        kinds: Sequence[str] | None = None,
        device: str | None = None,
        user: str | None = None,
        alarm: str | None = None,
        since: int | None = None,
        until: int | None = None,
        search: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        scope: JournalScope | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, newest first; ``search`` matches message and data text."""
        clauses: list[str] = []
        args: list[Any] = []
        if scope is not None:
            clauses.append(
                "(device IN (SELECT value FROM json_each(?))"
                " OR (device IS NULL AND json_extract(data, '$.zone') IN"
                " (SELECT value FROM json_each(?))) OR user = ?)"
            )
            args += [json.dumps(sorted(scope.devices)), json.dumps(sorted(scope.zones)), scope.user]
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        for column, value in (("device", device), ("user", user), ("alarm", alarm)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("ts >= ?")
            args.append(since)
        if until is not None:
            clauses.append("ts < ?")
            args.append(until)
        if before_id is not None:
            clauses.append("id < ?")
            args.append(before_id)
        if search:
            clauses.append(
                "(message LIKE ? ESCAPE '\\' OR data LIKE ? ESCAPE '\\'"
                " OR device LIKE ? ESCAPE '\\' OR point LIKE ? ESCAPE '\\')"
            )
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args.extend([like] * 4)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT id, ts, kind, message, user, device, point, alarm, data FROM journal "
            f"{where} ORDER BY id DESC LIMIT ?"
        )
        args.append(max(1, min(limit, 10_000)))

        def query() -> list[JournalEntry]:
            return [
                JournalEntry(
                    id=row[0],
                    ts=row[1],
                    kind=row[2],
                    message=row[3],
                    user=row[4],
                    device=row[5],
                    point=row[6],
                    alarm=row[7],
                    data=json.loads(row[8]),
                )
                for row in self.db.execute(sql, args)
            ]

        return await self._run(query)

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
        conn.execute("BEGIN IMMEDIATE")
        try:
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
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may already have ended the transaction.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return written

    async def load_alarm_states(self) -> dict[str, dict[str, Any]]:
        """Every persisted alarm state, by key."""

        def load() -> dict[str, dict[str, Any]]:
            return {
                key: json.loads(state)
                for key, state in self.db.execute("SELECT key, state FROM alarm_state")
            }

        return await self._run(load)

    # -- history -------------------------------------------------------------

    def record(self, value: PointValue, spec: PointSpec) -> None:
        """Queue a change for history (a listener on the point database).

        Never blocks and never does I/O: the change waits in a bounded buffer
        for :meth:`flush_history`. A full buffer forgets its oldest change.
        """
        history_class = spec.history
        if history_class == "none":
            return
        pending = self._pending
        if len(pending) == pending.maxlen:
            # Bounded: a stalled disk loses the oldest history, never the hub's memory.
            # (The deque drops the oldest change's five fields as this one goes in.)
            self.history_dropped += 1
        quality = value.quality
        pending.extend(
            (
                value.id,
                value.source_ts,
                value.value,
                "" if quality.status is QualityStatus.GOOD else str(quality),
                history_class,
            )
        )

    @property
    def history_pending(self) -> int:
        """Changes queued for history and not yet written."""
        return len(self._pending) // _ROW

    async def flush_history(self) -> int:
        """Write every queued change in one transaction; return the rows written.

        If the write fails (disk full, I/O error) the changes go back to the
        front of the buffer for the next flush, and the error is raised.
        """
        if not self._pending or self._db is None:
            return 0
        rows = self._pending
        self._pending = deque(maxlen=self.max_pending * _ROW)
        try:
            written = await self._run(self._write_history, rows)
        except Exception:
            self._requeue(rows)
            raise
        self.history_written += written
        return written

    def _requeue(self, rows: deque[Any]) -> None:
        # Older rows first, then whatever arrived meanwhile; the bound still holds.
        merged: deque[Any] = deque(rows, maxlen=self.max_pending * _ROW)
        merged.extend(self._pending)
        self.history_dropped += (len(rows) + len(self._pending) - len(merged)) // _ROW
        self._pending = merged

    def _write_history(self, flat: deque[Any]) -> int:
        conn = self.db.conn
        conn.execute("BEGIN")
        try:
            keys, registered = self._history_keys(conn, flat)
            # A generator, not a list: each parameter tuple is freed once bound.
            conn.executemany(
                _INSERT_HISTORY,
                (
                    (keys[point_id], ts, value, quality)
                    for point_id, ts, value, quality, _ in _rows(flat)
                ),
            )
            conn.execute("COMMIT")
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError):
            # A value SQLite cannot store (an int past 64 bits...): keep the rest.
            conn.execute("ROLLBACK")
            return self._write_history_row_by_row(flat)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._remember_keys(registered)
        return len(flat) // _ROW

    def _write_history_row_by_row(self, flat: deque[Any]) -> int:
        conn = self.db.conn
        written = 0
        conn.execute("BEGIN")
        try:
            keys, registered = self._history_keys(conn, flat)
            for point_id, ts, value, quality, _ in _rows(flat):
                try:
                    conn.execute(_INSERT_HISTORY, (keys[point_id], ts, value, quality))
                except (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError):
                    self.history_rejected += 1
                    log.warning("history: point %s: cannot store value %r", point_id, value)
                else:
                    written += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._remember_keys(registered)
        return written

    def _history_keys(
        self, conn: sqlite3.Connection, flat: deque[Any]
    ) -> tuple[dict[str, int], dict[str, tuple[int, str]]]:
        """The integer key of every point in the buffer ``flat``, registering new points.

        Returns the keys to write with and the registrations made. Those are
        only remembered once the transaction commits (:meth:`_remember_keys`):
        a rolled-back key could otherwise later be given to another point.
        """
        classes = self._point_classes
        registered: dict[str, tuple[int, str]] = {}
        for point_id, _ts, _value, _quality, klass in _rows(flat):
            known = registered.get(point_id)
            if (classes.get(point_id) if known is None else known[1]) == klass:
                continue
            cursor = conn.execute(
                "INSERT INTO history_point (id, class) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET class = excluded.class RETURNING key",
                (point_id, klass),
            )
            registered[point_id] = (cursor.fetchone()[0], klass)
        if not registered:
            return self._point_keys, registered
        keys = dict(self._point_keys)
        keys.update((point_id, key) for point_id, (key, _) in registered.items())
        return keys, registered

    def _remember_keys(self, registered: dict[str, tuple[int, str]]) -> None:
        for point_id, (key, klass) in registered.items():
            self._point_keys[point_id] = key
            self._point_classes[point_id] = klass

    async def history(
        self,
        point_id: str,
        start: int,
        end: int,
        *,
        bucket_ms: int | None = None,
        limit: int = 10_000,
    ) -> list[TrendBucket] | list[PointValue]:
        """Raw values in ``[start, end)``, or min/max/avg/last per ``bucket_ms`` bucket.

        Buckets start at ``start``; a bucket with no good value is left out.
        Raw history returns every row; aggregates use good-quality rows only
        (uncertain and bad values are not trusted to draw a trend).
        """
        if end <= start:
            raise ValueError("history range must end after it starts")
        if bucket_ms is not None and bucket_ms <= 0:
            raise ValueError("bucket must be a positive number of milliseconds")
        key = self._point_keys.get(point_id)
        if key is None:
            return []
        if bucket_ms is None:

            def raw() -> list[PointValue]:
                rows = self.db.execute(
                    "SELECT ts, value, quality FROM history WHERE point = ? AND ts >= ? AND ts < ?"
                    " ORDER BY ts LIMIT ?",
                    (key, start, end, limit),
                )
                return [
                    PointValue(
                        point_id,
                        value,
                        Quality.parse(quality) if quality else Quality.GOOD,
                        ts,
                        ts,
                    )
                    for ts, value, quality in rows
                ]

            return await self._run(raw)

        def buckets() -> list[TrendBucket]:
            rows = self.db.execute(
                _TREND,
                {"start": start, "bucket": bucket_ms, "key": key, "end": end, "limit": limit},
            )
            return [
                TrendBucket(
                    start=start + bucket * bucket_ms,
                    count=count,
                    minimum=low,
                    maximum=high,
                    average=average,
                    last=last,
                )
                for bucket, count, low, high, average, last in rows
            ]

        return await self._run(buckets)

    async def prune(self, now: int | None = None) -> int:
        """Delete history past each class's retention; return the rows deleted.

        Works through the points a few hundred at a time, one short
        transaction each, so journal writes are never held up for long.
        """
        now = now if now is not None else now_ms()

        def cutoffs() -> list[tuple[int, int]]:
            result = []
            for point_id, klass in self._point_classes.items():
                days = self.retention_days.get(klass, self.retention_days["default"])
                result.append((self._point_keys[point_id], now - int(days * DAY_MS)))
            return result

        todo = await self._run(cutoffs)
        deleted = 0
        for i in range(0, len(todo), _PRUNE_CHUNK):
            deleted += await self._run(self._prune_chunk, todo[i : i + _PRUNE_CHUNK])
        return deleted

    def _prune_chunk(self, chunk: list[tuple[int, int]]) -> int:
        conn = self.db.conn
        deleted = 0
        conn.execute("BEGIN")
        try:
            for key, cutoff in chunk:
                cursor = conn.execute(
                    "DELETE FROM history WHERE point = ? AND ts < ?", (key, cutoff)
                )
                deleted += cursor.rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return deleted

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


_ROW_ERRORS = (
    ValueError,  # UnicodeEncodeError (a lone surrogate), a circular structure, a huge int
    TypeError,  # data JSON cannot hold
    OverflowError,  # an integer beyond SQLite's 64 bits
    RecursionError,  # data nested too deep
    sqlite3.InterfaceError,  # a value SQLite cannot bind
    sqlite3.ProgrammingError,
    sqlite3.IntegrityError,  # a missing kind
)
"""Errors that belong to one journal entry, not to the database: the entry is replaced.

Anything else (disk full, I/O error, a locked or closed database) is raised:
the caller keeps the entry and tries again, nothing is replaced. If writing
the placeholder fails too, that error is raised.
"""


def _state_json(state: Mapping[str, Any]) -> str:
    """An alarm's state as JSON; what JSON cannot hold made safe rather than failing the batch."""
    try:
        return json.dumps(dict(state), default=str)
    except _ROW_ERRORS:
        return json.dumps(_storable_data(state), default=str)


def _placeholder(entry: JournalEntry, ts: Any, reason: str) -> JournalEntry:
    """What is written instead of ``entry``: its text made storable, and why."""
    fields = []
    if not (isinstance(ts, int) and 0 <= ts <= MAX_INTEGER):
        fields.append("ts")
        ts = now_ms()
    texts: dict[str, str | None] = {}
    for name in ("kind", "message", "user", "device", "point", "alarm"):
        value = getattr(entry, name)
        safe = None if value is None else _storable(value)
        if safe != value or (name == "kind" and not safe):
            fields.append(name)
        texts[name] = safe
    try:
        json.dumps(dict(entry.data), default=str, ensure_ascii=False).encode("utf-8")
        data_ok = True
    except Exception:
        data_ok = False
    if not data_ok:
        fields.append("data")
    kept = _storable_data(entry.data)
    if not isinstance(kept, dict):
        kept = {"original": kept}
    return JournalEntry(
        kind=texts["kind"] or "journal",
        message=texts["message"] or "",
        user=texts["user"],
        device=texts["device"],
        point=texts["point"],
        alarm=texts["alarm"],
        data={
            **kept,
            "replaced": {"reason": reason, "fields": fields or ["unknown"]},
        },
        ts=ts,
    )


def _storable(value: Any) -> str:
    """``value`` as text SQLite always stores: lone surrogates escaped, at most 10,000 characters."""
    text = value if isinstance(value, str) else _short_repr(value)
    return safe_text(text)[:10_000]


def _short_repr(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        return repr(value)[:10_000]
    except Exception:
        return f"<{type(value).__name__}>"


def _storable_data(data: Any, depth: int = 0) -> Any:
    """``data`` with everything JSON and SQLite cannot hold turned into safe text."""
    if depth > 20:
        return "<nested too deep>"
    if data is None or isinstance(data, bool | float):
        return data
    if isinstance(data, int):
        return data if MIN_INTEGER <= data <= MAX_INTEGER else _short_repr(data)
    if isinstance(data, str):
        return _storable(data)
    if isinstance(data, Mapping):
        return {_storable(key): _storable_data(value, depth + 1) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_storable_data(value, depth + 1) for value in data[:1000]]
    return _storable(data)


def _rows(flat: deque[Any]) -> Iterator[HistoryRow]:
    """The changes of a flat history buffer, one :data:`HistoryRow` at a time."""
    fields = iter(flat)
    return zip(fields, fields, fields, fields, fields, strict=True)


# The last change recorded for a (point, millisecond) wins: a driver that
# reports twice in one millisecond keeps its latest word, as the PointDB does.
_INSERT_HISTORY = (
    "INSERT INTO history (point, ts, value, quality) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (point, ts) DO UPDATE SET value = excluded.value, quality = excluded.quality"
)

# One statement for the whole trend: aggregates per bucket, then the value at
# each bucket's last good timestamp through the (point, ts) primary key.
_TREND = """
WITH buckets AS (
    SELECT (ts - :start) / :bucket AS bucket, count(*) AS n, min(value) AS low,
           max(value) AS high, avg(value) AS average, max(ts) AS last_ts
    FROM history
    WHERE point = :key AND ts >= :start AND ts < :end AND quality = ''
    GROUP BY bucket
    ORDER BY bucket
    LIMIT :limit
)
SELECT buckets.bucket, buckets.n, buckets.low, buckets.high, buckets.average, history.value
FROM buckets JOIN history ON history.point = :key AND history.ts = buckets.last_ts
ORDER BY buckets.bucket
"""
