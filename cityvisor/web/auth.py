"""Who may use the HMI: user accounts, password hashes and sessions.

Accounts live in the store, in the table ``web_users`` (name, argon2id hash,
role, zones); ``cityvisor users add|passwd|list|remove`` manages them. The
deployment file's ``[[users]]`` may declare users too: for a name it lists,
**the file's role and zones win** over the table's (the file is what the
city reviews and versions); the table always holds the password. A name
only in the file cannot log in until ``cityvisor users passwd`` gives it a
password; a name only in the table logs in with the table's role and zones.

Sessions are server-side rows in ``web_sessions``, keyed by the SHA-256 of
the session id (``secrets.token_urlsafe(32)``), so that a copy of the
database does not hand out live sessions. A session ends when it has not
been used for ``[web] session_lifetime`` seconds, at logout, when its user's
password changes or when the user is removed.

Password hashing is slow on purpose (argon2id): it always runs in a worker
thread, at most :data:`HASHING_THREADS` at a time, never on the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import argon2
import sqlite_utils

from ..core.points import now_ms
from ..core.store import Store
from ..core.text import text_problem
from ..core.users import Role, User
from .logins import LoginRateLimiter

__all__ = [
    "HASHING_THREADS",
    "Account",
    "Accounts",
    "LoginRateLimiter",
    "PasswordError",
    "Session",
    "Sessions",
    "UserNameError",
    "check_password",
    "check_user_name",
    "ensure_tables",
    "hash_password",
]

log = logging.getLogger(__name__)

HASHING_THREADS = 2
"""Password hashes computed at once: a burst of logins cannot take every core."""

MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_USERS = "web_users"
_SESSIONS = "web_sessions"

_hasher = argon2.PasswordHasher()
_hashing: anyio.CapacityLimiter | None = None
_DUMMY_HASH: str | None = None


MAX_USER_NAME = 64
"""The longest user name (the login form and ``cityvisor users`` hold it to this)."""


class PasswordError(ValueError):
    """A password that the policy refuses (too short, too long, the user's own name)."""


class UserNameError(ValueError):
    """A user name that cannot be stored or shown (empty, too long, control characters)."""


def check_user_name(name: str) -> None:
    """Raise :class:`UserNameError` unless ``name`` is valid text of 1 to 64 characters."""
    problem = text_problem("the user name", name, max_length=MAX_USER_NAME, min_length=1)
    if problem is None and name != name.strip():
        problem = "the user name must not start or end with spaces"
    if problem is not None:
        raise UserNameError(problem)


def check_password(name: str, password: str) -> None:
    """Raise :class:`PasswordError` if ``password`` is not acceptable for user ``name``."""
    problem = text_problem("the password", password, max_length=MAX_PASSWORD)
    if problem is not None and len(password) <= MAX_PASSWORD:
        raise PasswordError(problem)
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"the password must have at most {MAX_PASSWORD} characters")
    if password.strip().lower() == name.lower():
        raise PasswordError("the password must not be the user's name")


def hash_password(password: str, hasher: argon2.PasswordHasher | None = None) -> str:
    """The argon2id hash of ``password`` (blocking: call it in a thread)."""
    return (hasher or _hasher).hash(password)


def _verify(stored: str | None, password: str) -> bool:
    """Check a password against its hash; an unknown user costs the same time (blocking)."""
    global _DUMMY_HASH
    if stored is None:
        # Same work as for a real user, so response times do not tell which names exist.
        if _DUMMY_HASH is None:
            _DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
        stored = _DUMMY_HASH
        password = password + "\x00"
    try:
        return _hasher.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """:func:`_verify` in a worker thread, bounded to :data:`HASHING_THREADS` at once."""
    global _hashing
    if _hashing is None:
        _hashing = anyio.CapacityLimiter(HASHING_THREADS)
    return await anyio.to_thread.run_sync(_verify, stored, password, limiter=_hashing)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


# --------------------------------------------------------------------------- tables


