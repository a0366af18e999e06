"""Badges, their rights and the lockdown exceptions: the tables, the decisions, the pseudonyms.

The model, kept in the hub's store (its own tables, through ``store.call``):

- a **badge** is a card number as enrolled (``"12:3456"`` for a 26-bit
  card, see :attr:`cityvisor.hal.osdp.CardRead.number`), with its holder's
  name and a note;
- a **right** lets a badge through the doors of a *place* during an optional
  validity period. A place is ``building:<id>`` (the doors configured with
  that building), ``zone:<id>`` (every door of the zone) or ``*`` (everywhere);
- a **lockdown exception** (same shape) lets a badge through a place's doors
  while they are in lockdown, when it also holds a right there.

Doors decide locally and at once from a :class:`BadgeBook`, an in-memory
copy of the tables that :class:`AccessControl` reloads whenever they change:
at once for an edit made through the API, within ``poll`` seconds for one
made by ``cityvisor badges`` (every edit bumps a revision number it watches).

Badge numbers are personal data: points and the journal only ever carry a
**pseudonym**, an HMAC-SHA256 of the number under a key kept outside the
database (:func:`pseudonym_key`), so that a copy of the database or of the
journal does not reveal who went where, while whoever holds the key can
still answer a lawful request by computing one badge's pseudonym.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import sqlite_utils

from cityvisor.core.store import JournalEntry, Store

__all__ = [
    "AccessControl",
    "BadgeBook",
    "Decision",
    "Permit",
    "RightsError",
    "pseudonym",
    "pseudonym_key",
]

KEY_ENVIRONMENT = "CITYVISOR_BADGE_KEY"
"""Environment variable holding the pseudonym key; else a file next to the store."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS access_badge (
    number TEXT PRIMARY KEY,
    holder TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_permit (
    id INTEGER PRIMARY KEY,
    badge TEXT NOT NULL REFERENCES access_badge (number) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('right', 'exception')),
    place TEXT NOT NULL,
    valid_from INTEGER,
    valid_until INTEGER,
    created INTEGER NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS access_permit_badge ON access_permit (badge);
