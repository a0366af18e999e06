"""The journal's hash chain: written with each row, verified, migrated, and whole after kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from cityvisor.cli import main
from cityvisor.core.store import JournalEntry, SqliteStore, Store, verify_store
from cityvisor.core.store.chain import (
    GENESIS,
    ChainRow,
    columns,
    encode_columns,
    encode_columns_v1,
    row_hash,
)
from cityvisor.journal import EXIT_BROKEN

from .backends import Backend, PostgresBackend, SqliteBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """The store under test, on each backend."""
    async with backend.opened() as opened:
        yield opened


async def write_some(store: Store, count: int = 6) -> None:
    for n in range(count):
        await store.journal(JournalEntry(kind="command", message=f"order {n}", user="alice"))


def tamper(path: Path, *statements: str) -> None:
    """Change the file behind the store's back, as someone with the database could."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.anyio
async def test_every_kind_of_write_is_chained_and_the_chain_holds(store: Store, backend: Backend):
    await write_some(store, 3)
    await store.save_alarm_states(
        [("a1", {"state": "raised"}, JournalEntry(kind="alarm", message="raised", alarm="a1"))]
    )
    placeholder = await store.journal(JournalEntry(kind="command", message="bad \udc80 text"))
    assert "replaced" in placeholder.data
    state = await verify_store(store)
    assert state.ok, state.broken
    assert (state.rows, state.head_id) == (5, placeholder.id)
    first = backend.rows("SELECT prev_hash FROM journal ORDER BY id LIMIT 1")
    last = backend.rows("SELECT hash FROM journal ORDER BY id DESC LIMIT 1")
    assert first == [(GENESIS,)]
    assert last == [(state.head_hash,)]


@pytest.mark.anyio
async def test_the_hash_is_sha256_over_the_documented_encoding(store: Store):
    written = await store.journal(JournalEntry(kind="login", message="é", user="bob", ts=1000))
    row = (await store.journal_chain_rows(0))[0]
    assert row.id == written.id == 1
    expected = f"cityvisor-journal/2\n1\n1000\n5:login\n1:é\n3:bob\n-\n-\n-\n2:{{}}\n{GENESIS}"
    assert row.hash == hashlib.sha256(expected.encode()).hexdigest()


@pytest.mark.anyio
async def test_a_newline_in_a_text_cannot_pass_for_two_fields(store: Store, backend: Backend):
    # "a" / "b\n1:c" and "a\n1:b" / "c" would join to the same lines without the lengths.
    await store.journal(JournalEntry(kind="note", message="a", user="b\n1:c", ts=1000))
    await store.journal(JournalEntry(kind="note", message="a\n1:b", user="c", ts=1000))
    first, second = await store.journal_chain_rows(0)
    assert encode_columns(columns(first), GENESIS) != encode_columns(columns(second), GENESIS)
    backend.execute("""UPDATE journal SET message = 'a\n1:b', "user" = 'c' WHERE id = 1""")
    state = await verify_store(store)
    assert state.broken is not None and state.broken.id == 1


def _rechain_as_format_1(backend: Backend, upto: int) -> None:
    """Rewrite rows 1..``upto`` as an older store wrote them (format 1, JSON), the rest after."""
    rows = backend.rows(
        'SELECT id, ts, kind, message, "user", device, point, alarm, data FROM journal ORDER BY id'
    )
    prev = GENESIS
    updates = []
    for stored in rows:
        encoded = encode_columns_v1 if stored[0] <= upto else encode_columns
        digest = hashlib.sha256(encoded(tuple(stored), prev)).hexdigest()
        # Hex digests and integer ids only: safe as literals.
        updates.append(
            f"UPDATE journal SET prev_hash = '{prev}', hash = '{digest}' WHERE id = {stored[0]}"
        )
        prev = digest
    backend.execute(*updates)


@pytest.mark.anyio
async def test_format_1_rows_before_format_2_rows_verify(store: Store, backend: Backend):
    await write_some(store)
    _rechain_as_format_1(backend, upto=3)
    await write_some(store, 2)  # the store goes on in format 2 after the older rows
    state = await verify_store(store)
    assert state.ok, state.broken
    assert state.rows == 8


