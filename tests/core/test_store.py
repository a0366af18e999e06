"""SqliteStore: a durable journal, atomic alarm state, batched history and trends."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
import sqlite_utils

from cityvisor.core.points import PointSpec, PointValue, Quality
from cityvisor.core.store import JournalEntry, JournalScope, SqliteStore, TrendBucket

pytestmark = pytest.mark.anyio

LEVEL = "dijon/lighting/cab-07/c1/level"
DAY = 86_400_000
T0 = 1_790_000_000_000  # a fixed instant (2026-09-21), so buckets are predictable


def change(point_id: str, value: object, ts: int, quality: Quality = Quality.GOOD) -> PointValue:
    return PointValue(point_id, value, quality, ts, ts)


def spec(history: str = "default") -> PointSpec:
    return PointSpec("level", unit="%", history=history)


def other_connection(store: SqliteStore) -> sqlite3.Connection:
    """A second, independent connection: sees only what is committed to the file."""
    return sqlite3.connect(store.path)


# -- journal -------------------------------------------------------------------


async def test_a_journal_entry_is_in_the_file_when_journal_returns(store: SqliteStore):
    written = await store.journal(
        JournalEntry(kind="ack", message="acknowledged", user="alice", alarm="a1")
    )
    assert written.id is not None and written.ts > 0
    with other_connection(store) as conn:
        rows = conn.execute("SELECT id, kind, user FROM journal").fetchall()
    assert rows == [(written.id, "ack", "alice")]


async def test_the_database_is_in_wal_mode_with_full_sync(store: SqliteStore):
    with other_connection(store) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert await store.call(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2


async def fill_journal(store: SqliteStore) -> list[JournalEntry]:
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


async def test_query_journal_is_newest_first_and_filters(store: SqliteStore):
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


async def test_journal_search_matches_text_literally(store: SqliteStore):
    await fill_journal(store)
    # % and _ are LIKE wildcards: a search for them must find only themselves.
    assert [e.message for e in await store.query_journal(search="100%")] == ["100% of zone_b"]
    assert [e.message for e in await store.query_journal(search="e_b")] == ["100% of zone_b"]
    assert await store.query_journal(search="%") != []
    assert len(await store.query_journal(search="_")) == 2  # set_level, zone_b
    # data and device are searched too, case-insensitively.
    assert [e.kind for e in await store.query_journal(search="A_B.TOML")] == ["config"]
    assert [e.kind for e in await store.query_journal(search="door-")] == ["alarm"]


async def test_journal_pages_with_before_id(store: SqliteStore):
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


async def test_a_journal_scope_keeps_its_devices_zones_and_own_doings(store: SqliteStore):
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


async def test_journal_data_round_trips_as_json(store: SqliteStore):
    await store.journal(JournalEntry(kind="command", data={"level": 40.0, "circuits": [1, 2]}))
    (entry,) = await store.query_journal()
    assert entry.data == {"level": 40.0, "circuits": [1, 2]}


# -- alarm state ---------------------------------------------------------------


async def test_alarm_state_and_its_journal_entry_are_saved_together(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite")
    await store.open()
    entry = JournalEntry(kind="ack", user="alice", alarm="cab-07/lamp_failed")
    written = await store.save_alarm_state("cab-07/lamp_failed", {"state": "acked"}, entry)
    assert written is not None and written.id is not None
    with other_connection(store) as conn:
        assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM alarm_state").fetchone()[0] == 1
    await store.close()

    reopened = SqliteStore(tmp_path / "city.sqlite")
    await reopened.open()
    try:
        assert await reopened.load_alarm_states() == {"cab-07/lamp_failed": {"state": "acked"}}
        await reopened.save_alarm_state("cab-07/lamp_failed", None, JournalEntry(kind="alarm"))
        assert await reopened.load_alarm_states() == {}
        assert len(await reopened.query_journal()) == 2
    finally:
        await reopened.close()


async def test_a_failed_alarm_state_write_leaves_no_journal_entry(store: SqliteStore):
    def refuse_the_state(db: sqlite_utils.Database) -> None:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON alarm_state"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )

    await store.call(refuse_the_state)
    with pytest.raises(sqlite3.IntegrityError):
        await store.save_alarm_state("a1", {"state": "active"}, JournalEntry(kind="alarm"))
    assert await store.query_journal() == []
    assert await store.load_alarm_states() == {}
    # The store is still usable afterwards: no transaction was left open.
    await store.journal(JournalEntry(kind="login"))
    assert len(await store.query_journal()) == 1


async def test_many_alarm_states_are_saved_in_one_transaction(store: SqliteStore):
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

    def refuse_a3(db: sqlite_utils.Database) -> None:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON alarm_state WHEN new.key = 'a3'"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )

    await store.call(refuse_a3)
    with pytest.raises(sqlite3.IntegrityError):
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


async def count_history_rows(store: SqliteStore) -> int:
    with other_connection(store) as conn:
        return conn.execute("SELECT count(*) FROM history").fetchone()[0]


async def test_record_only_queues_until_a_flush(store: SqliteStore):
    store.record(change(LEVEL, 40.0, T0), spec())
    assert store.history_pending == 1
    assert await count_history_rows(store) == 0
    assert await store.flush_history() == 1
    assert store.history_pending == 0
    assert await count_history_rows(store) == 1


def test_record_works_without_an_open_database(tmp_path: Path):
    # record() is a listener on the field side: it must never touch the file.
    store = SqliteStore(tmp_path / "never-opened.sqlite")
    store.record(change(LEVEL, 40.0, T0), spec())
    assert store.history_pending == 1
    assert not store.path.exists()


async def test_run_writes_history_within_a_second(store: SqliteStore):
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.record(change(LEVEL, 40.0, T0), spec())
        started = anyio.current_time()
        for _ in range(100):  # the flusher has no event to wait on: poll the file
            await anyio.sleep(0.01)
            if await count_history_rows(store):
                break
        assert await count_history_rows(store) == 1
        assert anyio.current_time() - started <= 1.0
        tg.cancel_scope.cancel()
    assert store.history_written == 1


async def test_run_flushes_what_is_left_when_cancelled(store: SqliteStore):
    store.flush_interval = 3600.0
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.record(change(LEVEL, 40.0, T0), spec())
        tg.cancel_scope.cancel()
    assert await count_history_rows(store) == 1


async def test_close_writes_buffered_history(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite")
    await store.open()
    store.record(change(LEVEL, 40.0, T0), spec())
    await store.close()
    reopened = SqliteStore(tmp_path / "city.sqlite")
    await reopened.open()
    try:
        assert [v.value for v in await reopened.history(LEVEL, T0, T0 + 1)] == [40.0]
    finally:
        await reopened.close()


async def test_a_full_buffer_drops_the_oldest_changes_and_counts_them(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite", max_pending=5)
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


async def test_a_failed_history_write_is_kept_for_the_next_flush(store: SqliteStore):
    def refuse_history(db: sqlite_utils.Database) -> None:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON history"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )

    await store.call(refuse_history)
    store.record(change(LEVEL, 1.0, T0), spec())
    with pytest.raises(sqlite3.IntegrityError):
        await store.flush_history()
    assert store.history_pending == 1
    store.record(change("z/f/d/other", 2.0, T0 + 1), spec())

    await store.call(lambda db: db.execute("DROP TRIGGER refuse"))
    assert await store.flush_history() == 2
    assert [v.value for v in await store.history(LEVEL, T0, T0 + 1)] == [1.0]
    # The point key registered in the failed transaction was not kept: every
    # history row belongs to the point it was recorded for.
    with other_connection(store) as conn:
        rows = conn.execute(
            "SELECT history_point.id, value FROM history"
            " JOIN history_point ON history_point.key = history.point ORDER BY ts"
        ).fetchall()
    assert rows == [(LEVEL, 1.0), ("z/f/d/other", 2.0)]


async def test_a_value_sqlite_cannot_store_is_skipped_not_fatal(store: SqliteStore):
    counter = PointSpec("octets", history="default")
    store.record(change("z/switches/sw-1/port-01/octets", 2**64, T0), counter)
    store.record(change(LEVEL, 40.0, T0), spec())
    assert await store.flush_history() == 1
    assert store.history_rejected == 1
    assert store.history_pending == 0
    assert [v.value for v in await store.history(LEVEL, T0, T0 + 1)] == [40.0]


async def test_the_last_change_in_a_millisecond_wins(store: SqliteStore):
    store.record(change(LEVEL, 40.0, T0), spec())
    store.record(change(LEVEL, 41.0, T0, Quality.bad("comm_failure")), spec())
    await store.flush_history()
    store.record(change(LEVEL, 42.0, T0), spec())
    await store.flush_history()
    (value,) = await store.history(LEVEL, T0, T0 + 1)
    assert value.value == 42.0 and value.quality.is_good


async def test_the_none_history_class_records_nothing(store: SqliteStore):
    store.record(change(LEVEL, 40.0, T0), spec("none"))
    assert store.history_pending == 0
    assert await store.flush_history() == 0
    assert await count_history_rows(store) == 0


# -- history: queries --------------------------------------------------------------


async def test_raw_history_returns_values_with_their_quality(store: SqliteStore):
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


async def test_trend_gives_min_max_avg_last_per_bucket_from_good_values(store: SqliteStore):
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


async def test_trend_of_many_buckets_answers_in_one_query(store: SqliteStore):
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


async def test_history_rejects_an_empty_range_or_bucket(store: SqliteStore):
    with pytest.raises(ValueError):
        await store.history(LEVEL, T0, T0)
    with pytest.raises(ValueError):
        await store.history(LEVEL, T0, T0 + 1, bucket_ms=0)


# -- retention -----------------------------------------------------------------


async def test_prune_deletes_only_rows_past_their_class_retention(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite", retention_days={"short": 1, "default": 30})
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


async def test_a_point_that_changes_history_class_is_pruned_by_its_new_class(tmp_path: Path):
    path = tmp_path / "city.sqlite"
    store = SqliteStore(path, retention_days={"short": 1})
    await store.open()
    now = T0 + 100 * DAY
    store.record(change(LEVEL, 1.0, now - 2 * DAY), spec())
    await store.flush_history()
    store.record(change(LEVEL, 2.0, now), spec("short"))
    await store.close()

    reopened = SqliteStore(path, retention_days={"short": 1})
    await reopened.open()
    try:
        assert await reopened.prune(now) == 1
        assert [v.value for v in await reopened.history(LEVEL, 0, now + 1)] == [2.0]
    finally:
        await reopened.close()


# -- plugins' own tables -------------------------------------------------------------


async def test_call_runs_a_function_on_the_database_for_plugin_tables(tmp_path: Path):
    path = tmp_path / "city.sqlite"
    store = SqliteStore(path)
    await store.open()

    def add_badges(db: sqlite_utils.Database) -> int:
        db["access_badges"].insert_all(
            [{"badge": "04A1", "holder": "alice"}, {"badge": "04B2", "holder": "bob"}],
            pk="badge",
        )
        return db["access_badges"].count

    assert await store.call(add_badges) == 2
    await store.close()

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        holder = await reopened.call(lambda db: db["access_badges"].get("04B2")["holder"])
        assert holder == "bob"
    finally:
        await reopened.close()


async def test_call_before_open_is_an_error(tmp_path: Path):
    store = SqliteStore(tmp_path / "city.sqlite")
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
        (JournalEntry(kind=None, message="no kind"), ["kind"], "IntegrityError"),  # type: ignore[arg-type]
    ],
)
async def test_an_entry_that_cannot_be_written_is_replaced_by_a_placeholder_saying_why(
    store: SqliteStore, entry: JournalEntry, fields: list[str], error: str
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
    with sqlite3.connect(store.path) as db:  # what another reader finds in the file
        text = db.execute("SELECT data FROM journal WHERE id = ?", (written.id,)).fetchone()[0]
    assert "replaced" in text


async def test_a_placeholder_keeps_what_it_can_and_is_reported_on_the_event_loop(
    store: SqliteStore,
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


async def test_a_database_failure_is_raised_not_replaced(tmp_path: Path):
    store = SqliteStore(tmp_path / "closed.sqlite")
    await store.open()
    store.db.conn.close()  # the database, not the entry, is what fails now
    with pytest.raises(sqlite3.ProgrammingError):
        await store.journal(JournalEntry(kind="ack", message="\ud800"))
    assert store.journal_replaced == 0
    store._db = None


async def test_an_alarm_batch_with_one_bad_entry_is_written_whole(store: SqliteStore):
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
