"""The PostgreSQL store: journal, alarm state and history in PostgreSQL, every call in one worker thread.

The same guarantees as the SQLite store (see the package's docstring): a
journal entry is committed (``synchronous_commit``: on the server's disk)
before :meth:`PostgresStore.journal` returns; an entry that cannot be written
as sent is written as a placeholder saying why; every row's chain hash is
written in the row's own transaction, the rows of all writers serialised by
a transaction-scoped advisory lock (two hubs, or a hub and a CLI, share one
chain); history is buffered (bounded) and written in batches with ``COPY``
into a table partitioned by range of source time (``postgres_history.py``).

psycopg 3 is blocking here, on purpose: its calls run in one worker thread
(``anyio.to_thread`` with a capacity limiter of one), so the store runs on
both anyio backends, as the core must (decision 0018). The tables that
:meth:`PostgresStore.call` serves (user accounts, sessions, plugins' tables)
stay in a local SQLite file (:class:`~cityvisor.core.store.local.LocalTables`).

The connection string is never logged and never part of an error: errors
name the server by host, port, database and user only (:func:`describe_dsn`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import psycopg
import sqlite_utils
from psycopg import conninfo

from ..points import now_ms
from ..text import MAX_INTEGER, safe_text
from .chain import GENESIS, ChainRow, hash_columns
from .interface import (
    AlarmStateWrite,
    JournalEntry,
    JournalScope,
    Store,
    StoreUnavailableError,
    T,
)
from .local import LocalTables
from .placeholders import placeholder, storable_data
from .postgres_history import _ROW, _PostgresHistory

log = logging.getLogger(__name__)


CHAIN_LOCK = 0x63_69_74_79_6A_6E_6C  # "cityjnl": one chain writer at a time, per database
"""The advisory lock every journal write holds until its transaction ends."""

SCHEMA_LOCK = 0x63_69_74_79_73_63_68  # "citysch": one schema creator at a time
"""The advisory lock held while the tables are created (two hubs starting together)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id bigint PRIMARY KEY,
    ts bigint NOT NULL,
    kind text NOT NULL,
    message text NOT NULL DEFAULT '',
    "user" text, device text, point text, alarm text,
    data text NOT NULL DEFAULT '{}',
    prev_hash text, hash text
);
CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts);
CREATE INDEX IF NOT EXISTS journal_kind_ts ON journal (kind, ts);
CREATE INDEX IF NOT EXISTS journal_device_ts ON journal (device, ts);
CREATE INDEX IF NOT EXISTS journal_alarm ON journal (alarm);
CREATE TABLE IF NOT EXISTS alarm_state (
    key text PRIMARY KEY,
    state text NOT NULL,
    updated bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS history_point (
    key serial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    class text NOT NULL DEFAULT 'default'
);
CREATE TABLE IF NOT EXISTS history (
    point integer NOT NULL,
    ts bigint NOT NULL,
    number double precision,
    text text,
    quality text NOT NULL DEFAULT '',
    PRIMARY KEY (point, ts)
) PARTITION BY RANGE (ts);
"""


_TEXT_COLUMNS = ("kind", "message", "user", "device", "point", "alarm")


def describe_dsn(dsn: str) -> str:
    """The server a connection string names, for messages: host, port, database, user; never the password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL (a connection string that does not parse)"
    shown = [
        f"{name}={parts[name]}" for name in ("host", "port", "dbname", "user") if parts.get(name)
    ]
    return "PostgreSQL " + (" ".join(shown) or "(libpq defaults)")


def _check_row(stored: tuple[Any, ...]) -> None:
    """Raise what would make PostgreSQL refuse this journal row, before it aborts the transaction.

    PostgreSQL ends a transaction at its first error, so an entry that cannot
    be written is found here, in Python, and replaced (see :func:`~cityvisor.core.store.placeholders.placeholder`).
    """
    ts = stored[1]
    if not isinstance(ts, int) or not 0 <= ts <= MAX_INTEGER:
        raise OverflowError(f"journal ts {ts!r} is outside 0..{MAX_INTEGER}")
    for name, value in zip(_TEXT_COLUMNS, stored[2:8], strict=True):
        if value is None:
            if name in ("kind", "message"):
                raise TypeError(f"journal {name} is missing (NOT NULL)")
            continue
        if not isinstance(value, str):
            raise TypeError(f"journal {name} is a {type(value).__name__}, not text")
        value.encode("utf-8")  # a lone surrogate: UnicodeEncodeError
        if "\x00" in value:
            raise ValueError(f"journal {name} holds a NUL character, which PostgreSQL text cannot")
    data = stored[8]
    data.encode("utf-8")
    if "\x00" in data:
        raise ValueError("journal data holds a NUL character, which PostgreSQL text cannot")


_ROW_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)
"""Errors that belong to one journal entry (found before the row is sent): the entry is replaced."""


