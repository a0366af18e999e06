"""PostgreSQL point history: a table partitioned by range of source time, written with COPY, queried as trends.

``history`` is declared ``PARTITION BY RANGE (ts)``; one partition per UTC
day (``history_d20260921``) or month (``history_m202609``) is created the
first time a change falls in it, in its own short transaction. A batch is
copied (binary ``COPY``) straight into ``history`` inside a savepoint; only
when a row is already there (a change replayed, two writes in one
millisecond across flushes) is it copied into a staging table and merged
with ``INSERT ... ON CONFLICT DO UPDATE``, so the last change recorded for a
(point, millisecond) wins, as on SQLite.

Values: numbers (bool, int, float) go to ``number`` (double precision, so
they come back as floats), text to ``text``; an integer beyond 64 bits or a
value of another type is rejected and counted, as on SQLite. Retention drops
whole partitions older than the longest retention, then deletes per point.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import itertools
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from ..points import PointValue, Quality, now_ms
from ..text import MAX_INTEGER, MIN_INTEGER
from .history import HistoryQueue
from .interface import DAY_MS, HistoryRow, TrendBucket

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    import anyio

    from .interface import T

log = logging.getLogger(__name__)

_ROW = 5
"""Fields per change in the flat history buffer (the fields of a :data:`HistoryRow`)."""

_PRUNE_CHUNK = 500
"""Points pruned per transaction: short transactions let journal writes interleave."""

MAX_TS = 253_402_300_800_000
"""Source times at or past the year 10000 are rejected (no partition can name them)."""

_COPY_TYPES = ["int4", "int8", "float8", "text", "text"]

_BOUND = re.compile(r"FROM \('?(?P<start>-?\d+)'?\) TO \('?(?P<end>-?\d+)'?\)")

_TREND = """
WITH buckets AS (
    SELECT (ts - %(start)s) / %(bucket)s AS bucket, count(*) AS n, min(number) AS low,
           max(number) AS high, avg(number) AS average, max(ts) AS last_ts
    FROM history
    WHERE point = %(key)s AND ts >= %(start)s AND ts < %(end)s AND quality = ''
    GROUP BY bucket
    ORDER BY bucket
    LIMIT %(limit)s
)
SELECT buckets.bucket, buckets.n, buckets.low, buckets.high, buckets.average,
       history.number, history.text
FROM buckets JOIN history ON history.point = %(key)s AND history.ts = buckets.last_ts
    AND history.ts >= %(start)s AND history.ts < %(end)s
