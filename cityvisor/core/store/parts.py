"""What the SqliteStore's parts share: its state, and the methods they call on each other.

:class:`~cityvisor.core.store.sqlite.SqliteStore` is assembled from the
plumbing and alarm state (``sqlite.py``), the journal (``journal.py``) and
point history (``history.py``). They all run on one object, so each may use
the store's state and the methods another part defines. This base class
declares that shared surface for the type checker only: at run time it is
empty, and every method is the one its part defines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import contextlib
    import threading
    from collections import deque
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, TypeVar

    import anyio
    import sqlite_utils

    from .interface import JournalEntry

    T = TypeVar("T")


class _SqliteStoreParts:
    """The state and the cross-part methods of the SqliteStore, declared for type checking."""

    if TYPE_CHECKING:
        path: Path
        flush_interval: float
        retention_days: dict[str, float]
        max_pending: int
        prune_interval: float
        history_dropped: int
        history_written: int
        history_rejected: int
        journal_replaced: int
        on_journal_replaced: Callable[[int, str], None] | None
        _replaced_reported: int
        _replaced_reason: str
        _chain_head: tuple[int, str] | None
        _pending: deque[Any]
        _point_keys: dict[str, int]
        _point_classes: dict[str, str]
        _db: sqlite_utils.Database | None
        _lock: threading.Lock
        _limiter: anyio.CapacityLimiter | None

        # sqlite.py
        async def _run(self, function: Callable[..., T], *args: Any) -> T: ...
        @property
        def db(self) -> sqlite_utils.Database: ...
        def _transaction(self) -> contextlib.AbstractContextManager[None]: ...

        # journal.py
        def _report_replaced(self) -> None: ...
        def _journal_sync(self, entry: JournalEntry) -> JournalEntry: ...

        # history.py
        async def flush_history(self) -> int: ...
        async def prune(self, now: int | None = None) -> int: ...
