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
- every journal row carries the hash of the row before it, written in the
  row's own transaction (``chain.py``): ``cityvisor journal verify`` names
  the first row edited, deleted or moved;
- **history** is buffered in memory (bounded) and written in batches at
  least every ``flush_interval`` seconds; it is the only thing a crash can
  lose, and only its last second.

SQLite calls are blocking: they run in one worker thread (``anyio.to_thread``
with a capacity limiter of one), never on the event loop.

Where each part lives: ``interface.py`` (:class:`Store` and the records it
takes and returns) and the SQLite implementation, ``sqlite.py``
(:class:`SqliteStore`: the file, its worker thread, alarm state), assembled
with ``journal.py`` and ``history.py``, which share the state ``parts.py``
declares.

The PostgreSQL backend, ``postgres.py`` (:class:`PostgresStore`) with
``postgres_history.py``, needs the optional ``psycopg`` driver: import it
from :mod:`cityvisor.core.store.postgres` (``[store] backend = "postgres"``
does, through :meth:`StoreSection.create_store`); ``local.py`` keeps its
local tables. Both journals write the placeholders of ``placeholders.py``
and the hash chain of ``chain.py``.
"""

from __future__ import annotations

from .chain import ChainState, verify_store
from .interface import (
    DAY_MS,
    AlarmStateWrite,
    HistoryRow,
    JournalEntry,
    JournalScope,
    Store,
    StoreUnavailableError,
    TrendBucket,
)
from .sqlite import SqliteStore

__all__ = [
    "DAY_MS",
    "AlarmStateWrite",
    "ChainState",
    "HistoryRow",
    "JournalEntry",
    "JournalScope",
    "SqliteStore",
    "Store",
    "StoreUnavailableError",
    "TrendBucket",
    "verify_store",
]