ORDER BY buckets.bucket
"""
"""One statement for the whole trend, bucketed as on SQLite; the range repeated on the
join so the planner reads only the partitions it covers."""


def _rows(flat: deque[Any]) -> Iterator[HistoryRow]:
    fields = iter(flat)
    return zip(fields, fields, fields, fields, fields, strict=True)


def _column_values(value: Any) -> tuple[float | None, str | None] | None:
    """The (number, text) columns of a value, or None when PostgreSQL is not to store it."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, int):
        return (float(value), None) if MIN_INTEGER <= value <= MAX_INTEGER else None
    if isinstance(value, float):
        return value, None
    if isinstance(value, str):
        return (None, value) if "\x00" not in value and _encodable(value) else None
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _PostgresHistory(HistoryQueue):
    """The PostgreSQL store's point history: record, COPY in batches, query trends, prune."""

    if TYPE_CHECKING:
        partition: str
        retention_days: dict[str, float]
        max_pending: int
        history_dropped: int
        history_written: int
        history_rejected: int
        _pending: deque[Any]
        _point_keys: dict[str, int]
        _point_classes: dict[str, str]
        _partitions: dict[int, tuple[int, str]]
        _conn: psycopg.Connection[Any] | None
        _lock: threading.Lock
        _limiter: anyio.CapacityLimiter | None

        async def _run(self, function: Callable[..., T], *args: Any) -> T: ...
        @property
        def conn(self) -> psycopg.Connection[Any]: ...

    # -- partitions ---------------------------------------------------------------

    def _partition_bounds(self, ts: int) -> tuple[int, int, str]:
        """The partition the configured span gives ``ts``: its start, its end (excluded), its name."""
        if self.partition == "day":
            start = ts - ts % DAY_MS
            day = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
            return start, start + DAY_MS, f"history_d{day:%Y%m%d}"
        moment = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = (first + dt.timedelta(days=32)).replace(day=1)
        return (
            int(first.timestamp() * 1000),
            int(after.timestamp() * 1000),
            f"history_m{first:%Y%m}",
        )

    def _existing_partitions(self, conn: psycopg.Connection[Any]) -> dict[int, tuple[int, str]]:
        """Every range partition of ``history``, by start: (end, name). Read at open."""
        rows = conn.execute(
            "SELECT child.relname, pg_get_expr(child.relpartbound, child.oid) FROM pg_inherits"
            " JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
            " WHERE pg_inherits.inhparent = 'history'::regclass"
        ).fetchall()
        found = {}
        for name, bound in rows:
            # FOR VALUES FROM ('1790000000000') TO ('1790086400000'); a DEFAULT one is left alone.
            match = _BOUND.search(bound)
            if match is not None:
                found[int(match["start"])] = (int(match["end"]), name)
        return found

    def _covering(self, ts: int) -> bool:
        starts = sorted(self._partitions)
        index = bisect.bisect_right(starts, ts) - 1
        return index >= 0 and ts < self._partitions[starts[index]][0]

    def _ensure_partitions(self, samples: Iterable[int]) -> None:
        """Create a partition for each sample time that no partition holds yet.

        The configured span (day or month), shortened where it would overlap
        a partition already there: a deployment that changes ``partition``
        keeps its old partitions and writes on.
        """
        conn = self.conn
        for ts in sorted(samples):
            if self._covering(ts):
                continue
            start, end, name = self._partition_bounds(ts)
            before = [e for s, (e, _) in self._partitions.items() if s <= ts]
            after = [s for s in self._partitions if s > ts]
            clipped = (max([start, *before]), min([end, *after]))
            if clipped != (start, end):
                start, end = clipped
                day = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
                name = f"history_{self.partition[0]}{day:%Y%m%d}_{(end - start) // DAY_MS}d"
            # Another hub may create it between our check and ours: then it exists.
            with contextlib.suppress(psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF history"
                    f" FOR VALUES FROM ({start}) TO ({end})"
                )
            self._partitions[start] = (end, name)
            log.info("history: partition %s created", name)

    # -- writing -------------------------------------------------------------------

    async def flush_history(self) -> int:
        """Write every queued change in one transaction; return the rows written.

        If the write fails (the server gone, a disk full) the changes go back
        to the front of the buffer for the next flush, and the error is raised.
        """
        if not self._pending or self._conn is None:
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
        merged: deque[Any] = deque(rows, maxlen=self.max_pending * _ROW)
        merged.extend(self._pending)
        self.history_dropped += (len(rows) + len(self._pending) - len(merged)) // _ROW
        self._pending = merged

    def _scan(self, flat: deque[Any]) -> tuple[list[int], dict[str, str]]:
        """A time in each day the buffer covers, and the points to register (new or of a new class).

        Two passes over columns of the buffer (``islice``), no row built: the
        rows themselves are built one at a time as the ``COPY`` takes them.
        """
        days = {
            ts // DAY_MS
            for ts in itertools.islice(flat, 1, None, _ROW)
            if type(ts) is int and 0 <= ts < MAX_TS
        }
        partitions = [
            day * DAY_MS for day in days
        ]  # a time in each day: partitions are days or more
        class_of = self._point_classes.get
        classes = {
            point_id: klass
            for point_id, klass in zip(
                itertools.islice(flat, 0, None, _ROW),
                itertools.islice(flat, 4, None, _ROW),
                strict=True,
            )
            if class_of(point_id) != klass
        }
        return partitions, classes

    @staticmethod
    def _copy_rows(
        flat: deque[Any], keys: dict[str, int], rejected: list[tuple[str, Any, Any]]
    ) -> Iterator[tuple[Any, ...]]:
        """The buffer's changes as rows to copy, one at a time; those refused go to ``rejected``.

        One tuple per row, freed as soon as it is copied (a list of them would
        keep a batch of objects alive for the collector to walk).
        """
        number: float | None
        text: str | None
        for point_id, ts, value, quality, _ in _rows(flat):
            if type(value) is float:
                number, text = value, None
            else:
                columns = _column_values(value)
                if columns is None:
                    rejected.append((point_id, value, ts))
                    continue
                number, text = columns
            if type(ts) is not int or not 0 <= ts < MAX_TS:
                rejected.append((point_id, value, ts))
                continue
            yield (keys[point_id], ts, number, text, quality)

    def _write_history(self, flat: deque[Any]) -> int:
        partitions, classes = self._scan(flat)
        self._ensure_partitions(partitions)
        conn = self.conn
        rejected: list[tuple[str, Any, Any]] = []
        with conn.transaction():
            keys, registered = self._history_keys(classes)
            try:
                with conn.transaction():  # a savepoint: a row already there undoes only the COPY
                    written = self._copy(self._copy_rows(flat, keys, rejected), "history")
            except psycopg.errors.UniqueViolation:
                rejected.clear()
                written = self._merge(self._copy_rows(flat, keys, rejected))
        self._remember_keys(registered)
        for point_id, value, ts in rejected:
            self.history_rejected += 1
            log.warning("history: point %s: cannot store value %r at %r", point_id, value, ts)
        return written

    def _copy(self, rows: Iterable[tuple[Any, ...]], table: str) -> int:
        """Binary ``COPY`` of ``rows`` into ``table``; return how many."""
        count = 0
        with (
            self.conn.cursor() as cursor,
            cursor.copy(
                f"COPY {table} (point, ts, number, text, quality) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)
                count += 1
        return count

    def _merge(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Copy into a staging table and upsert: the later change for a (point, ms) wins.

        Returns the rows written: one per (point, ms).
        """
        latest = {(row[0], row[1]): row for row in rows}  # the last one recorded stays
        conn = self.conn
        conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS history_staging"
            " (point integer, ts bigint, number double precision, text text, quality text)"
            " ON COMMIT DELETE ROWS"
        )
        self._copy(latest.values(), "history_staging")
        conn.execute(
            "INSERT INTO history (point, ts, number, text, quality)"
            " SELECT point, ts, number, text, quality FROM history_staging"
            " ON CONFLICT (point, ts) DO UPDATE SET number = excluded.number,"
            " text = excluded.text, quality = excluded.quality"
        )
        return len(latest)

    def _history_keys(
        self, classes: dict[str, str]
    ) -> tuple[dict[str, int], dict[str, tuple[int, str]]]:
        """Register the points that are new or changed class (remembered after commit)."""
        registered: dict[str, tuple[int, str]] = {}
        for point_id, klass in classes.items():
            row = self.conn.execute(
                "INSERT INTO history_point (id, class) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET class = excluded.class RETURNING key",
                (point_id, klass),
            ).fetchone()
            assert row is not None  # RETURNING gives one row for one inserted or updated row
            registered[point_id] = (int(row[0]), klass)
        if not registered:
            return self._point_keys, registered
        keys = dict(self._point_keys)
        keys.update((point_id, key) for point_id, (key, _) in registered.items())
        return keys, registered

    def _remember_keys(self, registered: dict[str, tuple[int, str]]) -> None:
        for point_id, (key, klass) in registered.items():
            self._point_keys[point_id] = key
            self._point_classes[point_id] = klass

    # -- reading ---------------------------------------------------------------------

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

        Buckets start at ``start``; a bucket with no good value is left out;
        aggregates use good-quality rows only (the SQLite store's rules).
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
                rows = self.conn.execute(
                    "SELECT ts, number, text, quality FROM history"
                    " WHERE point = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
                    (key, start, end, limit),
                )
                return [
                    PointValue(
                        point_id,
                        number if text is None else text,
                        Quality.parse(quality) if quality else Quality.GOOD,
                        ts,
                        ts,
                    )
                    for ts, number, text, quality in rows
                ]

            return await self._run(raw)

        def buckets() -> list[TrendBucket]:
            rows = self.conn.execute(
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
                    last=number if text is None else text,
                )
                for bucket, count, low, high, average, number, text in rows
            ]

        return await self._run(buckets)

    # -- retention -----------------------------------------------------------------------

    async def prune(self, now: int | None = None) -> int:
        """Delete history past each class's retention; return the rows deleted.

        Partitions that end before the longest retention are dropped whole;
        then the points are worked through a few hundred at a time, one
        short transaction each.
        """
        now = now if now is not None else now_ms()
        deleted = await self._run(
            self._drop_partitions, now - int(max(self.retention_days.values()) * DAY_MS)
        )

        def cutoffs() -> list[tuple[int, int]]:
            result = []
            for point_id, klass in self._point_classes.items():
                days = self.retention_days.get(klass, self.retention_days["default"])
                result.append((self._point_keys[point_id], now - int(days * DAY_MS)))
            return result

        todo = await self._run(cutoffs)
        for i in range(0, len(todo), _PRUNE_CHUNK):
            deleted += await self._run(self._prune_chunk, todo[i : i + _PRUNE_CHUNK])
        return deleted

    def _drop_partitions(self, cutoff: int) -> int:
        """Drop every partition that ends at or before ``cutoff``; return the rows it held."""
        deleted = 0
        for start, (end, name) in sorted(self._partitions.items()):
            if end > cutoff:
                continue
            with self.conn.transaction():
                row = self.conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
                count = 0
                if row is not None and row[0] is not None:  # another hub may have dropped it
                    (count,) = self.conn.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)
                    self.conn.execute(f"DROP TABLE {name}")
            del self._partitions[start]
            deleted += count
            log.info("history: partition %s dropped (%d rows past retention)", name, count)
        return deleted

    def _prune_chunk(self, chunk: list[tuple[int, int]]) -> int:
        cursor = self.conn.execute(
            "DELETE FROM history USING unnest(%s::integer[], %s::bigint[]) AS cutoff(point, ts)"
            " WHERE history.point = cutoff.point AND history.ts < cutoff.ts",
            ([key for key, _ in chunk], [ts for _, ts in chunk]),
        )
        return cursor.rowcount
