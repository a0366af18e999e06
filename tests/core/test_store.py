"""The Store, on SQLite and on PostgreSQL: a durable journal, atomic alarm state, batched history and trends."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlite_utils

from cityvisor.core.points import PointSpec, PointValue, Quality
from cityvisor.core.store import (
    JournalEntry,
    JournalScope,
    SqliteStore,
    Store,
    TrendBucket,
    verify_store,
)

from .backends import Backend

pytestmark = pytest.mark.anyio

LEVEL = "dijon/lighting/cab-07/c1/level"
DAY = 86_400_000
T0 = 1_790_000_000_000  # a fixed instant (2026-09-21), so buckets are predictable


def change(point_id: str, value: object, ts: int, quality: Quality = Quality.GOOD) -> PointValue:
    return PointValue(point_id, value, quality, ts, ts)


def spec(history: str = "default") -> PointSpec:
    return PointSpec("level", unit="%", history=history)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """The store under test, on each backend, opened and closed around the test."""
    async with backend.opened(flush_interval=0.05) as opened:
        yield opened


# -- journal -------------------------------------------------------------------


async def test_a_journal_entry_is_committed_when_journal_returns(store: Store, backend: Backend):
    written = await store.journal(
        JournalEntry(kind="ack", message="acknowledged", user="alice", alarm="a1")
    )
    assert written.id is not None and written.ts > 0
    rows = backend.rows('SELECT id, kind, "user" FROM journal')
    assert rows == [(written.id, "ack", "alice")]


async def test_the_sqlite_file_is_in_wal_mode_with_full_sync(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite")
    await store.open()
    try:
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert await store.call(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        await store.close()


async def test_postgresql_commits_wait_for_the_servers_disk(tmp_path: Path):
    from cityvisor.core.store.postgres import PostgresStore

    from .backends import PostgresBackend, make_backend

    with make_backend("postgres", tmp_path) as backend:
        assert isinstance(backend, PostgresBackend)
        # A connection told synchronous_commit = off is overruled: the journal waits for the disk.
        dsn = backend.dsn.replace("options='", "options='-c synchronous_commit=off ")
        store = PostgresStore(dsn, backend.local)
        await store.open()
        try:
            setting = await store._run(
                lambda: store.conn.execute("SHOW synchronous_commit").fetchone()
            )
        finally:
            await store.close()
    assert setting == ("on",)


async def fill_journal(store: Store) -> list[JournalEntry]:
    entries = [
        JournalEntry(kind="alarm", message="lamp failure", device="cab-07", ts=T0 + 1),
        JournalEntry(kind="ack", message="seen", user="alice", device="cab-07", ts=T0 + 2),
        JournalEntry(
            kind="command", message="set_level 40", user="bob", device="cab-08", ts=T0 + 3
        ),
        JournalEntry(kind="login", message="alice logged in", user="alice", ts=T0 + 4),
        JournalEntry(kind="config", message="100% of zone_b", data={"file": "a_b.toml"}, ts=T0 + 5),
        JournalEntry(
            kind="alarm", message="door forced", device="door-3", alarm="forced", ts=T0 + 6
        ),
    ]
    return [await store.journal(entry) for entry in entries]


async def test_query_journal_is_newest_first_and_filters(store: Store):
    entries = await fill_journal(store)
    everything = await store.query_journal()
    assert [e.id for e in everything] == [e.id for e in reversed(entries)]

    async def messages(**filters: object) -> list[str]:
        return [e.message for e in await store.query_journal(**filters)]  # type: ignore[arg-type]

    assert await messages(kinds=["ack", "login"]) == ["alice logged in", "seen"]
    assert await messages(device="cab-07") == ["seen", "lamp failure"]
    assert await messages(user="alice") == ["alice logged in", "seen"]
    assert await messages(alarm="forced") == ["door forced"]
    assert await messages(since=T0 + 2, until=T0 + 4) == ["set_level 40", "seen"]
    assert await messages(kinds=["alarm"], device="door-3") == ["door forced"]


async def test_journal_search_matches_text_literally(store: Store):
    await fill_journal(store)
    # % and _ are LIKE wildcards: a search for them must find only themselves.
    assert [e.message for e in await store.query_journal(search="100%")] == ["100% of zone_b"]
    assert [e.message for e in await store.query_journal(search="e_b")] == ["100% of zone_b"]
    assert await store.query_journal(search="%") != []
    assert len(await store.query_journal(search="_")) == 2  # set_level, zone_b
    # data and device are searched too, case-insensitively.
    assert [e.kind for e in await store.query_journal(search="A_B.TOML")] == ["config"]
    assert [e.kind for e in await store.query_journal(search="door-")] == ["alarm"]


async def test_journal_pages_with_before_id(store: Store):
    for i in range(7):
        await store.journal(JournalEntry(kind="login", message=f"login {i}"))
    first = await store.query_journal(limit=3)
    second = await store.query_journal(limit=3, before_id=first[-1].id)
    third = await store.query_journal(limit=3, before_id=second[-1].id)
    pages = [[e.message for e in page] for page in (first, second, third)]
    assert pages == [
        ["login 6", "login 5", "login 4"],
        ["login 3", "login 2", "login 1"],
        ["login 0"],
    ]


async def test_a_journal_scope_keeps_its_devices_zones_and_own_doings(store: Store):
    for entry in (
        JournalEntry("command", "mine", user="nora", device="tank-b"),
        JournalEntry("command", "theirs", user="olivia", device="tank-a"),
        JournalEntry("login", "olivia logs in", user="olivia"),
        JournalEntry("login", "nora logs in", user="nora"),
        JournalEntry("flood", "nord floods", data={"zone": "nord"}),
        JournalEntry("flood", "centre floods", data={"zone": "centre"}),
        JournalEntry("config", "site-wide"),
        JournalEntry("command", "refused elsewhere", user="nora", device="tank-a"),
    ):
        await store.journal(entry)
    scope = JournalScope(devices=frozenset({"tank-b"}), zones=frozenset({"nord"}), user="nora")
    seen = await store.query_journal(scope=scope, limit=3)
    assert [e.message for e in seen] == ["refused elsewhere", "nord floods", "nora logs in"]
    page = await store.query_journal(scope=scope, before_id=seen[-1].id)
    assert [e.message for e in page] == ["mine"]
    assert len(await store.query_journal()) == 8


async def test_journal_data_round_trips_as_json(store: Store):
    await store.journal(JournalEntry(kind="command", data={"level": 40.0, "circuits": [1, 2]}))
    (entry,) = await store.query_journal()
    assert entry.data == {"level": 40.0, "circuits": [1, 2]}


# -- alarm state ---------------------------------------------------------------


async def test_alarm_state_and_its_journal_entry_are_saved_together(backend: Backend):
    store = backend.new()
    await store.open()
    entry = JournalEntry(kind="ack", user="alice", alarm="cab-07/lamp_failed")
    written = await store.save_alarm_state("cab-07/lamp_failed", {"state": "acked"}, entry)
    assert written is not None and written.id is not None
    assert backend.rows("SELECT count(*) FROM journal") == [(1,)]
    assert backend.rows("SELECT count(*) FROM alarm_state") == [(1,)]
    await store.close()

    reopened = backend.new()
    await reopened.open()
    try:
        assert await reopened.load_alarm_states() == {"cab-07/lamp_failed": {"state": "acked"}}
        await reopened.save_alarm_state("cab-07/lamp_failed", None, JournalEntry(kind="alarm"))
        assert await reopened.load_alarm_states() == {}
        assert len(await reopened.query_journal()) == 2
    finally:
        await reopened.close()


async def test_a_failed_alarm_state_write_leaves_no_journal_entry(store: Store, backend: Backend):
    backend.refuse("alarm_state")
    with pytest.raises(backend.error):
        await store.save_alarm_state("a1", {"state": "active"}, JournalEntry(kind="alarm"))
    assert await store.query_journal() == []
    assert await store.load_alarm_states() == {}
    # The store is still usable afterwards: no transaction was left open.
    await store.journal(JournalEntry(kind="login"))
    assert len(await store.query_journal()) == 1


async def test_many_alarm_states_are_saved_in_one_transaction(store: Store, backend: Backend):
    written = await store.save_alarm_states(
        [
            ("a1", {"state": "unack_active"}, JournalEntry(kind="alarm", alarm="a1")),
            (None, None, JournalEntry(kind="alarm", message="flood_started: dijon")),
            ("a2", {"state": "unack_active"}, None),
        ]
    )
    assert [e is not None and e.id is not None for e in written] == [True, True, False]
    assert set(await store.load_alarm_states()) == {"a1", "a2"}
    assert len(await store.query_journal()) == 2

    backend.refuse("alarm_state", key="a3")
    with pytest.raises(backend.error):
        await store.save_alarm_states(
            [
                ("a1", None, JournalEntry(kind="alarm", message="a1 cleared")),
                ("a3", {"state": "unack_active"}, JournalEntry(kind="alarm")),
            ]
        )
    # All or nothing: a1 was not deleted and no entry of the batch was journaled.
    assert set(await store.load_alarm_states()) == {"a1", "a2"}
    assert len(await store.query_journal()) == 2


# -- history: batching -----------------------------------------------------------


async def count_history_rows(backend: Backend) -> int:
    ((count,),) = backend.rows("SELECT count(*) FROM history")
    return int(count)


async def test_record_only_queues_until_a_flush(store: Store, backend: Backend):
    store.record(change(LEVEL, 40.0, T0), spec())
    assert store.history_pending == 1  # type: ignore[attr-defined]
    assert await count_history_rows(backend) == 0
    assert await store.flush_history() == 1
    assert store.history_pending == 0  # type: ignore[attr-defined]
    assert await count_history_rows(backend) == 1


def test_record_works_without_an_open_database(backend: Backend, tmp_path: Path):
    # record() is a listener on the field side: it must never touch the database.
    store = backend.new()
    store.record(change(LEVEL, 40.0, T0), spec())
    assert store.history_pending == 1  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []  # no file created, no table either
    if backend.name == "postgres":
        assert backend.rows("SELECT to_regclass('history')") == [(None,)]


async def test_run_writes_history_within_a_second(store: Store, backend: Backend):
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.record(change(LEVEL, 40.0, T0), spec())
        started = anyio.current_time()
        for _ in range(100):  # the flusher has no event to wait on: poll the file
            await anyio.sleep(0.01)
            if await count_history_rows(backend):
                break
        assert await count_history_rows(backend) == 1
        assert anyio.current_time() - started <= 1.0
        tg.cancel_scope.cancel()
    assert store.history_written == 1  # type: ignore[attr-defined]


async def test_run_flushes_what_is_left_when_cancelled(store: Store, backend: Backend):
    store.flush_interval = 3600.0  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.record(change(LEVEL, 40.0, T0), spec())
        tg.cancel_scope.cancel()
    assert await count_history_rows(backend) == 1


async def test_close_writes_buffered_history(backend: Backend):
    store = backend.new()
    await store.open()
    store.record(change(LEVEL, 40.0, T0), spec())
    await store.close()
    reopened = backend.new()
    await reopened.open()
    try:
        assert [v.value for v in await reopened.history(LEVEL, T0, T0 + 1)] == [40.0]
    finally:
        await reopened.close()


async def test_a_full_buffer_drops_the_oldest_changes_and_counts_them(backend: Backend):
    store: Any = backend.new(max_pending=5)
    await store.open()
    try:
        for i in range(8):
            store.record(change(LEVEL, float(i), T0 + i), spec())
        assert store.history_pending == 5
        assert store.history_dropped == 3
        await store.flush_history()
        kept = [v.value for v in await store.history(LEVEL, T0, T0 + 10)]
        assert kept == [3.0, 4.0, 5.0, 6.0, 7.0]
    finally:
        await store.close()


async def test_a_failed_history_write_is_kept_for_the_next_flush(store: Any, backend: Backend):
    store.record(change(LEVEL, 0.5, T0 - 1), spec())
    await store.flush_history()  # the history table (and its partition) exist
    backend.refuse("history")
    store.record(change(LEVEL, 1.0, T0), spec())
    store.record(change("z/f/d/first", 1.5, T0), spec())
    with pytest.raises(backend.error):
        await store.flush_history()
    assert store.history_pending == 2
    store.record(change("z/f/d/other", 2.0, T0 + 1), spec())

    backend.allow("history")
    assert await store.flush_history() == 3
    assert [v.value for v in await store.history(LEVEL, T0, T0 + 1)] == [1.0]
    # The point key registered in the failed transaction was not kept: every
    # history row belongs to the point it was recorded for.
    value = "value" if backend.name == "sqlite" else "number"
    rows = backend.rows(
        f"SELECT history_point.id, {value} FROM history"
        " JOIN history_point ON history_point.key = history.point ORDER BY ts, history_point.id"
    )
    assert rows == [(LEVEL, 0.5), (LEVEL, 1.0), ("z/f/d/first", 1.5), ("z/f/d/other", 2.0)]


async def test_a_value_the_database_cannot_store_is_skipped_not_fatal(store: Any):
    counter = PointSpec("octets", history="default")
    store.record(change("z/switches/sw-1/port-01/octets", 2**64, T0), counter)
    store.record(change(LEVEL, 40.0, T0), spec())
    assert await store.flush_history() == 1
    assert store.history_rejected == 1
    assert store.history_pending == 0
    assert [v.value for v in await store.history(LEVEL, T0, T0 + 1)] == [40.0]


async def test_the_last_change_in_a_millisecond_wins(store: Store):
    store.record(change(LEVEL, 40.0, T0), spec())
    store.record(change(LEVEL, 41.0, T0, Quality.bad("comm_failure")), spec())
    await store.flush_history()
    store.record(change(LEVEL, 42.0, T0), spec())
    await store.flush_history()
    (value,) = await store.history(LEVEL, T0, T0 + 1)
    assert value.value == 42.0 and value.quality.is_good


async def test_the_none_history_class_records_nothing(store: Any, backend: Backend):
    store.record(change(LEVEL, 40.0, T0), spec("none"))
    assert store.history_pending == 0
    assert await store.flush_history() == 0
    if backend.name == "sqlite":  # PostgreSQL has no history partition to count in yet
        assert await count_history_rows(backend) == 0


# -- history: queries --------------------------------------------------------------


async def test_raw_history_returns_values_with_their_quality(store: Store):
    store.record(change(LEVEL, 10.0, T0), spec())
    store.record(change(LEVEL, 10.0, T0 + 5, Quality.bad("comm_failure")), spec())
    store.record(change(LEVEL, 20.0, T0 + 9), spec())
    store.record(change(LEVEL, 30.0, T0 + 10), spec())  # the range's end is excluded
    await store.flush_history()
    values = await store.history(LEVEL, T0, T0 + 10)
    assert [(v.source_ts - T0, v.value, v.quality) for v in values] == [
        (0, 10.0, Quality.GOOD),
        (5, 10.0, Quality.bad("comm_failure")),
        (9, 20.0, Quality.GOOD),
    ]
    assert len(await store.history(LEVEL, T0, T0 + 10, limit=2)) == 2
    assert await store.history("z/f/d/unknown", T0, T0 + 10) == []


async def test_trend_gives_min_max_avg_last_per_bucket_from_good_values(store: Store):
    samples = [
        (0, 10.0, Quality.GOOD),
        (20, 30.0, Quality.GOOD),
        (40, 20.0, Quality.GOOD),
        (50, 99.0, Quality.bad("sensor_failure")),  # not trusted: not aggregated
        (120, 5.0, Quality.GOOD),  # bucket 2 (bucket 1 has no value and is left out)
        (150, 7.0, Quality.uncertain("stale")),  # not aggregated either
        (170, 9.0, Quality.GOOD),
    ]
    for offset, value, quality in samples:
        store.record(change(LEVEL, value, T0 + offset, quality), spec())
    await store.flush_history()
    trend = await store.history(LEVEL, T0, T0 + 240, bucket_ms=60)
    assert trend == [
        TrendBucket(start=T0, count=3, minimum=10.0, maximum=30.0, average=20.0, last=20.0),
        TrendBucket(start=T0 + 120, count=2, minimum=5.0, maximum=9.0, average=7.0, last=9.0),
    ]


async def test_trend_of_many_buckets_answers_in_one_query(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite")
    await store.open()
    for i in range(600):
        store.record(change(LEVEL, float(i % 7), T0 + i * 1000), spec())
    await store.flush_history()
    statements: list[str] = []
    await store.call(lambda db: db.conn.set_trace_callback(statements.append))
    trend = await store.history(LEVEL, T0, T0 + 600_000, bucket_ms=60_000)
    await store.call(lambda db: db.conn.set_trace_callback(None))
    assert len(trend) == 10 and all(bucket.count == 60 for bucket in trend)
    assert trend[0].last == float(59 % 7)
    assert len(statements) == 1
    await store.close()


async def test_a_trend_on_postgresql_reads_only_the_partitions_of_its_range(tmp_path: Path):
    from .backends import make_backend

    with make_backend("postgres", tmp_path) as backend:
        async with backend.opened() as store:
            for day in range(5):  # five daily partitions
                store.record(change(LEVEL, float(day), T0 + day * DAY), spec())
            await store.flush_history()
            midnight = T0 - T0 % DAY  # partitions are UTC days
            trend = await store.history(
                LEVEL, midnight + 2 * DAY, midnight + 3 * DAY, bucket_ms=3600_000
            )
            partitions = backend.rows(
                "SELECT child.relname FROM pg_inherits JOIN pg_class child"
                " ON child.oid = pg_inherits.inhrelid"
                " WHERE pg_inherits.inhparent = 'history'::regclass ORDER BY 1"
            )
            plan = backend.rows(
                "EXPLAIN SELECT count(*) FROM history WHERE point = 1"
                f" AND ts >= {midnight + 2 * DAY} AND ts < {midnight + 3 * DAY}"
            )
    assert [bucket.last for bucket in trend] == [2.0]
    assert len(partitions) == 5
    scanned = [name for (name,) in partitions if any(name in line for (line,) in plan)]
    assert len(scanned) == 1


async def test_history_rejects_an_empty_range_or_bucket(store: Store):
    with pytest.raises(ValueError):
        await store.history(LEVEL, T0, T0)
    with pytest.raises(ValueError):
        await store.history(LEVEL, T0, T0 + 1, bucket_ms=0)


# -- retention -----------------------------------------------------------------


async def test_prune_deletes_only_rows_past_their_class_retention(backend: Backend):
    store = backend.new(retention_days={"short": 1, "default": 30})
    await store.open()
    try:
        now = T0 + 100 * DAY
        short, long = "z/f/d/fast", "z/f/d/slow"
        for point_id, klass in ((short, "short"), (long, "default")):
            for age in (40 * DAY, 2 * DAY, DAY // 2):
                store.record(change(point_id, float(age), now - age), spec(klass))
        await store.flush_history()
        assert await store.prune(now) == 3  # short: 40 d and 2 d; default: 40 d
        assert [now - v.source_ts for v in await store.history(short, 0, now)] == [DAY // 2]
        assert [now - v.source_ts for v in await store.history(long, 0, now)] == [
            2 * DAY,
            DAY // 2,
        ]
        assert await store.prune(now) == 0
    finally:
        await store.close()


async def test_a_point_that_changes_history_class_is_pruned_by_its_new_class(backend: Backend):
    store = backend.new(retention_days={"short": 1})
    await store.open()
    now = T0 + 100 * DAY
    store.record(change(LEVEL, 1.0, now - 2 * DAY), spec())
    await store.flush_history()
    store.record(change(LEVEL, 2.0, now), spec("short"))
    await store.close()

    reopened = backend.new(retention_days={"short": 1})
    await reopened.open()
    try:
        assert await reopened.prune(now) == 1
        assert [v.value for v in await reopened.history(LEVEL, 0, now + 1)] == [2.0]
    finally:
        await reopened.close()


# -- plugins' own tables -------------------------------------------------------------


async def test_call_runs_a_function_on_the_database_for_plugin_tables(backend: Backend):
    store = backend.new()
    await store.open()

    def add_badges(db: sqlite_utils.Database) -> int:
        db["access_badges"].insert_all(
            [{"badge": "04A1", "holder": "alice"}, {"badge": "04B2", "holder": "bob"}],
            pk="badge",
        )
        return db["access_badges"].count

    assert await store.call(add_badges) == 2
    await store.close()

    reopened = backend.new()
    await reopened.open()
    try:
        holder = await reopened.call(lambda db: db["access_badges"].get("04B2")["holder"])
        assert holder == "bob"
    finally:
        await reopened.close()


async def test_call_before_open_is_an_error(backend: Backend):
    store = backend.new()
    with pytest.raises(RuntimeError, match="not open"):
        await store.call(lambda db: db.table_names())


# -- entries that cannot be written as sent ------------------------------------


class Circular(dict):
    """Data that refers to itself: JSON cannot hold it."""


@pytest.mark.parametrize(
    ("entry", "fields", "error"),
    [
        (JournalEntry(kind="ack", message="seen \ud83d", user="alice"), ["message"], "Unicode"),
        (JournalEntry(kind="login", message="x", user="\udcff"), ["user"], "Unicode"),
        (
            JournalEntry(kind="command", message="big", data={"arguments": {"n": 10**5000}}),
            ["data"],
            "ValueError",
        ),
        (JournalEntry(kind="alarm", message="late", ts=10**20), ["ts"], "Overflow"),
        (JournalEntry(kind=None, message="no kind"), ["kind"], "kind"),  # type: ignore[arg-type]
    ],
)
async def test_an_entry_that_cannot_be_written_is_replaced_by_a_placeholder_saying_why(
    store: Any, backend: Backend, entry: JournalEntry, fields: list[str], error: str
):
    written = await store.journal(entry)
    after = await store.journal(JournalEntry(kind="ack", message="the next one"))
    assert written.id is not None and after.id == written.id + 1
    (stored, next_one) = reversed(await store.query_journal(limit=2))
    assert stored.id == written.id and next_one.message == "the next one"
    replaced = stored.data["replaced"]
    assert error in replaced["reason"]
    assert set(fields) <= set(replaced["fields"])
    assert store.journal_replaced == 1
    # What another reader finds in the database.
    ((text,),) = backend.rows("SELECT data FROM journal WHERE id = %s", written.id)
    assert "replaced" in text


async def test_a_nul_character_is_stored_or_replaced_never_fatal(store: Store, backend: Backend):
    # SQLite keeps it; PostgreSQL text cannot hold one: a placeholder says so.
    written = await store.journal(JournalEntry(kind="ack", message="seen\x00", user="a\x00"))
    after = await store.journal(JournalEntry(kind="ack", message="the next one"))
    assert after.id == (written.id or 0) + 1
    (stored, _) = reversed(await store.query_journal(limit=2))
    if backend.name == "sqlite":
        assert stored.message == "seen\x00"
    else:
        assert (stored.message, stored.user) == ("seen\\x00", "a\\x00")
        assert stored.data["replaced"]["fields"] == ["message", "user"]
    assert (await verify_store(store)).ok


async def test_a_placeholder_keeps_what_it_can_and_is_reported_on_the_event_loop(
    store: Any,
):
    reports: list[tuple[int, str]] = []
    store.on_journal_replaced = lambda count, reason: reports.append((count, reason))
    data = Circular(comment="ok")
    data["self"] = data
    written = await store.journal(
        JournalEntry(kind="ack", message="seen \ud800", user="alice", alarm="a1", data=data)
    )
    await store.journal(JournalEntry(kind="ack", message="fine"))
    assert written.message == "seen \\ud800" and written.user == "alice"
    assert written.alarm == "a1" and written.kind == "ack"
    assert written.data["comment"] == "ok" and written.data["replaced"]["fields"] == [
        "message",
        "data",
    ]
    assert [count for count, _ in reports] == [1]


async def test_a_database_failure_is_raised_not_replaced(backend: Backend):
    store: Any = backend.new()
    await store.open()
    # The database, not the entry, is what fails now.
    if backend.name == "sqlite":
        store.db.conn.close()
        failure: type[Exception] = sqlite3.ProgrammingError
    else:
        # (A connection the server dropped is reopened by the next call: refuse instead.)
        backend.refuse("journal")
        failure = backend.error
    with pytest.raises(failure):
        await store.journal(JournalEntry(kind="ack", message="\ud800"))
    assert store.journal_replaced == 0
    if backend.name == "sqlite":
        store._db = None
    else:
        assert await store.query_journal() == []
        await store.close()


async def test_an_alarm_batch_with_one_bad_entry_is_written_whole(store: Store):
    written = await store.save_alarm_states(
        [
            (
                "a1",
                {"comment": "\ud800", "n": 10**5000},
                JournalEntry(kind="ack", message="\ud800"),
            ),
            ("a2", {"comment": "fine"}, JournalEntry(kind="ack", message="fine")),
        ]
    )
    assert [w.message for w in written if w is not None] == ["\\ud800", "fine"]
    states = await store.load_alarm_states()
    assert set(states) == {"a1", "a2"} and states["a2"] == {"comment": "fine"}
