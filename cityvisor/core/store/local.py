"""The hub's local tables in a SQLite file, for a store whose journal and history live elsewhere.

:meth:`Store.call` hands a function a sqlite-utils database: the tables of
user accounts and sessions, badge lists, incidents, maintenance windows and
plugins' own tables are written against it. A store that keeps the journal,
alarm state and history in PostgreSQL keeps those tables here, in one local
SQLite file in WAL mode, with its own worker thread (see decision 0018).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import sqlite_utils

from .interface import T


class LocalTables:
    """One SQLite file for the tables :meth:`Store.call` serves, every access in one thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

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
        """Open (or create) the file in WAL mode with full sync."""

        def open_sync() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db = sqlite_utils.Database(connection)
            db.enable_wal()
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            self._db = db

        await self._run(open_sync)

    async def close(self) -> None:
        """Close the file (nothing is buffered here)."""

        def close_sync() -> None:
            if self._db is not None:
                self._db.conn.close()
                self._db = None

        with anyio.CancelScope(shield=True):
            await self._run(close_sync)

    async def call(self, function: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``function(db)`` in the file's thread, serialised with every other access."""
        return await self._run(lambda: function(self.db))
