"""History on PostgreSQL: rows per second through the store against a raw COPY, and bytes per row.

Measured, interleaved in one run (rounds of store and raw taking turns to go
first, so that a change in the machine's load touches both alike):

- the **raw baseline**: the same rows, already as (key, ts, number, text,
  quality) tuples, copied with psycopg's binary ``COPY`` into a table of
  the same shape (partitioned by day on ``ts``, primary key (point, ts)),
  one transaction per batch;
- **through the store**: ``PostgresStore.record()`` for each change (what
  the point database's listener calls) then ``flush_history()``: the
  bounded buffer, the last-change-per-millisecond rule, the value columns,
  partitions on demand, point keys, and the same binary ``COPY``.

Each round writes ``--points`` points times ``--changes`` changes (new
timestamps each round: the normal case, no row already there). Each round
also writes ``--journal`` journal entries one by one, each committed, through
``PostgresStore.journal()`` (advisory lock, head, hash, insert) against raw
psycopg inserts of the same rows, one committed transaction each. The disk
figure is ``pg_total_relation_size`` (table and primary key) of the store's
partitions divided by their rows, after the run.

Run ``python -m bench.pg_history`` from the repository root against the
PostgreSQL on 127.0.0.1:5432 (about a minute), or ``--quick`` for a
few-second smoke run. A fresh schema is created and dropped. Results are
written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg

from cityvisor.core.points import PointSpec, PointValue, Quality
from cityvisor.core.store import JournalEntry
from cityvisor.core.store.postgres import PostgresStore

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000  # a UTC midnight
SPEC = PointSpec("level", unit="%")


def changes(points: int, per_point: int, start: int) -> list[PointValue]:
    """``points`` x ``per_point`` changes, one a second per point from ``start``."""
    ids = [f"dijon/lighting/cab-{p // 4:05d}/c{p % 4}/level" for p in range(points)]
    values = []
    for n in range(per_point):
        ts = start + n * 1000
        values.extend(PointValue(i, float(n % 101), Quality.GOOD, ts, ts) for i in ids)
    return values


async def through_store(store: PostgresStore, values: list[PointValue]) -> float:
    """Rows per second: record every change, then one flush."""
    started = time.perf_counter()
    record = store.record
    for value in values:
        record(value, SPEC)
    written = await store.flush_history()
    elapsed = time.perf_counter() - started
    assert written == len(values), (written, len(values))
    return written / elapsed


def raw_copy(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> float:
    """Rows per second: one binary COPY of ready tuples, one transaction."""
    started = time.perf_counter()
    with (
        conn.transaction(),
        conn.cursor() as cursor,
        cursor.copy(
            "COPY raw_history (point, ts, number, text, quality) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int4", "int8", "float8", "text", "text"])
        for row in rows:
            copy.write_row(row)
    return len(rows) / (time.perf_counter() - started)


async def journal_through_store(store: PostgresStore, count: int) -> float:
    """Entries per second, one ``journal()`` call (one committed transaction) each."""
    started = time.perf_counter()
    for number in range(count):
        await store.journal(
            JournalEntry(
                kind="command",
                message=f"set_level on cab-07: succeeded ({number})",
                user="bench",
                device="cab-07",
                data={"command": "set_level", "arguments": {"level": 40}},
            )
        )
    return count / (time.perf_counter() - started)


def journal_raw(conn: psycopg.Connection[Any], count: int, first: int) -> float:
    """Rows per second: one committed INSERT each, straight through psycopg, no chain."""
    data = '{"command": "set_level", "arguments": {"level": 40}}'
    started = time.perf_counter()
    for number in range(first, first + count):
        with conn.transaction():
            conn.execute(
                'INSERT INTO raw_journal (id, ts, kind, message, "user", device, data)'
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    number,
                    number,
                    "command",
                    f"set_level on cab-07: succeeded ({number})",
                    "bench",
                    "cab-07",
                    data,
                ),
            )
    return count / (time.perf_counter() - started)


def prepare_raw(conn: psycopg.Connection[Any], days: int) -> None:
    conn.execute(
        "CREATE TABLE raw_journal (id bigint PRIMARY KEY, ts bigint NOT NULL, kind text NOT NULL,"
        " message text NOT NULL DEFAULT '', \"user\" text, device text, point text, alarm text,"
        " data text NOT NULL DEFAULT '{}', prev_hash text, hash text)"
    )
    conn.execute(
        "CREATE TABLE raw_history (point integer NOT NULL, ts bigint NOT NULL,"
        " number double precision, text text, quality text NOT NULL DEFAULT '',"
        " PRIMARY KEY (point, ts)) PARTITION BY RANGE (ts)"
    )
    for day in range(days):
        start = T0 + day * 86_400_000
        conn.execute(
            f"CREATE TABLE raw_history_{day} PARTITION OF raw_history"
            f" FOR VALUES FROM ({start}) TO ({start + 86_400_000})"
        )


async def measure(
    dsn: str, local: Path, points: int, per_point: int, rounds: int, entries: int
) -> dict[str, Any]:
    span = per_point * 1000 + 1000  # ms one round covers
    days = (rounds + 1) * span // 86_400_000 + 1
    store = PostgresStore(dsn, local, max_pending=points * per_point * 2)
    await store.open()
    raw = psycopg.connect(dsn, autocommit=True)
    figures: dict[str, list[float]] = {"store": [], "raw": [], "journal": [], "journal_raw": []}
    try:
        prepare_raw(raw, days)
        order = ["store", "raw"]
        for round_ in range(rounds + 1):  # round 0 warms up (partitions, point keys)
            start = T0 + round_ * span
            values = changes(points, per_point, start)
            keys = {}
            rows = []
            for value in values:
                key = keys.setdefault(value.id, len(keys) + 1)
                rows.append((key, value.source_ts, value.value, None, ""))
            for which in order:
                if which == "store":
                    rate = await through_store(store, values)
                    journal = await journal_through_store(store, entries)
                else:
                    rate = raw_copy(raw, rows)
                    journal = journal_raw(raw, entries, round_ * entries)
                if round_:
                    figures[which].append(rate)
                    figures["journal" if which == "store" else "journal_raw"].append(journal)
            order.reverse()
        size, count = raw.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)), (SELECT count(*) FROM history)"
            " FROM pg_inherits WHERE inhparent = 'history'::regclass"
        ).fetchone() or (0, 0)
        heap = raw.execute(
            "SELECT sum(pg_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'history'::regclass"
        ).fetchone()
    finally:
        raw.close()
        await store.close()
    return {**figures, "bytes": int(size), "heap": int(heap[0] if heap else 0), "rows": int(count)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    parser.add_argument("--points", type=int, default=5000, help="points per round")
    parser.add_argument("--changes", type=int, default=20, help="changes per point per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--journal", type=int, default=300, help="journal entries per round")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 1,000 x 5, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.changes, args.rounds, args.journal = 1000, 5, 3, 50
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with psycopg.connect(args.server, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()
        schema = f"bench_{secrets.token_hex(4)}"
        admin.execute(f"CREATE SCHEMA {schema}")
    print(
        f"python {platform.python_version()}, psycopg {psycopg.__version__},"
        f" PostgreSQL {version[0] if version else '?'}, load average {load:.2f}"
    )
    dsn = f"{args.server} options='-c search_path={schema}'"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = anyio.run(
                measure,
                dsn,
                Path(tmp) / "local.sqlite",
                args.points,
                args.changes,
                args.rounds,
                args.journal,
            )
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    rows = args.points * args.changes
    raw = statistics.median(result["raw"])
    store = statistics.median(result["store"])
    print(f"medians of {args.rounds} interleaved rounds of {rows:,} rows ({args.points:,} points)")
    print(f"{'raw baseline: binary COPY of ready tuples':<44} {raw:>10,.0f} rows/s")
    print(
        f"{'store: record() + flush_history()':<44} {store:>10,.0f} rows/s {store / raw:>6.2f} x baseline"
    )
    journal_raw_rate = statistics.median(result["journal_raw"])
    journal_rate = statistics.median(result["journal"])
    print(f"{'raw baseline: psycopg INSERT, 1 commit each':<44} {journal_raw_rate:>10,.0f} rows/s")
    print(
        f"{'store: journal(), chained, 1 commit each':<44} {journal_rate:>10,.0f} rows/s"
        f" {journal_rate / journal_raw_rate:>6.2f} x baseline"
    )
    per_row = result["bytes"] / max(1, result["rows"])
    heap = result["heap"] / max(1, result["rows"])
    print(
        f"disk: {per_row:.1f} bytes/row with the primary key ({heap:.1f} table alone),"
        f" {result['rows']:,} rows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
