"""An edge's disk buffer: the changes made while the broker was away, kept in order.

One SQLite file (``[plugins.link] buffer``), written in a worker thread.
It keeps at most ``limit`` changes: beyond that the oldest are dropped and
counted (``dropped``), so a week-long outage fills a bounded file, never the
disk. When the broker is back the edge reads the changes back oldest first,
publishes them with their original timestamps, and deletes each part once
it is written to the connection: a crash during the replay replays again.
The same file keeps the node's last ``bdSeq``, so that a restarted edge
goes on counting instead of starting again from 0.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio

from cityvisor.core.points import PointValue, Quality

__all__ = ["ChangeBuffer"]


class ChangeBuffer:
    """Point changes on disk, oldest first, at most ``limit`` of them."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.dropped = 0
        """Changes dropped because the buffer was full (since the hub started)."""
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._count = 0

    async def open(self) -> None:
        """Open (or create) the file."""
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS changes (row INTEGER PRIMARY KEY AUTOINCREMENT, "
            "point TEXT NOT NULL, value TEXT NOT NULL, quality TEXT NOT NULL, "
            "source_ts INTEGER NOT NULL, received_ts INTEGER NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER)")
        self._count = db.execute("SELECT count(*) FROM changes").fetchone()[0]
        self._db = db

    async def close(self) -> None:
        """Close the file (what it holds stays for the next start)."""
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close)

    def __len__(self) -> int:
        return self._count

    async def append(self, changes: list[PointValue]) -> None:
        """Keep ``changes`` (dropping the oldest beyond the limit)."""
        if changes:
            await anyio.to_thread.run_sync(self._append, changes)

    def _append(self, changes: list[PointValue]) -> None:
        rows = [
            (c.id, json.dumps(_jsonable(c.value)), str(c.quality), c.source_ts, c.received_ts)
            for c in changes
        ]
        with self._lock:
            db = self._connection()
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO changes (point, value, quality, source_ts, received_ts) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._count += len(rows)
            excess = self._count - self.limit
            if excess > 0:
                db.execute(
                    "DELETE FROM changes WHERE row IN "
                    "(SELECT row FROM changes ORDER BY row LIMIT ?)",
                    (excess,),
                )
                self._count -= excess
                self.dropped += excess
            db.execute("COMMIT")

    async def oldest(self, count: int = 1000) -> tuple[int, list[PointValue]]:
        """Up to ``count`` of the oldest changes, and the row to :meth:`delete_through`."""
        return await anyio.to_thread.run_sync(self._oldest, count)

    def _oldest(self, count: int) -> tuple[int, list[PointValue]]:
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT row, point, value, quality, source_ts, received_ts FROM changes "
                    "ORDER BY row LIMIT ?",
                    (count,),
                )
                .fetchall()
            )
        last = rows[-1][0] if rows else 0
        return last, [
            PointValue(point, json.loads(value), Quality.parse(quality), source, received)
            for _, point, value, quality, source, received in rows
        ]

    async def delete_through(self, row: int) -> None:
        """Forget the changes up to ``row`` (the broker has them)."""
        await anyio.to_thread.run_sync(self._delete_through, row)

    def _delete_through(self, row: int) -> None:
        with self._lock:
            cursor = self._connection().execute("DELETE FROM changes WHERE row <= ?", (row,))
            self._count = max(0, self._count - cursor.rowcount)

    async def next_bd_seq(self) -> int:
        """The birth/death sequence number of the next connection (0-255, kept across restarts)."""
        return await anyio.to_thread.run_sync(self._next_bd_seq)

    def _next_bd_seq(self) -> int:
        with self._lock:
            db = self._connection()
            row = db.execute("SELECT value FROM state WHERE key = 'bd_seq'").fetchone()
            value = 0 if row is None else (row[0] + 1) % 256
            db.execute(
                "INSERT INTO state (key, value) VALUES ('bd_seq', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (value,),
            )
            return int(value)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the link buffer {self.path} is not open")
        return self._db


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
