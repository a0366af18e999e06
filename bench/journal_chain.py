"""The cost of the journal's hash chain: journal rows per second with and without it.

Every journal row is chained to the row before it (``prev_hash``, ``hash``:
SHA-256 over the row's canonical encoding, see
``cityvisor/core/store/chain.py``), read and written in the row's own
transaction. Measured, interleaved in one run **call by call**: each
entry (or batch) goes to every writer in turn, the order rotating, and
each call is timed alone, so that a change in the machine's load or the
disk's flush times touches every writer alike. (Blocks of a few hundred
calls per writer, as this benchmark first took, showed two identical stores
9 % apart: as much as the effect measured.) The writers:

- the **raw baseline**: the same rows inserted with ``sqlite3`` directly, one
  committed, synced transaction each (WAL, ``synchronous = FULL``), no chain;
- **without the chain**: ``SqliteStore`` as it is, but for its insert, which
  writes the row alone (what the store did before the chain);
- **with the chain**: ``SqliteStore`` as shipped;
- a **control**: a second ``SqliteStore`` as shipped, in its own file; how
  far it lies from the first is the measurement's own noise.

Both store figures are measured twice: one entry per ``journal()`` call
(one transaction, one sync each: the journal's usual path) and in batches
of 100 entries per transaction (``save_alarm_states``: an alarm flood),
where the sync is shared and the chain's CPU cost shows most. A rate is
the calls' count over their summed times.

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


class RawJournal:
    """The raw baseline: ``sqlite3`` inserting the same rows, one synced transaction each."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = FULL")
        self.connection.execute(
            "CREATE TABLE journal (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,"
            " kind TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', user TEXT, device TEXT,"
            " point TEXT, alarm TEXT, data TEXT NOT NULL DEFAULT '{}')"
        )
        self.data = json.dumps(DATA)

    def write(self, number: int) -> None:
        """One row in its own committed, synced transaction."""
        self.connection.execute(
            "INSERT INTO journal (ts, kind, message, user, device, data) VALUES (?, ?, ?, ?, ?, ?)",
            (
                number,
                "command",
                f"set_level on cab-07: succeeded ({number})",
                "bench",
                "cab-07",
                self.data,
            ),
        )

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


async def measure(directory: Path, rows: int, batches: int) -> dict[str, float]:
    """Rates by measure: ``rows`` single entries and ``batches`` batches of 100 per writer.

    Every call goes to every writer in turn, the order rotating by one at each
    call; each call is timed alone.
    """
    stores = {
        "chained": SqliteStore(directory / "chained.sqlite"),
        "unchained": UnchainedStore(directory / "unchained.sqlite"),
        "control": SqliteStore(directory / "control.sqlite"),
    }
    raw = RawJournal(directory / "raw.sqlite")
    spent = {key: 0.0 for key in ("raw", *stores, *(f"{key}_batch" for key in stores))}
    for store in stores.values():
        await store.open()
    try:
        for number in range(max(rows // 10, 5)):  # warm-up: a fresh file's first writes pay for it
            raw.write(number)
            for store in stores.values():
                await store.journal(entry(number))
        writers = ["raw", *stores]
        for number in range(rows):
            shift = number % len(writers)
            for key in writers[shift:] + writers[:shift]:
                started = time.perf_counter()
                if key == "raw":
                    raw.write(number)
                else:
                    await stores[key].journal(entry(number))
                spent[key] += time.perf_counter() - started
        keys = list(stores)
        for number in range(batches):
            shift = number % len(keys)
            batch = [(None, None, entry(n)) for n in range(number * 100, number * 100 + 100)]
            for key in keys[shift:] + keys[:shift]:
                started = time.perf_counter()
                await stores[key].save_alarm_states(batch)
                spent[f"{key}_batch"] += time.perf_counter() - started
    finally:
        raw.close()
        for store in stores.values():
            await store.close()
    return {
        key: (batches * 100 if key.endswith("_batch") else rows) / seconds
        for key, seconds in spent.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000, help="single entries per writer")
    parser.add_argument("--batches", type=int, default=600, help="batches of 100 per writer")
    parser.add_argument("--dir", help="where the files go (default: the system's temporary dir)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 300 rows, 30 batches")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.batches = 300, 30
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, {platform.machine()}, load average {load:.2f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rate = anyio.run(measure, Path(tmp), args.rows, args.batches)
    raw = rate["raw"]
    print(
        f"{args.rows:,} single entries and {args.batches:,} batches of 100 per writer,"
        " interleaved call by call"
    )
    print(f"{'raw baseline: sqlite3, 1 synced row each':<46} {raw:>10,.0f}/s")
    for label, key in (
        ("store, one entry per transaction, no chain", "unchained"),
        ("store, one entry per transaction, chained", "chained"),
        ("control: a second chained store, one entry", "control"),
        ("store, 100 entries per transaction, no chain", "unchained_batch"),
        ("store, 100 entries per transaction, chained", "chained_batch"),
        ("control: a second chained store, 100 entries", "control_batch"),
    ):
        print(f"{label:<46} {rate[key]:>10,.0f}/s {rate[key] / raw:>6.2f} x baseline")
    for label, key in (("one entry per transaction", ""), ("100 per transaction", "_batch")):
        cost = 1 - rate[f"chained{key}"] / rate[f"unchained{key}"]
        noise = abs(1 - rate[f"control{key}"] / rate[f"chained{key}"])
        print(
            f"chain cost, {label}: {cost:.1%} of the write rate"
            f" (the control lies {noise:.1%} from the chained store)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