@pytest.mark.anyio
async def test_a_format_1_row_after_a_format_2_row_is_refused(store: Store, backend: Backend):
    await write_some(store)
    # Rows 1-3 in format 1, then 4-6 in format 2; now forge row 5 back in format 1.
    _rechain_as_format_1(backend, upto=3)
    (stored,) = backend.rows(
        'SELECT id, ts, kind, message, "user", device, point, alarm, data, prev_hash'
        " FROM journal WHERE id = 5"
    )
    digest = hashlib.sha256(encode_columns_v1(tuple(stored[:9]), stored[9])).hexdigest()
    backend.execute(f"UPDATE journal SET hash = '{digest}' WHERE id = 5")
    state = await verify_store(store)
    assert state.broken is not None
    assert (state.broken.id, state.rows) == (5, 4)


@pytest.mark.anyio
async def test_a_rolled_back_batch_leaves_the_chain_whole(store: Store, backend: Backend):
    await write_some(store, 2)
    # A trigger fails the batch's alarm-state write after its journal row went in.
    backend.refuse("alarm_state")
    entry = JournalEntry(kind="alarm", message="raised", alarm="a1")
    with pytest.raises(backend.error, match="disk says no"):
        await store.save_alarm_states([("a1", {"state": "raised"}, entry)])
    backend.allow("alarm_state")
    await write_some(store, 2)
    state = await verify_store(store)
    assert state.ok, state.broken
    assert (state.rows, state.head_id) == (4, 4)


@pytest.mark.anyio
async def test_an_edited_row_is_named(store: Store, backend: Backend):
    await write_some(store)
    backend.execute("UPDATE journal SET message = 'nothing happened' WHERE id = 4")
    state = await verify_store(store)
    assert state.broken is not None
    assert (state.broken.id, state.rows) == (4, 3)
    assert "edited" in state.broken.reason


@pytest.mark.anyio
async def test_an_edited_row_with_its_hash_recomputed_breaks_at_the_next_row(
    store: Store, backend: Backend
):
    await write_some(store)
    rows = await store.journal_chain_rows(0)
    forged = ChainRow(**{**_fields(rows[2]), "message": "nothing happened"})
    backend.execute(
        "UPDATE journal SET message = 'nothing happened',"
        f" hash = '{row_hash(forged, forged.prev_hash or '')}' WHERE id = 3",
    )
    state = await verify_store(store)
    assert state.broken is not None and state.broken.id == 4


def _fields(row: ChainRow) -> dict:
    return {name: getattr(row, name) for name in ChainRow.__dataclass_fields__}


@pytest.mark.anyio
async def test_a_deleted_row_is_named_by_the_row_after_it(store: Store, backend: Backend):
    await write_some(store)
    backend.execute("DELETE FROM journal WHERE id = 3")
    state = await verify_store(store)
    assert state.broken is not None
    assert (state.broken.id, state.rows) == (4, 2)
    assert "rows 3 to 3 are missing" in state.broken.reason


@pytest.mark.anyio
async def test_a_reordered_pair_is_named(store: Store, backend: Backend):
    await write_some(store)
    backend.execute(
        "UPDATE journal SET id = -1 WHERE id = 3",
        "UPDATE journal SET id = 3 WHERE id = 4",
        "UPDATE journal SET id = 4 WHERE id = -1",
    )
    state = await verify_store(store)
    assert state.broken is not None
    assert (state.broken.id, state.rows) == (3, 2)
    assert "reordered" in state.broken.reason


@pytest.mark.anyio
async def test_a_pair_whose_contents_were_swapped_is_named(store: Store, backend: Backend):
    await write_some(store)
    backend.execute(
        "UPDATE journal SET message = CASE id WHEN 2 THEN 'order 2' ELSE 'order 1' END"
        " WHERE id IN (2, 3)",
    )
    state = await verify_store(store)
    assert state.broken is not None and state.broken.id == 2