def ensure_tables(db: sqlite_utils.Database) -> None:
    """Create the users and sessions tables if they are missing (idempotent)."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {_USERS} ("
        " name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,"
        " zones TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
        " last_login_ms INTEGER)"
    )
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {_SESSIONS} ("
        " digest TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,"
        " created_ms INTEGER NOT NULL, seen_ms INTEGER NOT NULL, ip TEXT NOT NULL DEFAULT '')"
    )
    db.execute(f"CREATE INDEX IF NOT EXISTS {_SESSIONS}_user ON {_SESSIONS} (user)")


@dataclass(frozen=True)
class Account:
    """A user as the HMI knows them: rights (after the config's overrides) and bookkeeping.

    ``source`` says where the role and zones come from: ``"table"``,
    ``"config"`` (declared in the file, no password yet) or ``"config+table"``.
    """

    name: str
    role: Role
    zones: frozenset[str]
    source: str
    has_password: bool = True
    created_ms: int | None = None
    last_login_ms: int | None = None

    @property
    def user(self) -> User:
        """The user as the command bus and the alarm manager see them."""
        return User(self.name, self.role, self.zones)

    def as_json(self) -> dict[str, Any]:
        """What ``cityvisor users list --json`` prints (never the hash)."""
        return {
            "name": self.name,
            "role": str(self.role),
            "zones": sorted(self.zones),
            "source": self.source,
            "has_password": self.has_password,
            "created_ms": self.created_ms,
            "last_login_ms": self.last_login_ms,
        }


class Accounts:
    """The users table, seen through the deployment's ``[[users]]`` overrides.

    Every method that touches the database goes through ``store.call`` (the
    store's own thread); password hashing goes to worker threads.
    """

    def __init__(self, store: Store, declared: Iterable[User] = ()) -> None:
        self.store = store
        self.declared: dict[str, User] = {user.name: user for user in declared}

    async def setup(self) -> None:
        """Create the tables if needed."""
        await self.store.call(ensure_tables)

    def _account(self, row: Mapping[str, Any] | None, name: str) -> Account | None:
        declared = self.declared.get(name)
        if row is None:
            if declared is None:
                return None
            return Account(name, declared.role, declared.zones, "config", has_password=False)
        if declared is not None:
            return Account(
                name,
                declared.role,
                declared.zones,
                "config+table",
                created_ms=row["created_ms"],
                last_login_ms=row["last_login_ms"],
            )
        return Account(
            name,
            Role.parse(row["role"]),
            frozenset(json.loads(row["zones"])),
            "table",
            created_ms=row["created_ms"],
            last_login_ms=row["last_login_ms"],
        )

    async def get(self, name: str) -> Account | None:
        """One account by name (None if neither the table nor the config knows it)."""
        row = await self.store.call(lambda db: _row(db, name))
        return self._account(row, name)

    async def list_all(self) -> list[Account]:
        """Every account, by name: the table's and the config's."""
        rows = await self.store.call(
            lambda db: [dict(r) for r in db.query(f"SELECT * FROM {_USERS} ORDER BY name")]
        )
        by_name = {row["name"]: row for row in rows}
        names = sorted(set(by_name) | set(self.declared))
        accounts = [self._account(by_name.get(name), name) for name in names]
        return [a for a in accounts if a is not None]

    async def add(
        self,
        name: str,
        password: str,
        role: Role,
        zones: Iterable[str],
        *,
        hasher: argon2.PasswordHasher | None = None,
    ) -> Account:
        """Create a user with a password; raise ValueError if the name is taken or invalid."""
        check_user_name(name)
        check_password(name, password)
        hashed = await anyio.to_thread.run_sync(hash_password, password, hasher)
        now = now_ms()
        zone_list = sorted(set(zones)) or ["*"]

        def insert(db: sqlite_utils.Database) -> bool:
            if _row(db, name) is not None:
                return False
            db.execute(
                f"INSERT INTO {_USERS} (name, password_hash, role, zones, created_ms, updated_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, hashed, str(role), json.dumps(zone_list), now, now),
            )
            return True

        if not await self.store.call(insert):
            raise ValueError(f"user {name!r} exists already (use passwd to change its password)")
        account = await self.get(name)
        assert account is not None
        return account

    async def set_password(
        self, name: str, password: str, *, hasher: argon2.PasswordHasher | None = None
    ) -> int:
        """Set a user's password (creating the row for a config-only user); end their sessions.

        Returns the number of sessions ended. Raise KeyError for an unknown user.
        """
        check_password(name, password)
        account = await self.get(name)
        if account is None:
            raise KeyError(name)
        hashed = await anyio.to_thread.run_sync(hash_password, password, hasher)
        now = now_ms()

        def update(db: sqlite_utils.Database) -> int:
            if _row(db, name) is None:
                db.execute(
                    f"INSERT INTO {_USERS}"
                    " (name, password_hash, role, zones, created_ms, updated_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, hashed, str(account.role), json.dumps(sorted(account.zones)), now, now),
                )
            else:
                db.execute(
                    f"UPDATE {_USERS} SET password_hash = ?, updated_ms = ? WHERE name = ?",
                    (hashed, now, name),
                )
            return db.execute(f"DELETE FROM {_SESSIONS} WHERE user = ?", (name,)).rowcount

        return await self.store.call(update)

    async def remove(self, name: str) -> int:
        """Delete a user's row and sessions; return the sessions ended. KeyError if unknown."""

        def delete(db: sqlite_utils.Database) -> int | None:
            if _row(db, name) is None:
                return None
            db.execute(f"DELETE FROM {_USERS} WHERE name = ?", (name,))
            return db.execute(f"DELETE FROM {_SESSIONS} WHERE user = ?", (name,)).rowcount

        ended = await self.store.call(delete)
        if ended is None:
            raise KeyError(name)
        return ended

    async def authenticate(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is right, else None (same cost for unknown names)."""
        row = await self.store.call(lambda db: _row(db, name))
        stored = row["password_hash"] if row is not None else None
        if not await verify_password(stored, password) or row is None:
            return None
        return self._account(row, name)


def _row(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    rows = list(db.query(f"SELECT * FROM {_USERS} WHERE name = ?", [name]))
    return rows[0] if rows else None


# --------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """A logged-in browser: its user, its CSRF token and when it was last used."""

    id: str
    """The secret the cookie carries (only ever known in memory, never stored)."""
    digest: str
    account: Account
    csrf: str
    created_ms: int
    seen_ms: int
    ip: str = ""
    checked: float = field(default=0.0, compare=False)
    """When (monotonic) the store last confirmed the session and the account."""

    @property
    def user(self) -> User:
        """The user acting through this session."""
        return self.account.user

    def expires_ms(self, lifetime: float) -> int:
        """When the session ends if it stays unused."""
        return self.seen_ms + int(lifetime * 1000)


class Sessions:
    """Server-side sessions: created at login, found by cookie, ended by logout or idleness.

    Found sessions are cached in memory for ``recheck`` seconds, so most
    requests cost no database access; after that the row and the account are
    read again, which is how ``cityvisor users passwd|remove`` (another
    process) ends a session within seconds. ``seen_ms`` is written back at
    most every ``touch_every`` seconds. The cache holds at most ``max_cached``
    sessions (least recently used go first).
    """

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        lifetime: float,
        *,
        recheck: float = 5.0,
        touch_every: float = 60.0,
        max_cached: int = 10_000,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.lifetime = lifetime
        self.recheck = recheck
        self.touch_every = touch_every
        self.max_cached = max_cached
        self._cache: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    async def create(self, account: Account, ip: str) -> Session:
        """Start a session for ``account``; return it with its secret id and CSRF token."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = now_ms()
        digest = _digest(session_id)

        def insert(db: sqlite_utils.Database) -> None:
            db.execute(
                f"INSERT INTO {_SESSIONS} (digest, user, csrf, created_ms, seen_ms, ip)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest, account.name, csrf, now, now, ip),
            )
            db.execute(f"UPDATE {_USERS} SET last_login_ms = ? WHERE name = ?", (now, account.name))

        await self.store.call(insert)
        session = Session(session_id, digest, account, csrf, now, now, ip, time.monotonic())
        self._remember(session)
        return session

    def _remember(self, session: Session) -> None:
        self._cache[session.digest] = session
        self._cache.move_to_end(session.digest)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    async def find(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None (unknown, ended or expired)."""
        if not session_id or len(session_id) > 100:
            return None
        digest = _digest(session_id)
        now = now_ms()
        session = self._cache.get(digest)
        if session is not None and time.monotonic() - session.checked < self.recheck:
            if now >= session.expires_ms(self.lifetime):
                await self.end(session)
                return None
            self._cache.move_to_end(digest)
            await self._touch(session, now)
            return session
        row = await self.store.call(lambda db: _session_row(db, digest))
        if row is None:
            self._cache.pop(digest, None)
            return None
        seen = max(row["seen_ms"], session.seen_ms if session is not None else 0)
        if now >= seen + int(self.lifetime * 1000):
            await self.end_digest(digest)
            return None
        account = await self.accounts.get(row["user"])
        if account is None or not account.has_password:
            await self.end_digest(digest)
            return None
        session = Session(
            session_id,
            digest,
            account,
            row["csrf"],
            row["created_ms"],
            seen,
            row["ip"],
            time.monotonic(),
        )
        self._remember(session)
        await self._touch(session, now)
        return session

    async def _touch(self, session: Session, now: int) -> None:
        if now - session.seen_ms < self.touch_every * 1000:
            # Idle time is measured at this resolution: no database write per request.
            return
        session.seen_ms = now
        digest = session.digest
        await self.store.call(
            lambda db: db.execute(
                f"UPDATE {_SESSIONS} SET seen_ms = ? WHERE digest = ?", (now, digest)
            )
        )

    async def end(self, session: Session) -> None:
        """End a session (logout, expiry)."""
        await self.end_digest(session.digest)

    async def end_digest(self, digest: str) -> None:
        """End a session by the digest of its id."""
        self._cache.pop(digest, None)
        await self.store.call(
            lambda db: db.execute(f"DELETE FROM {_SESSIONS} WHERE digest = ?", (digest,))
        )

    async def still_valid(self, session: Session) -> bool:
        """Check a long-lived connection's session again (a WebSocket, every few seconds)."""
        return await self.find(session.id) is not None

    async def prune(self) -> int:
        """Delete sessions idle for longer than their lifetime; return how many."""
        cutoff = now_ms() - int(self.lifetime * 1000)
        for digest in [d for d, s in self._cache.items() if s.seen_ms < cutoff]:
            del self._cache[digest]
        return await self.store.call(
            lambda db: db.execute(f"DELETE FROM {_SESSIONS} WHERE seen_ms < ?", (cutoff,)).rowcount
        )


def _session_row(db: sqlite_utils.Database, digest: str) -> dict[str, Any] | None:
    rows = list(db.query(f"SELECT * FROM {_SESSIONS} WHERE digest = ?", [digest]))
    return rows[0] if rows else None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a secret a client sent with the expected one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
