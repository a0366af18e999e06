"""The Store interface, and the records it takes and returns: journal entries, scopes, trend buckets."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import sqlite_utils

from ..points import PointSpec, PointValue
from .chain import ChainRow

T = TypeVar("T")


HistoryRow = tuple[str, int, Any, str, str]
"""A queued history change: point id, source time, value, quality text, history class."""


DAY_MS = 86_400_000


class StoreUnavailableError(Exception):
    """The database cannot be reached or opened; the message names it without its secrets."""


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
    """What the hub needs from persistence. See :class:`SqliteStore` and :class:`PostgresStore`."""

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
    async def journal_chain_rows(self, after_id: int, limit: int = 5000) -> list[ChainRow]:
        """Up to ``limit`` journal rows after ``after_id``, in ``id`` order, with their hashes.

        What :func:`~cityvisor.core.store.chain.verify_store` walks; a backend
        stores ``prev_hash`` and ``hash`` in the row's own transaction.
        """

    @abc.abstractmethod
    async def journal_ids_between(self, since: int, until: int) -> tuple[int, int] | None:
        """The first and last id of the rows written at or after ``since`` and before ``until``.

        None when there are none; what ``cityvisor journal export`` bundles.
        """

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
        """Run ``function(db)`` in the store's thread: for plugins' own tables.

        ``db`` is a SQLite database whatever the backend: the PostgreSQL store
        keeps these tables in a local file (see decision 0018).
        """

    @abc.abstractmethod
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush history and apply retention periodically, until cancelled."""
