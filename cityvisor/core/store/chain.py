"""The journal's hash chain: canonical encoding, row hashes and verification, whatever the backend.

Every journal row carries ``prev_hash``, the hash of the row before it, and
``hash``, its own. The journal is **one chain per store**: every row, in
``id`` order, whatever its kind. (One chain keeps the order between kinds,
an acknowledgement after its alarm, a command after its login, and a row
deleted anywhere breaks it; a chain per kind family would let a whole
family's tail go unnoticed.)

The canonical encoding of a row (format 2, what the store writes) is the
UTF-8 bytes of eleven lines joined by ``"\n"``::

    cityvisor-journal/2
    id                      decimal
    ts                      decimal
    kind                    <length>:<text>
    message                 <length>:<text>
    user                    <length>:<text>, or "-" for null
    device                  <length>:<text>, or "-" for null
    point                   <length>:<text>, or "-" for null
    alarm                   <length>:<text>, or "-" for null
    data                    <length>:<text>
    prev_hash

where ``<length>`` is the text's length in characters (code points), in
decimal, and ``data`` is the row's stored JSON *text* exactly as stored (not
re-encoded); ``prev_hash`` is 64 lower-case hex digits, :data:`GENESIS`
(64 zeros) for the first row. A row's ``hash`` is the lower-case hex SHA-256
of its encoding. The length before every text makes the encoding one-to-one
(a text holding a newline cannot pass for two fields) at a third of the
cost of a JSON writer.

Rows written before format 2 were encoded as the JSON array
``["cityvisor-journal/1", id, ts, kind, message, user, device, point, alarm,
data, prev_hash]`` (``ensure_ascii=False``, separators ``","`` and ``":"``).
Verification accepts a format 1 row only before the first format 2 row of
the walk: once a journal has moved on, a row cannot go back.

What verification proves: no row was edited, deleted or moved since it was
written, up to the last row. What it cannot prove alone: that the newest
rows were not cut off, nor that someone holding the database did not
rewrite the whole chain (that needs the head hash kept elsewhere).

Nothing here knows SQLite: a backend stores the two columns and hands rows
to :class:`ChainVerifier` in ``id`` order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

FORMAT = "cityvisor-journal/2"
"""The tag that starts every encoded row the store writes (a later encoding gets another)."""

FORMAT_1 = "cityvisor-journal/1"
"""The tag of the JSON encoding of rows written before format 2 (verified, never written)."""

GENESIS = "0" * 64
"""The ``prev_hash`` of a journal's first row."""


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One journal row as the chain sees it: the stored columns, ``data`` as stored text."""

    id: int
    ts: int
    kind: str
    message: str
    user: str | None
    device: str | None
    point: str | None
    alarm: str | None
    data: str
    prev_hash: str | None = None
    hash: str | None = None


_ENCODE_1 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""Format 1's JSON writer, built once (``json.dumps`` with options builds one per call)."""


def _text(value: str | None) -> str:
    return "-" if value is None else f"{len(value)}:{value}"


def encode_columns(columns: tuple[Any, ...], prev_hash: str) -> bytes:
    """The canonical encoding of a row given as its stored ``columns``, ``id`` to ``data``."""
    id_, ts, kind, message, user, device, point, alarm, data = columns
    try:
        # Written out rather than through _text: this runs for every journal row.
        text = (
            f"{FORMAT}\n{id_:d}\n{ts:d}\n{len(kind)}:{kind}\n{len(message)}:{message}\n"
            f"{'-' if user is None else f'{len(user)}:{user}'}\n"
            f"{'-' if device is None else f'{len(device)}:{device}'}\n"
            f"{'-' if point is None else f'{len(point)}:{point}'}\n"
            f"{'-' if alarm is None else f'{len(alarm)}:{alarm}'}\n"
            f"{len(data)}:{data}\n{prev_hash}"
        )
    except TypeError:
        # A null where the schema wants text (a kind of None): it encodes, and the
        # row's insert then refuses it, as it would without the chain.
        text = (
            f"{FORMAT}\n{id_:d}\n{ts:d}\n{_text(kind)}\n{_text(message)}\n"
            f"{_text(user)}\n{_text(device)}\n{_text(point)}\n{_text(alarm)}\n"
            f"{_text(data)}\n{prev_hash}"
        )
    return text.encode()


def encode_columns_v1(columns: tuple[Any, ...], prev_hash: str) -> bytes:
    """The format 1 (JSON) encoding of a row's stored ``columns``: rows written before format 2."""
    return _ENCODE_1([FORMAT_1, *columns, prev_hash]).encode("utf-8")


def hash_columns(columns: tuple[Any, ...], prev_hash: str) -> str:
    """The hex SHA-256 of a row's canonical encoding, from its stored ``columns`` (writers)."""
    return hashlib.sha256(encode_columns(columns, prev_hash)).hexdigest()


