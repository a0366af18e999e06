"""The SQLite journal: entries written and synced before the call returns, placeholders for what cannot be."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..points import now_ms
from ..text import safe_text
from .chain import GENESIS, ChainRow, hash_columns
from .interface import JournalEntry, JournalScope
from .parts import _SqliteStoreParts
from .placeholders import placeholder as _placeholder

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

log = logging.getLogger(__name__)


def _insert_chained(
    conn: sqlite3.Connection,
    entry: JournalEntry,
    ts: int,
    data: str,
    head: tuple[int, str] | None = None,
) -> tuple[int, str]:
    """Insert one row with its place in the chain, inside a transaction; return its id and hash.

    ``head`` is the (id, hash) of the last row written *in this transaction*;
    without it the head is read from the table. It is never kept across
    transactions, so a rolled-back batch leaves nothing to undo and the row
    and its hash commit together.
    """
    if head is None:
        last = conn.execute("SELECT id, hash FROM journal ORDER BY id DESC LIMIT 1").fetchone()
        head = (0, GENESIS) if last is None else (last[0], last[1] or GENESIS)
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
    digest = hash_columns(stored, head[1])
    conn.execute(
        "INSERT INTO journal (id, ts, kind, message, user, device, point, alarm, data,"
        " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*stored, head[1], digest),
    )
    return stored[0], digest


def chain_journal(conn: sqlite3.Connection) -> int:
    """Give a journal written before the chain its two columns and chain its rows, once.

    Returns how many rows were chained (0 when the journal is chained already).
    The upgrade is journaled, as the entry that follows the rows it chained.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(journal)")}
    if "hash" in columns:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE journal ADD COLUMN prev_hash TEXT")
        conn.execute("ALTER TABLE journal ADD COLUMN hash TEXT")
        prev, count = GENESIS, 0
        rows = conn.execute(
            "SELECT id, ts, kind, message, user, device, point, alarm, data"
            " FROM journal ORDER BY id"
        ).fetchall()
        for stored in rows:
            digest = hash_columns(tuple(stored), prev)
            conn.execute(
                "UPDATE journal SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, stored[0])
            )
            prev, count = digest, count + 1
        if count:
            entry = JournalEntry(
                kind="journal.chained",
                message=f"{count} earlier journal entries chained at upgrade",
                data={"rows": count, "head": prev},
            )
            _insert_chained(conn, entry, now_ms(), json.dumps(dict(entry.data)))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if count:
        log.warning("journal: %d earlier entries chained at upgrade", count)
    return count


class _SqliteJournal(_SqliteStoreParts):
    """The store's journal: write first, then tell; a placeholder for an entry that cannot be written as sent."""

    # -- journal -----------------------------------------------------------

    async def journal(self, entry: JournalEntry) -> JournalEntry:
        """Write ``entry`` durably; return it with its id and timestamp.

        An entry that cannot be written as it is comes back as the
        placeholder written in its place (see the module's docstring).
        """
        try:
            return await self._run(self._journal_one, entry)
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
        row_id, digest = _insert_chained(self.db.conn, entry, ts, data, self._chain_head)
        self._chain_head = (row_id, digest)
        return JournalEntry(
            kind=entry.kind,
            message=entry.message,
            user=entry.user,
            device=entry.device,
            point=entry.point,
            alarm=entry.alarm,
            data=entry.data,
            ts=ts,
            id=row_id,
        )

    def _journal_one(self, entry: JournalEntry) -> JournalEntry:
        """One entry in its own transaction: the row and its hash, or neither."""
        with self._transaction():
            return self._journal_sync(entry)

    async def journal_chain_rows(self, after_id: int, limit: int = 5000) -> list[ChainRow]:
        """The rows after ``after_id`` in ``id`` order, as the chain sees them."""

        def rows() -> list[ChainRow]:
            return [
                ChainRow(*row)
                for row in self.db.conn.execute(
                    "SELECT id, ts, kind, message, user, device, point, alarm, data,"
                    " prev_hash, hash FROM journal WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                )
            ]

        return await self._run(rows)

    async def journal_ids_between(self, since: int, until: int) -> tuple[int, int] | None:
        """The first and last id of the rows written at or after ``since`` and before ``until``."""

        def ids() -> tuple[int, int] | None:
            row = self.db.conn.execute(
                "SELECT min(id), max(id) FROM journal WHERE ts >= ? AND ts < ?", (since, until)
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
