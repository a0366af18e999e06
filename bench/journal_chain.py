"""The cost of the journal's hash chain: journal rows per second with and without it.

Every journal row is chained to the row before it (``prev_hash``, ``hash``:
SHA-256 over the row's canonical encoding, see
``cityvisor/core/store/chain.py``), read and written in the row's own
transaction. Measured, interleaved in one run (rounds of chained, unchained,
raw, the two stores taking turns to go first, so that a change in the
machine's load touches all three alike):

- the **raw baseline**: the same rows inserted with ``sqlite3`` directly, one
  committed, synced transaction each (WAL, ``synchronous = FULL``), no chain;
- **without the chain**: ``SqliteStore`` as it is, but for its insert, which
  writes the row alone (what the store did before the chain);
- **with the chain**: ``SqliteStore`` as shipped.

Both store figures are measured twice: one entry per ``journal()`` call
(one transaction, one sync each: the journal's usual path) and in batches
of 100 entries per transaction (``save_alarm_states``: an alarm flood),
where the sync is shared and the chain's CPU cost shows most.

Run ``python -m bench.journal_chain`` from the repository root (about half a
minute), or ``--quick`` for a few-second smoke run. Results are written up in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from cityvisor.core.store import JournalEntry, SqliteStore

DATA = {"id": "x" * 12, "command": "set_level", "arguments": {"level": 40}, "comment": ""}


def entry(number: int) -> JournalEntry:
    """A typical command outcome: a sentence, a user, a device and a small data object."""
    return JournalEntry(
        kind="command",
        message=f"set_level on cab-07: succeeded ({number})",
        user="bench",
        device="cab-07",
        data=DATA,
    )


class UnchainedStore(SqliteStore):
    """The store with its insert as it was before the chain: the row, no hashes."""

    def _insert_journal(self, entry: JournalEntry, ts: int, data: str) -> JournalEntry:
        cursor = self.db.conn.execute(
            "INSERT INTO journal (ts, kind, message, user, device, point, alarm, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ts,
                entry.kind,
                entry.message,
                entry.user,
                entry.device,
                entry.point,
                entry.alarm,
                data,
            ),
        )
        return JournalEntry(
            kind=entry.kind,
            message=entry.message,
            user=entry.user,
            device=entry.device,
            data=entry.data,
            ts=ts,
            id=cursor.lastrowid,
        )


def raw_rows(connection: sqlite3.Connection, rows: int) -> float:
    """Rows per second: one committed, synced INSERT each, straight through sqlite3."""
    data = json.dumps(DATA)
    started = time.perf_counter()
    for number in range(rows):
        connection.execute(
            "INSERT INTO journal (ts, kind, message, user, device, data) VALUES (?, ?, ?, ?, ?, ?)",
            (
                number,
                "command",
                f"set_level on cab-07: succeeded ({number})",
                "bench",
                "cab-07",
                data,
            ),
        )
    return rows / (time.perf_counter() - started)


async def one_by_one(store: SqliteStore, rows: int) -> float:
    """Entries per second, one ``journal()`` call (one transaction) each."""
    started = time.perf_counter()
    for number in range(rows):
        await store.journal(entry(number))
    return rows / (time.perf_counter() - started)


async def batched(store: SqliteStore, rows: int, size: int = 100) -> float:
    """Entries per second, ``size`` journal entries per transaction (no alarm state)."""
    started = time.perf_counter()
    for start in range(0, rows, size):
        await store.save_alarm_states([(None, None, entry(n)) for n in range(start, start + size)])
    return (rows // size * size) / (time.perf_counter() - started)


async def measure(directory: Path, rows: int, rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds of every measure; the rates of each round, by measure."""
    chained = SqliteStore(directory / "chained.sqlite")
    unchained = UnchainedStore(directory / "unchained.sqlite")
    raw = sqlite3.connect(directory / "raw.sqlite", isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("PRAGMA synchronous = FULL")
    raw.execute(
        "CREATE TABLE journal (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL,"
        " message TEXT NOT NULL DEFAULT '', user TEXT, device TEXT, point TEXT, alarm TEXT,"
        " data TEXT NOT NULL DEFAULT '{}')"
    )
    await chained.open()
    await unchained.open()
    figures: dict[str, list[float]] = {
        key: [] for key in ("raw", "unchained", "chained", "unchained_batch", "chained_batch")
    }
    try:
        raw_rows(raw, rows // 4)  # warm-up: the first writes to a fresh file pay for it
        await one_by_one(chained, rows // 4)
        await one_by_one(unchained, rows // 4)
        stores = [("chained", chained), ("unchained", unchained)]
        for _ in range(rounds):
            for key, store in stores:
                figures[key].append(await one_by_one(store, rows))
            figures["raw"].append(raw_rows(raw, rows))
            for key, store in stores:
                figures[f"{key}_batch"].append(await batched(store, rows * 5))
            stores.reverse()  # neither always goes first
    finally:
        raw.close()
        await chained.close()
        await unchained.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="entries per round, one by one")
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds")
    parser.add_argument("--dir", help="where the files go (default: the system's temporary dir)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 100 rows, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds = 100, 3
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, {platform.machine()}, load average {load:.2f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        figures = anyio.run(measure, Path(tmp), args.rows, args.rounds)
    median = {key: statistics.median(rates) for key, rates in figures.items()}
    raw = median["raw"]
    print(f"medians of {args.rounds} interleaved rounds")
    print(f"{'raw baseline: sqlite3, 1 synced row each':<46} {raw:>10,.0f}/s")
    for label, key in (
        ("store, one entry per transaction, no chain", "unchained"),
        ("store, one entry per transaction, chained", "chained"),
        ("store, 100 entries per transaction, no chain", "unchained_batch"),
        ("store, 100 entries per transaction, chained", "chained_batch"),
    ):
        print(f"{label:<46} {median[key]:>10,.0f}/s {median[key] / raw:>6.2f} x baseline")
    for label, key in (("one entry per transaction", ""), ("100 per transaction", "_batch")):
        cost = 1 - median[f"chained{key}"] / median[f"unchained{key}"]
        print(f"chain cost, {label}: {cost:.1%} of the write rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