def columns(row: ChainRow) -> tuple[Any, ...]:
    """The stored columns of ``row`` that are encoded, ``id`` to ``data``, in order."""
    return (
        row.id,
        row.ts,
        row.kind,
        row.message,
        row.user,
        row.device,
        row.point,
        row.alarm,
        row.data,
    )


def encode(row: ChainRow, prev_hash: str) -> bytes:
    """The canonical encoding of ``row`` chained after ``prev_hash`` (see the module docstring)."""
    return encode_columns(columns(row), prev_hash)


def row_hash(row: ChainRow, prev_hash: str) -> str:
    """The hex SHA-256 of ``row``'s canonical encoding after ``prev_hash``."""
    return hash_columns(columns(row), prev_hash)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first row where the chain does not hold, and why."""

    id: int
    reason: str

    def as_json(self) -> dict[str, Any]:
        """The break as the API and the CLI report it."""
        return {"id": self.id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ChainState:
    """The result of a walk: rows checked, the head, and the first break if any."""

    rows: int
    head_id: int | None
    head_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """Whether every row checked holds."""
        return self.broken is None

    def as_json(self) -> dict[str, Any]:
        """The state as ``GET /api/v1/journal/chain`` and ``journal verify --json`` give it."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head_id": self.head_id,
            "head_hash": self.head_hash,
            "broken": None if self.broken is None else self.broken.as_json(),
        }


class ChainVerifier:
    """Walks rows in ``id`` order and stops at the first that does not hold.

    Feed it with :meth:`feed` (chunks, in order), then read :meth:`state`.
    A row is broken when its ``prev_hash`` is not the hash of the row before
    it (a row deleted or moved before it), or when its ``hash`` is not the
    hash of its content (the row edited, or moved: ``id`` is encoded) in
    format 2, or in format 1 before any format 2 row.
    """

    def __init__(self, *, prev_hash: str = GENESIS, after_id: int | None = None) -> None:
        # A walk may start inside a journal (a bundle): after row ``after_id``, whose hash
        # is ``prev_hash``.
        self.rows = 0
        self.head_id: int | None = after_id or None
        self.head_hash = prev_hash
        self.broken: ChainBreak | None = None
        # Format 1 rows are accepted until the first format 2 row, never after it.
        self._format_2_seen = False

    def feed(self, rows: list[ChainRow]) -> bool:
        """Check ``rows``; return False once the chain is broken (no need to feed more)."""
        for row in rows:
            if self.broken is not None:
                return False
            self.broken = self._check(row)
            if self.broken is not None:
                return False
            self.rows += 1
            self.head_id = row.id
            self.head_hash = row.hash or ""
        return self.broken is None

    def _check(self, row: ChainRow) -> ChainBreak | None:
        if row.prev_hash is None or row.hash is None:
            return ChainBreak(row.id, "the row has no hash (written outside the store?)")
        if row.prev_hash != self.head_hash:
            after = "the start" if self.head_id is None else f"row {self.head_id}"
            expected = 1 if self.head_id is None else self.head_id + 1
            gap = f" (rows {expected} to {row.id - 1} are missing)" if row.id > expected else ""
            return ChainBreak(
                row.id,
                f"its previous hash is not the hash of {after}{gap}:"
                " a row before it was deleted, or rows were reordered",
            )
        if row_hash(row, row.prev_hash) == row.hash:
            self._format_2_seen = True
            return None
        if not self._format_2_seen:
            v1 = hashlib.sha256(encode_columns_v1(columns(row), row.prev_hash)).hexdigest()
            if v1 == row.hash:
                return None
        return ChainBreak(row.id, "its content does not match its hash: the row was edited")

    def state(self) -> ChainState:
        """What the walk found so far."""
        return ChainState(self.rows, self.head_id, self.head_hash, self.broken)


class ChainSource(Protocol):
    """What a walk reads: a store's rows in ``id`` order (:class:`~cityvisor.core.store.Store` is one)."""

    async def journal_chain_rows(self, after_id: int, limit: int = 5000) -> list[ChainRow]:
        """Up to ``limit`` rows after ``after_id``, in ``id`` order."""
        ...


async def verify_store(store: ChainSource, *, chunk: int = 5000) -> ChainState:
    """Walk the whole journal of ``store`` in chunks (other writers go on between them).

    The hashing runs in a worker thread, never on the event loop.
    """
    verifier = ChainVerifier()
    after = 0
    while True:
        rows = await store.journal_chain_rows(after, chunk)
        if not rows or not await anyio.to_thread.run_sync(verifier.feed, rows):
            return verifier.state()
        after = rows[-1].id