CREATE TABLE IF NOT EXISTS access_door_mode (
    device TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class RightsError(ValueError):
    """A mistake in a badge edit (unknown badge, bad place or date); its message says which.

    ``status`` is the HTTP status the API answers with (400, 404 or 409).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def parse_place(place: str) -> str:
    """Check a place: ``building:<id>``, ``zone:<id>`` or ``*``; return it as stored."""
    kind, _, name = place.partition(":")
    if place == "*" or (kind in ("building", "zone") and name and len(name) <= 100):
        return place
    raise RightsError(f"place {place!r} must be building:<id>, zone:<id> or *")


def parse_date(text: str | None, *, end: bool = False) -> int | None:
    """An ISO 8601 date or date-time as epoch ms (UTC if no offset); a bare end date includes its day."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RightsError(f"{text!r} is not an ISO 8601 date") from None
    if end and len(text) == 10:  # "2026-12-31" means until the end of that day
        moment += dt.timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- pseudonyms


def pseudonym_key(store_path: str | os.PathLike[str]) -> bytes:
    """The key of badge pseudonyms: ``$CITYVISOR_BADGE_KEY``, or a 0600 file beside the store.

    The file (``<store>.badge-key``) is created with a random key on first
    use. Keep it out of the database's backups, or the pseudonyms of its
    journal can be reversed by trying every card number.
    """
    text = os.environ.get(KEY_ENVIRONMENT)
    if text:
        return text.encode()
    path = Path(f"{os.fspath(store_path)}.badge-key")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
    return key


def pseudonym(key: bytes, number: str) -> str:
    """A badge number's pseudonym: ``"b-"`` and 16 hex digits of HMAC-SHA256(key, number)."""
    return "b-" + hmac.new(key, number.encode(), hashlib.sha256).hexdigest()[:16]


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Permit:
    """A right or a lockdown exception of one badge, for one place and period."""

    id: int
    badge: str
    kind: str
    place: str
    valid_from: int | None = None
    valid_until: int | None = None

    def covers(self, building: str, zone: str) -> bool:
        """True if the permit's place includes a door of ``building`` in ``zone``."""
        return self.place in ("*", f"building:{building}", f"zone:{zone}")

    def as_json(self) -> dict[str, Any]:
        """The permit as JSON-ready data."""
        return {
            "id": self.id,
            "kind": self.kind,
            "place": self.place,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }


@dataclass(frozen=True)
class Decision:
    """Whether a badge may pass, and why (``reason`` is journaled and shown)."""

    granted: bool
    reason: str


class BadgeBook:
    """The badges and their permits, in memory: what doors decide from, in microseconds."""

    def __init__(self, permits: Mapping[str, list[Permit]]) -> None:
        self.permits = dict(permits)

    def decide(
        self, number: str, *, building: str, zone: str, lockdown: bool, now: int
    ) -> Decision:
        """May ``number`` open a door of ``building`` in ``zone`` at ``now`` (epoch ms)?"""
        permits = self.permits.get(number)
        if permits is None:
            return Decision(False, "unknown badge")
        here = [p for p in permits if p.kind == "right" and p.covers(building, zone)]
        if not here:
            return Decision(False, "no right here")
        if not any(_valid(p, now) for p in here):
            early = all(p.valid_from is not None and now < p.valid_from for p in here)
            return Decision(False, "right not yet valid" if early else "right expired")
        if not lockdown:
            return Decision(True, "right")
        for permit in permits:
            if permit.kind == "exception" and permit.covers(building, zone) and _valid(permit, now):
                return Decision(True, "lockdown exception")
        return Decision(False, "lockdown")


def _valid(permit: Permit, now: int) -> bool:
    return (permit.valid_from is None or permit.valid_from <= now) and (
        permit.valid_until is None or now < permit.valid_until
    )


# --------------------------------------------------------------------------- the tables


@contextlib.contextmanager
def _transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """One transaction (the store's connection is in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the access tables if they are missing."""
    db.executescript(SCHEMA)


def revision(db: sqlite_utils.Database) -> int:
    """The number of edits made so far (a door reloads its book when it changes)."""
    row = db.execute("SELECT value FROM access_meta WHERE key = 'revision'").fetchone()
    return int(row[0]) if row else 0


def _bump(db: sqlite_utils.Database) -> None:
    db.execute(
        "INSERT INTO access_meta (key, value) VALUES ('revision', 1)"
        " ON CONFLICT (key) DO UPDATE SET value = value + 1"
    )


def load_book(db: sqlite_utils.Database) -> tuple[int, BadgeBook]:
    """The revision and the badge book, read in one transaction."""
    with _transaction(db):
        permits: dict[str, list[Permit]] = {
            n: [] for (n,) in db.execute("SELECT number FROM access_badge")
        }
        for row in db.execute(
            "SELECT id, badge, kind, place, valid_from, valid_until FROM access_permit ORDER BY id"
        ):
            permits[row[1]].append(Permit(*row))
        return revision(db), BadgeBook(permits)


def list_badges(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every badge with its permits, by number."""
    _, book = load_book(db)
    badges = []
    for number, holder, note, created in db.execute(
        "SELECT number, holder, note, created FROM access_badge ORDER BY number"
    ):
        permits = book.permits.get(number, [])
        badges.append(
            {
                "number": number,
                "holder": holder,
                "note": note,
                "created": created,
                "rights": [p.as_json() for p in permits if p.kind == "right"],
                "exceptions": [p.as_json() for p in permits if p.kind == "exception"],
            }
        )
    return badges


def add_badge(db: sqlite_utils.Database, number: str, holder: str, note: str = "") -> None:
    """Enrol a badge; :class:`RightsError` if it is enrolled already."""
    if not number or len(number) > 64 or not number.isprintable():
        raise RightsError("a badge number is 1 to 64 printable characters")
    try:
        with _transaction(db):
            db.execute(
                "INSERT INTO access_badge (number, holder, note, created) VALUES (?, ?, ?, ?)",
                (number, holder[:200], note[:500], _now_ms()),
            )
            _bump(db)
    except sqlite3.IntegrityError:
        raise RightsError(f"badge {number} is enrolled already", 409) from None


def remove_badge(db: sqlite_utils.Database, number: str) -> None:
    """Withdraw a badge and all its permits."""
    with _transaction(db):
        if db.execute("DELETE FROM access_badge WHERE number = ?", (number,)).rowcount == 0:
            raise RightsError(f"no badge {number}", 404)
        db.execute("DELETE FROM access_permit WHERE badge = ?", (number,))
        _bump(db)


def add_permit(
    db: sqlite_utils.Database,
    number: str,
    kind: str,
    place: str,
    *,
    valid_from: int | None = None,
    valid_until: int | None = None,
    by: str = "",
) -> int:
    """Grant a right or a lockdown exception; return its id."""
    place = parse_place(place)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise RightsError("a permit must end after it starts")
    with _transaction(db):
        if db.execute("SELECT 1 FROM access_badge WHERE number = ?", (number,)).fetchone() is None:
            raise RightsError(f"no badge {number}", 404)
        cursor = db.execute(
            "INSERT INTO access_permit (badge, kind, place, valid_from, valid_until, created,"
            " created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (number, kind, place, valid_from, valid_until, _now_ms(), by),
        )
        _bump(db)
    return int(cursor.lastrowid or 0)


def remove_permit(db: sqlite_utils.Database, permit_id: int, kind: str) -> str:
    """Revoke a right or an exception by id; return its badge's number."""
    with _transaction(db):
        row = db.execute(
            "SELECT badge FROM access_permit WHERE id = ? AND kind = ?", (permit_id, kind)
        ).fetchone()
        if row is None:
            raise RightsError(f"no {kind} {permit_id}", 404)
        db.execute("DELETE FROM access_permit WHERE id = ?", (permit_id,))
        _bump(db)
    return str(row[0])


# --------------------------------------------------------------------------- the hub's copy


class AccessControl:
    """The hub's badge book, door modes and pseudonym key, shared by every door.

    The access plugin's service runs :meth:`serve`; doors find this object
    in the hub's resources (key ``"access"``) and wait for :attr:`ready`.
    """

    def __init__(self) -> None:
        self.book = BadgeBook({})
        self.modes: dict[str, str] = {}
        self.store: Store | None = None
        self.key = b""
        self.ready = anyio.Event()
        self._revision = -1

    async def serve(self, store: Store, key: bytes, *, poll: float = 2.0) -> None:
        """Load the tables, then reload the book whenever its revision changes (forever)."""
        self.store, self.key = store, key
        await store.call(create_tables)
        self.modes = dict(
            await store.call(
                lambda db: db.execute("SELECT device, mode FROM access_door_mode").fetchall()
            )
        )
        await self.reload()
        self.ready.set()
        while True:
            await anyio.sleep(poll)
            if await store.call(revision) != self._revision:
                await self.reload()

    async def reload(self) -> None:
        """Read the book again now (after an edit)."""
        assert self.store is not None
        self._revision, self.book = await self.store.call(load_book)

    def pseudonym(self, number: str) -> str:
        """The badge's pseudonym (what points and the journal show)."""
        return pseudonym(self.key, number)

    async def journal(self, entry: JournalEntry) -> None:
        """Write a journal entry (doors journal every decision)."""
        assert self.store is not None
        await self.store.journal(entry)

    async def set_mode(self, device: str, mode: str) -> None:
        """Remember a door's mode (``normal`` or ``lockdown``) so that it survives a restart."""
        assert self.store is not None
        self.modes[device] = mode
        await self.store.call(
            lambda db: db.execute(
                "INSERT INTO access_door_mode (device, mode, since) VALUES (?, ?, ?)"
                " ON CONFLICT (device) DO UPDATE SET mode = excluded.mode, since = excluded.since",
                (device, mode, _now_ms()),
            )
        )
