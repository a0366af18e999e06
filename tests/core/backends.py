"""The store backends the store tests run on: a SQLite file, and a fresh schema on PostgreSQL.

Each PostgreSQL test gets its own schema in the ``test`` database of the
server on 127.0.0.1:5432 (user ``postgres``, trust authentication), dropped
afterwards. When that server does not answer, the PostgreSQL tests fail
with a message saying so; ``CITYVISOR_SKIP_POSTGRES=1`` skips them instead
(for a machine without PostgreSQL, never in CI).
"""

from __future__ import annotations

import abc
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cityvisor.core.store import SqliteStore, Store

PG_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=test"
"""The PostgreSQL the tests use (CI starts it; see .ci/run)."""

SKIP_VARIABLE = "CITYVISOR_SKIP_POSTGRES"


class Backend(abc.ABC):
    """One place a store lives, and what a test does to it behind the store's back."""

    name: str
    error: type[Exception]
    """What a write refused by :meth:`refuse` raises."""

    @abc.abstractmethod
    def new(self, **options: Any) -> Store:
        """A store on this backend (not opened); every call opens the same database."""

    @contextlib.asynccontextmanager
    async def opened(self, **options: Any) -> AsyncIterator[Store]:
        """A store on this backend, opened, closed afterwards."""
        store = self.new(**options)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @abc.abstractmethod
    def execute(self, *statements: str) -> None:
        """Run statements on an independent connection, committed (as someone with the database)."""

    @abc.abstractmethod
    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """What an independent connection reads: only what is committed."""

    @abc.abstractmethod
    def refuse(self, table: str, key: str | None = None) -> None:
        """Make every insert into ``table`` (or of the row with this ``key``) fail, as a full disk would."""

    @abc.abstractmethod
    def allow(self, table: str) -> None:
        """Undo :meth:`refuse`."""

    @abc.abstractmethod
    def store_section(self) -> str:
        """The ``[store]`` section of a deployment file that uses this database."""


class SqliteBackend(Backend):
    """A SQLite file in the test's temporary directory."""

    name = "sqlite"
    error = sqlite3.IntegrityError

    def __init__(self, directory: Path) -> None:
        self.path = directory / "cityvisor.sqlite"

    def new(self, **options: Any) -> Store:
        return SqliteStore(self.path, **options)

    def execute(self, *statements: str) -> None:
        with sqlite3.connect(self.path) as conn:
            for statement in statements:
                conn.execute(statement)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql.replace("%s", "?"), args).fetchall()

    def refuse(self, table: str, key: str | None = None) -> None:
        when = "" if key is None else f" WHEN new.key = '{key}'"
        self.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}{when}"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )

    def allow(self, table: str) -> None:
        self.execute(f"DROP TRIGGER refuse_{table}")

    def store_section(self) -> str:
        return f'[store]\npath = "{self.path}"\n'


class PostgresBackend(Backend):
    """A fresh schema in the ``test`` database, dropped when the test ends."""

    name = "postgres"

    def __init__(self, directory: Path) -> None:
        try:
            import psycopg
        except ImportError:
            message = "the PostgreSQL driver is not installed: pip install -e '.[test]'"
            if os.environ.get(SKIP_VARIABLE) == "1":
                pytest.skip(message)
            pytest.fail(f"{message}\nor set {SKIP_VARIABLE}=1 to skip the PostgreSQL tests")
        self.psycopg = psycopg
        self.error = psycopg.errors.RaiseException
        self.schema = f"cv_{secrets.token_hex(6)}"
        self.dsn = f"{PG_SERVER} options='-c search_path={self.schema}'"
        self.local = directory / "local.sqlite"
        try:
            with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"CREATE SCHEMA {self.schema}")
        except psycopg.OperationalError as error:
            message = f"PostgreSQL ({PG_SERVER}) is not reachable: {error}".strip()
            if os.environ.get(SKIP_VARIABLE) == "1":
                pytest.skip(message)
            pytest.fail(f"{message}\nstart it (.ci/run does) or set {SKIP_VARIABLE}=1 to skip")

    def drop(self) -> None:
        with self.psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.schema} CASCADE")

    def new(self, **options: Any) -> Store:
        from cityvisor.core.store.postgres import PostgresStore

        return PostgresStore(self.dsn, self.local, **options)

    def execute(self, *statements: str) -> None:
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def refuse(self, table: str, key: str | None = None) -> None:
        when = "" if key is None else f" WHEN (NEW.key = '{key}')"
        self.execute(
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'disk says no'; END $$",
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}"
            f" FOR EACH ROW{when} EXECUTE FUNCTION refuse()",
        )

    def allow(self, table: str) -> None:
        self.execute(f"DROP TRIGGER refuse_{table} ON {table}")

    def store_section(self) -> str:
        return f'[store]\nbackend = "postgres"\npath = "{self.local}"\ndsn = "{self.dsn}"\n'


@contextlib.contextmanager
def make_backend(name: str, directory: Path) -> Iterator[Backend]:
    """The backend called ``name``, cleaned up afterwards."""
    if name == "sqlite":
        yield SqliteBackend(directory)
        return
    backend = PostgresBackend(directory)
    try:
        yield backend
    finally:
        backend.drop()