class PostgresStore(_PostgresHistory, Store):
    """Journal, alarm state and point history in PostgreSQL; plugins' tables in a local file.

    ``dsn`` is a libpq connection string or URL (a password in it, or in
    ``password``, is used and never shown). ``local_path`` is the SQLite file
    for :meth:`call`. ``partition`` is ``"day"`` or ``"month"``: the span of
    one history partition, created on demand. ``retention_days`` and
    ``max_pending`` mean what they mean for :class:`SqliteStore`.
    """

    def __init__(
        self,
        dsn: str,
        local_path: str | Path,
        *,
        password: str | None = None,
        partition: Literal["day", "month"] = "day",
        flush_interval: float = 1.0,
        retention_days: Mapping[str, float] | None = None,
        max_pending: int = 1_000_000,
        prune_interval: float = 3600.0,
    ) -> None:
        if partition not in ("day", "month"):
            raise ValueError(f'partition must be "day" or "month", not {partition!r}')
        self._dsn = dsn
        self._password = password
        self.server = describe_dsn(dsn)
        """The server, as messages name it (no secret)."""
        self.local = LocalTables(local_path)
        self.partition = partition
        self.flush_interval = flush_interval
        self.retention_days = {"default": 365.0, **(retention_days or {})}
        self.max_pending = max_pending
        self.prune_interval = prune_interval
        self.history_dropped = 0
        self.history_written = 0
        self.history_rejected = 0
        """Changes PostgreSQL could not store (a value out of range), skipped and logged."""
        self.journal_replaced = 0
        """Journal entries written as a placeholder because they could not be written as sent."""
        self.on_journal_replaced: Callable[[int, str], None] | None = None
        """Called on the event loop with the count and the last reason when it grows."""
        self._replaced_reported = 0
        self._replaced_reason = ""
        self._pending: deque[Any] = deque(maxlen=max_pending * _ROW)
        self._point_keys: dict[str, int] = {}
        self._point_classes: dict[str, str] = {}
        self._partitions: dict[int, tuple[int, str]] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<PostgresStore {self.server}>"

    # -- plumbing ----------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)

        def locked() -> T:
            with self._lock:
                if self._conn is not None and self._conn.closed:
                    # The server dropped the last connection (a restart, a failover): the call
                    # that found it failed; this one gets a new connection (the closed one is
                    # kept until then, so a server still down is tried again next time).
                    log.warning("%s: connection lost; reconnecting", self.server)
                    self._open_sync()
                return function(*args)

        return await anyio.to_thread.run_sync(locked, limiter=self._limiter)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The psycopg connection (store thread only)."""
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    async def open(self) -> None:
        """Connect, create the tables if needed, then open the local file."""
        await self._run(self._open_sync)
        try:
            await self.local.open()
        except BaseException:
            await self._run(self._close_sync)
            raise

    def _open_sync(self) -> None:
        extra: dict[str, Any] = {"application_name": "cityvisor"}
        if self._password is not None:
            extra["password"] = self._password
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, **extra)
        except psycopg.Error as error:
            # libpq's message names the host and the user, never the password.
            lines = [line.strip() for line in safe_text(str(error)).splitlines() if line.strip()]
            reason = "; ".join(lines) or type(error).__name__
            raise StoreUnavailableError(f"{self.server}: cannot connect: {reason}") from None
        try:
            # "Written before the call returns" means on the server's disk: a server (or
            # role) set to commit asynchronously is overruled; stricter settings are kept.
            (commit,) = conn.execute("SHOW synchronous_commit").fetchone() or ("on",)
            if commit == "off":
                conn.execute("SET synchronous_commit = on")
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            for key, point_id, klass in conn.execute("SELECT key, id, class FROM history_point"):
                self._point_keys[point_id] = key
                self._point_classes[point_id] = klass
            self._partitions = self._existing_partitions(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Flush history, then close the connection and the local file (even if the flush fails)."""
        if self._conn is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.flush_history()
            finally:
                try:
                    await self._run(self._close_sync)
                finally:
                    await self.local.close()

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def call(self, function: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``function(db)`` on the local SQLite file (plugins' tables, accounts, sessions)."""
        return await self.local.call(function)

    # -- journal -------------------------------------------------------------

    async def journal(self, entry: JournalEntry) -> JournalEntry:
        """Write ``entry`` and commit it; return it with its id and timestamp.

        An entry that cannot be written as it is comes back as the
        placeholder written in its place.
        """
        try:
            return await self._run(self._journal_one, entry)
        finally:
            self._report_replaced()

    def _journal_one(self, entry: JournalEntry) -> JournalEntry:
        with self.conn.transaction():
            head = self._lock_chain()
            written, _ = self._journal_sync(entry, head)
            return written

    def _lock_chain(self) -> tuple[int, str]:
        """Take the chain's lock for this transaction and read its head (id, hash)."""
        conn = self.conn
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
        last = conn.execute("SELECT id, hash FROM journal ORDER BY id DESC LIMIT 1").fetchone()
        return (0, GENESIS) if last is None else (last[0], last[1] or GENESIS)

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

    def _journal_sync(
        self, entry: JournalEntry, head: tuple[int, str]
    ) -> tuple[JournalEntry, tuple[int, str]]:
        """Insert ``entry`` after ``head`` inside the caller's transaction; return it and the new head."""
        ts = entry.ts or now_ms()
        try:
            data = json.dumps(dict(entry.data), default=str, ensure_ascii=False)
            return self._insert_journal(entry, ts, data, head)
        except _ROW_ERRORS as error:
            reason = f"{type(error).__name__}: {safe_text(str(error))[:200]}"
            replacement = _without_nul(placeholder(entry, ts, reason))
            written = self._insert_journal(
                replacement,
                replacement.ts,
                json.dumps(replacement.data, default=str, ensure_ascii=False),
                head,
            )
            self.journal_replaced += 1
            self._replaced_reason = reason
            log.error(
                "journal entry %s (%s) could not be written as sent (%s): placeholder %s written",
                safe_text(str(entry.kind))[:40],
                safe_text(str(entry.message))[:80],
                reason,
                written[0].id,
            )
            return written

    def _insert_journal(
        self, entry: JournalEntry, ts: int, data: str, head: tuple[int, str]
    ) -> tuple[JournalEntry, tuple[int, str]]:
        stored = (
            head[0] + 1,
            ts,
            entry.kind,
            entry.message,
            entry.user,
            entry.device,
            entry.point,
            entry.alarm,
            data,
        )
        _check_row(stored)
        digest = hash_columns(stored, head[1])
        self.conn.execute(
            'INSERT INTO journal (id, ts, kind, message, "user", device, point, alarm, data,'
            " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*stored, head[1], digest),
        )
        written = JournalEntry(
            kind=entry.kind,
            message=entry.message,
            user=entry.user,
            device=entry.device,
            point=entry.point,
            alarm=entry.alarm,
            data=entry.data,
            ts=ts,
            id=stored[0],
        )
        return written, (stored[0], digest)

    async def journal_chain_rows(self, after_id: int, limit: int = 5000) -> list[ChainRow]:
        """The rows after ``after_id`` in ``id`` order, as the chain sees them."""

        def rows() -> list[ChainRow]:
            return [
                ChainRow(*row)
                for row in self.conn.execute(
                    'SELECT id, ts, kind, message, "user", device, point, alarm, data,'
                    " prev_hash, hash FROM journal WHERE id > %s ORDER BY id LIMIT %s",
                    (after_id, limit),
                )
            ]

        return await self._run(rows)

    async def journal_ids_between(self, since: int, until: int) -> tuple[int, int] | None:
        """The first and last id of the rows written at or after ``since`` and before ``until``."""

        def ids() -> tuple[int, int] | None:
            row = self.conn.execute(
                "SELECT min(id), max(id) FROM journal WHERE ts >= %s AND ts < %s", (since, until)
            ).fetchone()
            return None if row is None or row[0] is None else (row[0], row[1])

        return await self._run(ids)

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
        """Journal entries, newest first; ``search`` matches message, data, device and point text."""
        clauses: list[str] = []
        args: list[Any] = []
        if scope is not None:
            clauses.append(
                "(device = ANY(%s) OR (device IS NULL AND (data::jsonb ->> 'zone') = ANY(%s))"
                ' OR "user" = %s)'
            )
            args += [sorted(scope.devices), sorted(scope.zones), scope.user]
        if kinds:
            clauses.append("kind = ANY(%s)")
            args.append(list(kinds))
        for column, value in (('"user"', user), ("device", device), ("alarm", alarm)):
            if value is not None:
                clauses.append(f"{column} = %s")
                args.append(value)
        for clause, bound in (("ts >= %s", since), ("ts < %s", until), ("id < %s", before_id)):
            if bound is not None:
                clauses.append(clause)
                args.append(bound)
        if search:
            # ILIKE: case-insensitive like SQLite's LIKE; the wildcards escaped, so literal.
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append(
                "(message ILIKE %s OR data ILIKE %s OR device ILIKE %s OR point ILIKE %s)"
            )
            args.extend([like] * 4)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            'SELECT id, ts, kind, message, "user", device, point, alarm, data FROM journal '
            f"{where} ORDER BY id DESC LIMIT %s"
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
                for row in self.conn.execute(sql, args)
            ]

        return await self._run(query)

    # -- alarm state -----------------------------------------------------------

    async def save_alarm_state(
        self, key: str, state: Mapping[str, Any] | None, entry: JournalEntry | None = None
    ) -> JournalEntry | None:
        """Write the alarm's state and its journal entry in one transaction."""
        (written,) = await self.save_alarm_states([(key, state, entry)])
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
        conn = self.conn
        written: list[JournalEntry | None] = []
        updated = now_ms()
        with conn.transaction():
            head: tuple[int, str] | None = None
            for key, state, entry in items:
                if entry is None:
                    written.append(None)
                else:
                    if head is None:
                        head = self._lock_chain()
                    one, head = self._journal_sync(entry, head)
                    written.append(one)
                if key is None:
                    continue
                if state is None:
                    conn.execute("DELETE FROM alarm_state WHERE key = %s", (key,))
                else:
                    conn.execute(
                        "INSERT INTO alarm_state (key, state, updated) VALUES (%s, %s, %s)"
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
                for key, state in self.conn.execute("SELECT key, state FROM alarm_state")
            }

        return await self._run(load)

    # -- the periodic task ---------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush history every ``flush_interval`` s and apply retention every ``prune_interval`` s.

        A failed write (the server restarting, the network down) is logged
        and retried at the next flush, its changes still buffered; on
        cancellation the buffer is flushed one last time.
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
                except (psycopg.Error, StoreUnavailableError) as error:
                    log.error("%s: history write failed (%s); will retry", self.server, error)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.flush_history()
                except psycopg.Error as error:
                    log.error("%s: last history write failed: %s", self.server, error)


def _without_nul(entry: JournalEntry) -> JournalEntry:
    """``entry`` with every NUL character of its text written ``\\x00`` (PostgreSQL text has none)."""
    changes: dict[str, Any] = {
        name: value.replace("\x00", "\\x00")
        for name in _TEXT_COLUMNS
        if isinstance(value := getattr(entry, name), str) and "\x00" in value
    }
    if not changes:
        return entry
    replaced = dict(entry.data["replaced"])
    fields = [f for f in replaced["fields"] if f != "unknown"]
    replaced["fields"] = fields + [name for name in changes if name not in fields]
    return dataclasses.replace(entry, **changes, data={**entry.data, "replaced": replaced})


def _state_json(state: Mapping[str, Any]) -> str:
    """An alarm's state as JSON; what JSON or UTF-8 cannot hold made safe rather than failing the batch."""
    try:
        text = json.dumps(dict(state), default=str, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except _ROW_ERRORS:
        return json.dumps(storable_data(state), default=str)
