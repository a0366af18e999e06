"""What only the PostgreSQL store has: the config that selects it, its secrets, one chain for many writers, partitions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cityvisor.core.config import ConfigError, load_config
from cityvisor.core.points import PointSpec, PointValue, Quality
from cityvisor.core.store import JournalEntry, StoreUnavailableError, verify_store
from cityvisor.core.store.postgres import PostgresStore, describe_dsn

from .backends import PostgresBackend, make_backend

DAY = 86_400_000
T0 = 1_790_000_000_000
MIDNIGHT = T0 - T0 % DAY
LEVEL = "dijon/lighting/cab-07/c1/level"


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresBackend]:
    """A fresh schema on the test server."""
    with make_backend("postgres", tmp_path) as backend:
        assert isinstance(backend, PostgresBackend)
        yield backend


def write(tmp_path: Path, store: str) -> str:
    config = tmp_path / "city.toml"
    config.write_text(f'[site]\nname = "Dijon"\n\n[store]\n{store}')
    return str(config)


# -- configuration ------------------------------------------------------------------


def test_the_postgres_backend_is_selected_with_a_dsn(tmp_path: Path):
    config = load_config(
        write(
            tmp_path,
            'backend = "postgres"\ndsn = "host=127.0.0.1 dbname=test user=postgres"\n'
            'path = "local.sqlite"\npartition = "month"\nhistory_buffer = 4000000\n',
        )
    )
    store = config.store.create_store(config.source)
    assert isinstance(store, PostgresStore)
    assert store.partition == "month" and store.local.path == tmp_path / "local.sqlite"
    assert store.max_pending == 4_000_000
    assert repr(store) == "<PostgresStore PostgreSQL host=127.0.0.1 dbname=test user=postgres>"


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ('backend = "postgres"\n', 'store.dsn: backend "postgres" needs a dsn'),
        ('dsn = "host=db"\n', 'store.dsn: a dsn is only read with backend = "postgres"'),
        ('backend = "postgres"\ndsn = "host=db = ="\n', "store.dsn: expected a libpq connection"),
        ('backend = "mysql"\n', "store.backend"),
        ('backend = "postgres"\ndsn = "host=db"\npartition = "week"\n', "store.partition"),
        (
            'backend = "postgres"\ndsn = "host=db"\npassword_env = "not a name"\n',
            "store.password_env: expected the name of an environment variable",
        ),
    ],
)
def test_a_bad_store_section_names_the_file_and_key(tmp_path: Path, store: str, expected: str):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, store))
    assert str(tmp_path / "city.toml") in str(raised.value)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    "dsn",
    ["host=db user=cv password=hunter2-secret", "postgresql://cv:hunter2-secret@db/cityvisor"],
)
def test_a_password_in_the_file_is_refused_and_never_repeated(tmp_path: Path, dsn: str):
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f'backend = "postgres"\ndsn = "{dsn}"\n'))
    assert "store.dsn: holds a password" in str(raised.value)
    assert "store.password_env" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_password_comes_from_the_environment_and_a_missing_one_is_named(tmp_path: Path):
    config = load_config(
        write(
            tmp_path,
            'backend = "postgres"\ndsn = "host=db user=cv"\npassword_env = "CV_PG_PASSWORD"\n',
        )
    )
    with pytest.raises(
        ConfigError, match=r"store\.password_env: environment variable CV_PG_PASSWORD"
    ):
        config.store.create_store(config.source, environ={})
    store = config.store.create_store(config.source, environ={"CV_PG_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(store) and "hunter2" not in repr(config)
    assert "hunter2" not in str(config.redacted())


@pytest.mark.anyio
async def test_an_unreachable_server_is_named_without_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    store = PostgresStore(
        "host=127.0.0.1 port=9 dbname=city user=cv connect_timeout=2",
        tmp_path / "local.sqlite",
        password="hunter2-secret",
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailableError) as raised:
        await store.open()
    message = str(raised.value)
    assert message.startswith(
        "PostgreSQL host=127.0.0.1 port=9 dbname=city user=cv: cannot connect"
    )
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert not (tmp_path / "local.sqlite").exists()


def test_journal_verify_against_an_unreachable_server_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from cityvisor.cli import main

    monkeypatch.setenv("CV_PG_PASSWORD", "hunter2-secret")
    config = write(
        tmp_path,
        'backend = "postgres"\ndsn = "host=127.0.0.1 port=9 user=cv connect_timeout=2"\n'
        'password_env = "CV_PG_PASSWORD"\n',
    )
    assert main(["journal", "verify", "-c", config]) == 2
    err = capsys.readouterr().err
    assert "[store] PostgreSQL host=127.0.0.1 port=9 user=cv: cannot connect" in err
    assert "hunter2" not in err


def test_describe_dsn_never_shows_a_password():
    assert describe_dsn("postgresql://cv:pw@db:5433/city") == (
        "PostgreSQL host=db port=5433 dbname=city user=cv"
    )
    assert "pw" not in describe_dsn("host=db password=pw")
    assert describe_dsn("= =") == "PostgreSQL (a connection string that does not parse)"


def test_the_sqlite_store_needs_no_postgresql_driver(tmp_path: Path):
    # psycopg is an optional dependency: a hub on SQLite runs without it installed.
    import subprocess
    import sys

    config = write(tmp_path, 'path = "city.sqlite"\nhistory_buffer = 5000\n')
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from cityvisor.core.config import load_config\n"
        "from cityvisor.core.hub import Hub\n"
        "from cityvisor.core.plugins import make_plugin_manager\n"
        f"config = load_config({config!r})\n"
        "hub = Hub(config, make_plugin_manager(builtins=(), entry_points=False))\n"
        "print(type(hub.store).__name__, hub.store.max_pending)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["SqliteStore", "5000"]


# -- one chain, many writers -----------------------------------------------------------


@pytest.mark.anyio
async def test_two_stores_on_one_database_write_one_chain(pg: PostgresBackend, tmp_path: Path):
    # A standby central and the active one, or a hub and `cityvisor users add`.
    first = PostgresStore(pg.dsn, tmp_path / "a.sqlite")
    second = PostgresStore(pg.dsn, tmp_path / "b.sqlite")
    await first.open()
    await second.open()
    try:

        async def writer(store: PostgresStore, name: str) -> None:
            for n in range(40):
                if n % 4:
                    await store.journal(JournalEntry(kind="command", message=f"{name} {n}"))
                else:
                    entry = JournalEntry(kind="alarm", message=f"{name} {n}", alarm=name)
                    await store.save_alarm_states([(name, {"n": n}, entry)] * 2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, first, "a")
            tg.start_soon(writer, second, "b")
        state = await verify_store(first)
        assert state.ok, state.broken
        assert state.rows == 2 * (30 + 10 * 2)
        assert await second.load_alarm_states() == {"a": {"n": 36}, "b": {"n": 36}}
    finally:
        await first.close()
        await second.close()


# -- partitions and retention --------------------------------------------------------------


def partitions(pg: PostgresBackend) -> list[str]:
    return [
        name
        for (name,) in pg.rows(
            "SELECT child.relname FROM pg_inherits JOIN pg_class child"
            " ON child.oid = pg_inherits.inhrelid"
            " WHERE pg_inherits.inhparent = 'history'::regclass ORDER BY 1"
        )
    ]


def change(value: float, ts: int) -> PointValue:
    return PointValue(LEVEL, value, Quality.GOOD, ts, ts)


@pytest.mark.anyio
async def test_partitions_are_created_on_demand_per_day_or_month(pg: PostgresBackend):
    async with pg.opened() as store:
        for day in range(3):
            store.record(change(float(day), MIDNIGHT + day * DAY + 5), PointSpec("level"))
        await store.flush_history()
    assert partitions(pg) == ["history_d20260921", "history_d20260922", "history_d20260923"]

    async with pg.opened(partition="month") as store:
        store.record(change(1.0, MIDNIGHT + 20 * DAY), PointSpec("level"))  # October
        store.record(change(2.0, MIDNIGHT + 21 * DAY), PointSpec("level"))
        await store.flush_history()
        values = await store.history(LEVEL, 0, MIDNIGHT + 30 * DAY)
    assert partitions(pg)[-1] == "history_m202610"
    assert [v.value for v in values] == [0.0, 1.0, 2.0, 1.0, 2.0]


@pytest.mark.anyio
async def test_retention_drops_whole_partitions_past_the_longest_class(pg: PostgresBackend):
    async with pg.opened(retention_days={"default": 2, "short": 1}) as store:
        for day in range(5):
            store.record(change(float(day), MIDNIGHT + day * DAY), PointSpec("level"))
        await store.flush_history()
        now = MIDNIGHT + 5 * DAY
        assert await store.prune(now) == 3  # days 0, 1 and 2 end at or before now - 2 days
        assert partitions(pg) == ["history_d20260924", "history_d20260925"]
        assert [v.value for v in await store.history(LEVEL, 0, now)] == [3.0, 4.0]


@pytest.mark.anyio
async def test_a_batch_over_rows_already_written_keeps_the_last_change(pg: PostgresBackend):
    async with pg.opened() as store:
        spec = PointSpec("level")
        for i in range(10):
            store.record(change(float(i), T0 + i), spec)
        await store.flush_history()
        # A replay: half the rows again with new values, and new rows, in one batch.
        for i in range(5, 15):
            store.record(change(100.0 + i, T0 + i), spec)
        store.record(change(999.0, T0 + 14), spec)
        assert await store.flush_history() == 10
        values = [v.value for v in await store.history(LEVEL, T0, T0 + 20)]
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0, *(100.0 + i for i in range(5, 14)), 999.0]


@pytest.mark.anyio
async def test_history_survives_a_lost_connection_and_is_written_after_reconnecting(
    pg: PostgresBackend,
):
    import psycopg

    async with pg.opened(flush_interval=0.05) as store:
        assert isinstance(store, PostgresStore)
        pid = store.conn.info.backend_pid
        # The server drops the store's connection (a restart, a failover).
        pg.execute(f"SELECT pg_terminate_backend({pid})")
        store.record(change(1.0, T0), PointSpec("level"))
        with pytest.raises(psycopg.OperationalError):
            await store.flush_history()
        assert store.history_pending == 1  # kept for the next flush
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            for _ in range(500):  # the flusher has no event to wait on: poll its counter
                await anyio.sleep(0.01)
                if store.history_written:
                    break
            tg.cancel_scope.cancel()
        assert [v.value for v in await store.history(LEVEL, T0, T0 + 1)] == [1.0]
        assert store.conn.info.backend_pid != pid
        assert (await store.journal(JournalEntry(kind="login"))).id == 1


def test_users_add_journals_in_postgresql_and_keeps_the_account_in_the_local_file(
    pg: PostgresBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    import contextlib
    import io
    import sqlite3
    import sys

    from cityvisor.cli import main

    config = tmp_path / "city.toml"
    config.write_text(
        f'[site]\nname = "Dijon"\n\n[[zones]]\nid = "centre"\nname = "Centre"\n\n'
        f"{pg.store_section()}"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long password\n"))
    argv = ["users", "add", "alice", "-c", str(config), "--role", "operator", "--zones", "centre"]
    assert main([*argv, "--password-stdin"]) == 0
    assert "added alice" in capsys.readouterr().out
    ((user_data,),) = pg.rows("SELECT data FROM journal WHERE kind = 'user'")
    assert "alice" in user_data and "a long password" not in user_data
    with contextlib.closing(sqlite3.connect(pg.local)) as local:
        tables = {name for (name,) in local.execute("SELECT name FROM sqlite_master")}
    assert "journal" not in tables  # the journal is in PostgreSQL only
    assert main(["journal", "verify", "-c", str(config)]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 rows chained")


@pytest.mark.anyio
async def test_two_stores_prune_one_database_without_tripping_on_each_other(
    pg: PostgresBackend, tmp_path: Path
):
    retention = {"default": 1.0}
    async with pg.opened(retention_days=retention) as first:
        for day in range(3):
            first.record(change(float(day), MIDNIGHT + day * DAY), PointSpec("level"))
        await first.flush_history()
        second = PostgresStore(pg.dsn, tmp_path / "b.sqlite", retention_days=retention)
        await second.open()
        try:
            now = MIDNIGHT + 3 * DAY
            assert await second.prune(now) == 2  # days 0 and 1
            assert await first.prune(now) == 0  # already gone: nothing to trip on
        finally:
            await second.close()
    assert partitions(pg) == ["history_d20260923"]


@pytest.mark.anyio
async def test_trends_on_postgresql_and_sqlite_agree_for_the_same_data(
    pg: PostgresBackend, tmp_path: Path
):
    import random

    from cityvisor.core.store import SqliteStore

    rng = random.Random(14)
    qualities = [Quality.GOOD] * 8 + [Quality.bad("comm_failure"), Quality.uncertain("stale")]
    samples = []
    ts = MIDNIGHT - 3 * 3_600_000  # across a partition boundary
    for _ in range(3000):
        ts += rng.randrange(1, 9000)
        value = rng.choice([float(rng.randrange(-50, 150)), rng.uniform(-1e3, 1e3), 0.0])
        samples.append(PointValue(LEVEL, value, rng.choice(qualities), ts, ts))
    sqlite = SqliteStore(tmp_path / "same.sqlite")
    await sqlite.open()
    try:
        async with pg.opened() as postgres:
            for store in (sqlite, postgres):
                for sample in samples:
                    store.record(sample, PointSpec("level"))
                await store.flush_history()
            start, end = samples[0].source_ts - 500, samples[-1].source_ts + 1
            for bucket in (1000, 60_000, 3_600_000, 86_400_000):
                ours = await postgres.history(LEVEL, start, end, bucket_ms=bucket)
                theirs = await sqlite.history(LEVEL, start, end, bucket_ms=bucket)
                assert len(ours) == len(theirs) > 0
                for a, b in zip(ours, theirs, strict=True):
                    assert (a.start, a.count, a.minimum, a.maximum, a.last) == (
                        b.start,
                        b.count,
                        b.minimum,
                        b.maximum,
                        b.last,
                    )
                    assert a.average == pytest.approx(b.average, rel=1e-12)
            raw_ours = await postgres.history(LEVEL, start, end)
            raw_theirs = await sqlite.history(LEVEL, start, end)
            assert [(v.source_ts, v.value, v.quality) for v in raw_ours] == [
                (v.source_ts, v.value, v.quality) for v in raw_theirs
            ]
    finally:
        await sqlite.close()


def test_a_hub_whose_database_does_not_answer_stops_with_one_line_not_a_traceback(
    tmp_path: Path,
):
    import os
    import subprocess
    import sys

    config = write(
        tmp_path,
        'backend = "postgres"\ndsn = "host=127.0.0.1 port=9 user=cv connect_timeout=2"\n'
        'password_env = "CV_PG_PASSWORD"\n\n[web]\nport = 0\n',
    )
    run = subprocess.run(
        [sys.executable, "-m", "cityvisor", "run", "-c", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CV_PG_PASSWORD": "hunter2-secret"},
    )
    assert run.returncode == 69  # EX_UNAVAILABLE: the service manager restarts it
    output = run.stdout + run.stderr
    assert "[store] PostgreSQL host=127.0.0.1 port=9 user=cv: cannot connect" in output
    assert "Traceback" not in output and "hunter2" not in output


@pytest.mark.anyio
async def test_changing_day_partitions_to_months_keeps_the_old_ones_and_writes_on(
    pg: PostgresBackend,
):
    spec = PointSpec("level")
    async with pg.opened() as store:  # days: 2026-09-21 to 23
        for day in range(3):
            store.record(change(float(day), MIDNIGHT + day * DAY), spec)
        await store.flush_history()
    async with pg.opened(partition="month") as store:
        store.record(change(3.0, MIDNIGHT + 1 * DAY + 5), spec)  # in an old day partition
        store.record(change(4.0, MIDNIGHT + 4 * DAY), spec)  # September 25: the rest of the month
        store.record(change(5.0, MIDNIGHT + 14 * DAY), spec)  # October 5: a whole month
        assert await store.flush_history() == 3
        values = [v.value for v in await store.history(LEVEL, 0, MIDNIGHT + 40 * DAY)]
    assert values == [0.0, 1.0, 3.0, 2.0, 4.0, 5.0]
    assert partitions(pg) == [
        "history_d20260921",
        "history_d20260922",
        "history_d20260923",
        "history_m20260924_7d",
        "history_m202610",
    ]
    async with pg.opened(partition="month", retention_days={"default": 1}) as store:
        # Reopened: the partitions are read back with their real bounds, and dropped by them.
        assert await store.prune(MIDNIGHT + 13 * DAY) == 5
        assert partitions(pg) == ["history_m202610"]