@pytest.mark.anyio
async def test_a_journal_written_before_the_chain_is_chained_once_at_upgrade(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE journal (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
            " kind TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', user TEXT, device TEXT,"
            " point TEXT, alarm TEXT, data TEXT NOT NULL DEFAULT '{}')"
        )
        for n in range(1, 4):
            conn.execute(
                "INSERT INTO journal (ts, kind, message) VALUES (?, 'ack', ?)", (n, f"old {n}")
            )
    for _ in range(2):  # the second open finds it chained: nothing more is written
        store = SqliteStore(path)
        await store.open()
        try:
            state = await verify_store(store)
            upgrades = await store.query_journal(kinds=["journal.chained"])
        finally:
            await store.close()
        assert state.ok and state.rows == 4
        assert [(e.id, e.data["rows"]) for e in upgrades] == [(4, 3)]
    store = SqliteStore(path)
    await store.open()
    try:
        await write_some(store, 1)
        assert (await verify_store(store)).rows == 5
    finally:
        await store.close()


WRITER = textwrap.dedent(
    """
    import sys, anyio
    from cityvisor.core.store import JournalEntry, SqliteStore

    def new_store():
        if sys.argv[1] == "sqlite":
            return SqliteStore(sys.argv[2])
        from cityvisor.core.store.postgres import PostgresStore
        return PostgresStore(sys.argv[2], sys.argv[3])

    async def main():
        store = new_store()
        await store.open()
        n = 0
        while True:
            n += 1
            if n % 3:
                await store.journal(JournalEntry(kind="command", message=f"order {n}"))
            else:
                entry = JournalEntry(kind="alarm", message=f"raised {n}", alarm=f"a{n}")
                await store.save_alarm_states([(f"a{n}", {"state": "raised"}, entry)] * 2)
            print(n, flush=True)

    anyio.run(main)
    """
)


def test_kill_9_during_writes_leaves_a_chain_that_holds(backend: Backend):
    if isinstance(backend, SqliteBackend):
        where = [str(backend.path)]
    else:
        assert isinstance(backend, PostgresBackend)
        where = [backend.dsn, str(backend.local)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    written = 0
    for round_ in range(3):  # each writer continues the chain the killed one left
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, backend.name, *where],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        for _ in range(50 + 37 * round_):  # a different point of the loop each time
            assert process.stdout.readline(), "the writer stopped by itself"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
        assert process.returncode == -signal.SIGKILL

        async def check() -> tuple[bool, int]:
            store = backend.new()
            await store.open()
            try:
                state = await verify_store(store)
            finally:
                await store.close()
            return state.ok, state.rows

        ok, rows = anyio.run(check)
        assert ok
        assert rows > written
        written = rows


def write_config(tmp_path: Path, db: Path) -> str:
    config = tmp_path / "city.toml"
    config.write_text(f'[site]\nname = "Dijon"\n\n[store]\npath = "{db}"\n')
    return str(config)


def test_journal_verify_says_ok_or_names_the_broken_row_and_exits_3(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    async def fill() -> None:
        async with backend.opened() as store:
            await write_some(store)

    anyio.run(fill)
    config = tmp_path / "city.toml"
    config.write_text(f'[site]\nname = "Dijon"\n\n{backend.store_section()}')
    assert main(["journal", "verify", "-c", str(config)]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 rows chained, head row 6 hash ")
    backend.execute("""UPDATE journal SET "user" = 'mallory' WHERE id = 2""")
    assert main(["journal", "verify", "-c", str(config)]) == EXIT_BROKEN
    assert "BROKEN at row 2: its content does not match its hash" in capsys.readouterr().out
    assert main(["journal", "verify", "-c", str(config), "--json"]) == EXIT_BROKEN
    assert '"id": 2' in capsys.readouterr().out


def test_journal_verify_of_a_missing_store_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    config = write_config(tmp_path, tmp_path / "nowhere.sqlite")
    assert main(["journal", "verify", "-c", config]) == 2
    assert "does not exist" in capsys.readouterr().err
