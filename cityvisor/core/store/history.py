"""SQLite point history: changes buffered (bounded), written in batches, pruned by retention class, queried as trends."""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..points import PointSpec, PointValue, Quality, QualityStatus, now_ms
from .interface import DAY_MS, HistoryRow, TrendBucket
from .parts import _SqliteStoreParts

_ROW = 5
"""Fields per change in the flat history buffer (the fields of a :data:`HistoryRow`)."""

log = logging.getLogger(__name__)


_PRUNE_CHUNK = 500
"""Points pruned per transaction: short transactions let journal writes interleave."""


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


class HistoryQueue:
    """The bounded queue of changes waiting for history, the same on every backend.

    ``record`` is a listener on the point database: it runs on every change,
    so it only appends five fields to a bounded deque.
    """

    _pending: deque[Any]
    history_dropped: int

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


class _SqliteHistory(_SqliteStoreParts, HistoryQueue):
    """The store's point history: record, flush in batches, query trends, prune."""

    # -- history -------------------------------------------------------------

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
