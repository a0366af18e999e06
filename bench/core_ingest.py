"""The core's ingest benchmark: how many point changes per second the core absorbs.

A city of ``--points`` points (lighting cabinets, network switches, cameras,
access-controlled doors and bollards, with ids ``zone/family/device/member/point``,
the device types' specs shared as a plugin declares them, and their alarms)
is fed changes that all pass their deadband, one device poll at a time
(``PointDB.update_many``, then an await, as a driver does). Measured, in one run:

- the **raw baseline**: a plain ``dict`` update of the same changes, plus a
  SQLite ``executemany`` of the same rows into an equivalent history table,
  one pass of it before each pass of (a), (b) and (c) (interleaved; the
  best pass of each is kept);
- **(a)** the PointDB alone;
- **(b)** the PointDB with the AlarmManager evaluating every alarm (and
  journaling the few transitions the workload causes);
- **(c)** (b) plus history: ``SqliteStore.record`` as a listener and the
  store's periodic flusher, timed until every change is in the file;
- the memory per point of the PointDB with its alarms;
- the trend query: a 24 h trend with 1-minute buckets of one point, out of a
  history table of ``--trend-rows`` rows.

Run ``python -m bench.core_ingest`` from the repository root (two to three minutes), or ``--quick`` for
a few-second smoke run. Results are written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import math
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from cityvisor.core.alarms import COMMUNICATION_ALARM, AlarmManager, AlarmSpec, alarm
from cityvisor.core.points import DataType, Deadband, PointDB, PointSpec, PointValue, Quality
from cityvisor.core.store import SqliteStore

Poll = list[tuple[str, Any]]

# --------------------------------------------------------------------------- the city


@dataclass(frozen=True)
class Decl:
    """One point of a device type, the values it takes and the alarm on it.

    ``normal`` holds one or two values: a point with two alternates between
    them (every change passes the deadband); a point with one only changes
    when the workload drives it to ``abnormal``, which raises its alarm.
    """

    name: str
    spec: PointSpec
    normal: tuple[Any, ...]
    abnormal: Any = None
    alarm: AlarmSpec | None = None


@dataclass(frozen=True)
class DeviceKind:
    """A device type: its family, its members and the points of each."""

    family: str
    prefix: str
    members: tuple[str, ...]
    member_points: tuple[Decl, ...]
    device_points: tuple[Decl, ...]

    @property
    def size(self) -> int:
        return len(self.members) * len(self.member_points) + len(self.device_points)


def _float(
    name: str, unit: str, deadband: Deadband, lo: float | None = None, hi: float | None = None
) -> PointSpec:
    return PointSpec(name, DataType.FLOAT, unit=unit, deadband=deadband, minimum=lo, maximum=hi)


def _decl(
    name: str, spec: PointSpec, normal: tuple[Any, ...], abnormal: Any = None, **condition: Any
) -> Decl:
    spec_alarm = alarm(name, name=f"{name}_alarm", **condition) if condition else None
    return Decl(name, spec, normal, abnormal, spec_alarm)


def _online() -> Decl:
    # Every device's communication alarm, as DeviceType declares it (never suppressed).
    spec = alarm("online", equals=False, priority="high", name=COMMUNICATION_ALARM)
    return Decl(
        "online",
        PointSpec("online", DataType.BOOL),
        (True,),
        False,
        dataclasses.replace(spec, suppressible=False),
    )


def _enum(name: str, labels: dict[int, str]) -> PointSpec:
    return PointSpec(name, DataType.ENUM, labels=labels)


ABS = Deadband
PCT = Deadband.percent

CABINET = DeviceKind(
    "lighting",
    "cab",
    ("c1", "c2", "c3", "c4"),
    (
        _decl("level", _float("level", "%", ABS(0.5), 0, 100), (40.0, 60.0)),
        _decl("power", _float("power", "W", PCT(1), 0, 5000), (800.0, 1200.0), 4800.0, high=4500),
        _decl("current", _float("current", "A", ABS(0.05)), (3.5, 5.2)),
        _decl("lamp_failures", PointSpec("lamp_failures", DataType.INT), (0,), 2, high=0),
        _decl("on", PointSpec("on", DataType.BOOL), (True, False)),
    ),
    (
        _online(),
        _decl("door_open", PointSpec("door_open", DataType.BOOL), (False,), True, equals=True),
        _decl(
            "mains_voltage",
            _float("mains_voltage", "V", ABS(1), 0, 300),
            (229.0, 233.0),
            180.0,
            low=200,
        ),
        _decl("temperature", _float("temperature", "°C", ABS(0.5)), (21.0, 24.0), 70.0, high=60),
        _decl("energy", _float("energy", "kWh", ABS(0.1)), (1200.0, 1201.0)),
    ),
)
SWITCH = DeviceKind(
    "switches",
    "sw",
    tuple(f"port-{i:02d}" for i in range(1, 25)),
    (
        _decl("link", _enum("link", {0: "down", 1: "up", 2: "testing"}), (1,), 0, equals=0),
        _decl("in_rate", _float("in_rate", "bit/s", PCT(5)), (2e6, 4e6)),
        _decl("out_rate", _float("out_rate", "bit/s", PCT(5)), (1e6, 3e6)),
        _decl("utilisation", _float("utilisation", "%", ABS(1), 0, 100), (20.0, 35.0)),
    ),
    (
        _online(),
        _decl("cpu", _float("cpu", "%", ABS(2), 0, 100), (10.0, 30.0), 97.0, high=90),
        _decl("temperature", _float("temperature", "°C", ABS(1)), (40.0, 45.0), 80.0, high=70),
        _decl("fan_ok", PointSpec("fan_ok", DataType.BOOL), (True,), False, equals=False),
        _decl("psu_ok", PointSpec("psu_ok", DataType.BOOL), (True,), False, equals=False),
    ),
)
CAMERA = DeviceKind(
    "cameras",
    "cam",
    ("stream-1",),
    (
        _decl("fps", _float("fps", "1/s", ABS(1)), (25.0, 12.0)),
        _decl("bitrate", _float("bitrate", "bit/s", PCT(10)), (2e6, 4e6)),
        _decl("recording", PointSpec("recording", DataType.BOOL), (True, False)),
        _decl("motion", PointSpec("motion", DataType.BOOL), (False, True)),
    ),
    (_online(),),
)
DOOR = DeviceKind(
    "access",
    "door",
    ("door-1", "door-2"),
    (
        _decl(
            "state",
            _enum("state", {0: "closed", 1: "open", 2: "forced", 3: "held"}),
            (0, 1),
            2,
            equals=2,
        ),
        _decl(
            "reader_online", PointSpec("reader_online", DataType.BOOL), (True,), False, equals=False
        ),
        _decl("battery", _float("battery", "%", ABS(1), 0, 100), (80.0, 90.0), 10.0, low=20),
    ),
    (_online(),),
)
BOLLARD = DeviceKind(
    "bollards",
    "bol",
    ("b1", "b2", "b3"),
    (
        _decl(
            "position",
            _enum("position", {0: "down", 1: "up", 2: "moving", 3: "fault"}),
            (0, 1),
            3,
            equals=3,
        ),
        _decl("vehicle_present", PointSpec("vehicle_present", DataType.BOOL), (False, True)),
        _decl("pressure", _float("pressure", "bar", ABS(0.5)), (120.0, 130.0), 60.0, low=80),
    ),
    (_online(),),
)

# One district of the metropolis; districts are spread over the zones (communes).
DISTRICT = [CABINET] * 8 + [SWITCH] * 2 + [CAMERA] * 6 + [DOOR] * 4 + [BOLLARD] * 2
ZONES = (
    "dijon",
    "chenove",
    "talant",
    "quetigny",
    "longvic",
    "fontaine-les-dijon",
    "chevigny-saint-sauveur",
    "marsannay-la-cote",
    "saint-apollinaire",
    "plombieres-les-dijon",
)


@dataclass
class City:
    """The points, the alarm definitions and the change workload of a benchmark city."""

    points: PointDB
    alarms: list[tuple[AlarmSpec, str, str, str, str, str | None, str]]
    """(spec, point id, device id, zone, family, member, alarm id) for AlarmManager.add."""
    warmup: list[Poll]
    """Every point to its first normal value (from bad(not_connected))."""
    rounds: tuple[list[Poll], list[Poll]]
    """Round "b" (second normal values, plus the abnormal ones) and round "a" (back)."""
    changes_per_round: float
    transitions_per_round: int


def build_city(n_points: int, alarm_rate: float, seed: int = 7) -> City:
    """Register ``n_points`` points (rounded up to a whole device) and plan the workload."""
    rng = random.Random(seed)
    db = PointDB()
    alarms: list[tuple[AlarmSpec, str, str, str, str, str | None, str]] = []
    # Per device: (point id, decl) of every point, to plan the polls from.
    devices: list[list[tuple[str, Decl, str]]] = []
    counters: dict[str, int] = {}
    district = 0
    while len(db) < n_points:
        zone = ZONES[district % len(ZONES)]
        for kind in DISTRICT:
            if len(db) >= n_points:
                break
            counters[kind.prefix] = counters.get(kind.prefix, 0) + 1
            device_id = f"{kind.prefix}-{counters[kind.prefix]:05d}"
            base = f"{zone}/{kind.family}/{device_id}"
            points: list[tuple[str, Decl, str]] = []
            members: list[tuple[str | None, Decl]] = [(None, d) for d in kind.device_points]
            members += [(m, d) for m in kind.members for d in kind.member_points]
            for member, decl in members:
                point_id = (
                    f"{base}/{decl.name}" if member is None else f"{base}/{member}/{decl.name}"
                )
                db.register(
                    point_id,
                    decl.spec,
                    device_id=device_id,
                    zone=zone,
                    family=kind.family,
                    member=member,
                )
                if decl.alarm is not None:
                    alarm_id = (
                        f"{device_id}:{decl.alarm.name}"
                        if member is None
                        else f"{device_id}:{member}:{decl.alarm.name}"
                    )
                    alarms.append(
                        (decl.alarm, point_id, device_id, zone, kind.family, member, alarm_id)
                    )
                points.append((point_id, decl, decl.alarm.name if decl.alarm else ""))
            devices.append(points)
        district += 1

    changing = sum(len(d[1].normal) == 2 for points in devices for d in points)
    # Each driven point raises its alarm in round b and clears it in round a.
    candidates = [
        point_id
        for points in devices
        for point_id, decl, name in points
        if decl.abnormal is not None and name != COMMUNICATION_ALARM
    ]
    driven = set(rng.sample(candidates, min(len(candidates), round(alarm_rate * changing))))
    warmup, round_b, round_a = [], [], []
    for points in devices:
        warmup.append([(point_id, decl.normal[0]) for point_id, decl, _ in points])
        poll_b: Poll = []
        poll_a: Poll = []
        for point_id, decl, _ in points:
            if point_id in driven:
                poll_b.append((point_id, decl.abnormal))
                poll_a.append((point_id, decl.normal[0]))
            elif len(decl.normal) == 2:
                poll_b.append((point_id, decl.normal[1]))
                poll_a.append((point_id, decl.normal[0]))
        if poll_b:
            round_b.append(poll_b)
            round_a.append(poll_a)
    per_round = (sum(map(len, round_a)) + sum(map(len, round_b))) / 2
    return City(db, alarms, warmup, (round_b, round_a), per_round, len(driven))


def add_alarms(manager: AlarmManager, city: City) -> None:
    """Give the manager every alarm of the city, as the hub does for its devices."""
    for spec, point_id, device_id, zone, family, member, alarm_id in city.alarms:
        manager.add(
            spec,
            point_id,
            device_id=device_id,
            zone=zone,
            family=family,
            member=member,
            alarm_id=alarm_id,
        )


def workload(city: City, total: int) -> Iterator[Poll]:
    """The polls that make ``total`` changes: rounds b, a, b, a... (the last one cut short)."""
    fed = 0
    r = 0
    while fed < total:
        for poll in city.rounds[r % 2]:
            if fed + len(poll) > total:
                poll = poll[: total - fed]
            yield poll
            fed += len(poll)
            if fed >= total:
                return
        r += 1


def reset(city: City) -> None:
    """Put every point back to its first normal value (round a), untimed."""
    for poll in city.rounds[1]:
        city.points.update_many(poll)


# --------------------------------------------------------------------------- measurements


def rss_kib() -> int:
    """Resident set size of this process, in KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def best(times: list[float]) -> float:
    return min(times)


class Clock:
    """Wall time and this thread's CPU time, together.

    On a shared machine other processes stretch the wall time; the CPU time
    of the thread doing the work is what an idle core would take.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.thread_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.thread_time() - self.cpu


class Baseline:
    """The raw baseline, one pass at a time: a plain dict update, then a SQLite
    executemany, of the same changes. Passes are taken between the PointDB's
    (interleaved), so that a burst of load elsewhere hits both alike."""

    def __init__(self, city: City, total: int, directory: Path) -> None:
        self.polls = list(workload(city, total))
        self.current: dict[str, Any] = {point.id: None for point in city.points.points()}
        keys = {point_id: key for key, point_id in enumerate(self.current)}
        ts = 1_790_000_000_000
        self.rows: list[tuple[int, int, Any, str]] = []
        for poll in self.polls:
            ts += 1
            self.rows.extend((keys[point_id], ts, value, "") for point_id, value in poll)
        self.directory = directory
        self.dict_times: list[tuple[float, float]] = []
        self.sql_times: list[float] = []

    def one_pass(self) -> None:
        """One dict pass and one SQLite pass."""
        current = self.current
        gc.collect()
        clock = Clock()
        for poll in self.polls:
            for point_id, value in poll:
                current[point_id] = value
        self.dict_times.append(clock.stop())

        attempt = len(self.sql_times)
        conn = sqlite3.connect(self.directory / f"baseline-{attempt}.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE history (point INTEGER NOT NULL, ts INTEGER NOT NULL, value,"
            " quality TEXT NOT NULL DEFAULT '', PRIMARY KEY (point, ts)) WITHOUT ROWID"
        )
        rows = self.rows
        gc.collect()
        start = time.perf_counter()
        for i in range(0, len(rows), 100_000):  # one transaction per flush-sized batch
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO history VALUES (?, ?, ?, ?)", rows[i : i + 100_000])
            conn.execute("COMMIT")
        self.sql_times.append(time.perf_counter() - start)
        conn.close()

    def figures(self) -> tuple[tuple[float, float], float]:
        """(wall, CPU) seconds of the best dict pass, and wall seconds of the best SQLite pass."""
        dict_times = self.dict_times
        return (best([w for w, _ in dict_times]), best([c for _, c in dict_times])), best(
            self.sql_times
        )


async def feed(city: City, total: int) -> tuple[float, float]:
    """Feed ``total`` changes, a device poll at a time; return the (wall, CPU) seconds it took."""
    db = city.points
    update_many = db.update_many
    checkpoint = anyio.lowlevel.checkpoint
    before = db.changes
    clock = Clock()
    for poll in workload(city, total):
        update_many(poll)
        await checkpoint()  # a driver awaits its next poll: let the others run
    elapsed = clock.stop()
    accepted = db.changes - before
    if accepted != total:
        raise RuntimeError(f"the workload is wrong: {accepted} of {total} changes accepted")
    return elapsed


@dataclass
class Results:
    points: int = 0
    alarms: int = 0
    changes: int = 0
    transitions_per_round: int = 0
    changes_per_round: float = 0
    baseline_dict: float = 0.0
    baseline_sqlite: float = 0.0
    pointdb: float = 0.0
    alarmed: float = 0.0
    history: float = 0.0
    # CPU seconds of the thread feeding the changes (see Clock)
    baseline_dict_cpu: float = 0.0
    pointdb_cpu: float = 0.0
    alarmed_cpu: float = 0.0
    history_cpu: float = 0.0
    history_rows: int = 0
    history_dropped: int = 0
    raised: int = 0
    bytes_per_point_traced: float = 0.0
    bytes_per_point_rss: float = 0.0
    trend: dict[str, float] = dataclasses.field(default_factory=dict)


async def measure_core(
    city: City, total: int, repeat: int, directory: Path, results: Results, baseline: Baseline
) -> None:
    """(a), (b) and (c) on one PointDB: listeners are added stage by stage; a pass of the
    raw baseline before each pass of each."""
    db = city.points
    times = []
    for _ in range(repeat):
        baseline.one_pass()
        reset(city)
        gc.collect()
        times.append(await feed(city, total))
    results.pointdb = best([w for w, _ in times])
    results.pointdb_cpu = best([c for _, c in times])

    store = SqliteStore(directory / "city.sqlite")
    await store.open()
    try:
        manager = AlarmManager(db, store)
        add_alarms(manager, city)
        results.alarms = len(manager)
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            times = []
            for _ in range(repeat):
                baseline.one_pass()
                reset(city)
                gc.collect()
                times.append(await feed(city, total))
            results.alarmed = best([w for w, _ in times])
            results.alarmed_cpu = best([c for _, c in times])

            db.add_listener(lambda point, value: store.record(value, point.spec))
            await tg.start(store.run)
            times = []
            cpu_times = []
            for _ in range(repeat):
                baseline.one_pass()
                reset(city)
                await store.flush_history()
                gc.collect()
                written = store.history_written
                start = time.perf_counter()
                cpu_times.append((await feed(city, total))[1])
                await store.flush_history()  # end to end: every change is in the file
                times.append(time.perf_counter() - start)
                results.history_rows = store.history_written - written
            results.history = best(times)
            results.history_cpu = best(cpu_times)
            results.history_dropped = store.history_dropped
            results.raised = sum(a.counts["raised"] for a in manager.alarms())
            tg.cancel_scope.cancel()
    finally:
        await store.close()


def measure_memory(n_points: int, alarm_rate: float, directory: Path) -> tuple[float, float]:
    """Bytes per point of a PointDB with its alarms and a value in every point.

    Traced with tracemalloc (Python allocations only) and, as a cross-check,
    the growth of the process's resident memory.
    """

    def build() -> tuple[City, AlarmManager]:
        city = build_city(n_points, alarm_rate)
        # The store is not opened: adding alarms does no I/O.
        manager = AlarmManager(city.points, SqliteStore(directory / "unused.sqlite"))
        add_alarms(manager, city)
        for poll in city.warmup:
            city.points.update_many(poll)
        # The workload's own change lists are not part of the database.
        city.warmup = []
        city.rounds = ([], [])
        return city, manager

    gc.collect()
    before_rss = rss_kib()
    kept = build()
    gc.collect()
    rss_bytes = (rss_kib() - before_rss) * 1024
    n = len(kept[0].points)
    del kept
    gc.collect()

    tracemalloc.start()
    kept = build()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return traced / n, rss_bytes / n


# --------------------------------------------------------------------------- trend


async def measure_trend(rows: int, directory: Path) -> dict[str, float]:
    """Load ``rows`` history rows for 5 points, then time trend queries on one of them."""
    n_points = 5
    per_point = rows // n_points
    end = 1_790_000_000_000
    start = end - per_point * 1000  # one value a second
    spec = PointSpec("flow", DataType.FLOAT, unit="m³/h")
    ids = [f"dijon/water/station-{i}/pump-1/flow" for i in range(n_points)]
    store = SqliteStore(directory / "trend.sqlite")
    await store.open()
    figures: dict[str, float] = {"rows": float(per_point * n_points)}
    load_start = time.perf_counter()
    bad = Quality.bad("sensor_failure")
    chunk = 200_000
    for i in range(0, per_point, chunk // n_points):
        for t in range(i, min(per_point, i + chunk // n_points)):
            ts = start + t * 1000
            value = 50.0 + 30.0 * math.sin(t / 13_751) + (t % 17) * 0.1
            quality = bad if t % 500 < 5 else Quality.GOOD  # 1 % bad, in short runs
            for point_id in ids:
                store.record(PointValue(point_id, value, quality, ts, ts), spec)
        await store.flush_history()
    figures["load_s"] = time.perf_counter() - load_start
    await store.close()
    figures["file_mb"] = (directory / "trend.sqlite").stat().st_size / 1e6

    store = SqliteStore(directory / "trend.sqlite")
    await store.open()
    try:

        async def timed(query: Callable[[], Any], runs: int = 7) -> tuple[float, float, int]:
            times = []
            result: Any = None
            for _ in range(runs):
                t0 = time.perf_counter()
                result = await query()
                times.append(time.perf_counter() - t0)
            return times[0], statistics.median(times[1:]), len(result)

        point = ids[2]
        day_start = end - 86_400_000
        first, median, count = await timed(
            lambda: store.history(point, day_start, end, bucket_ms=60_000)
        )
        figures.update(day_first_ms=first * 1000, day_median_ms=median * 1000, day_buckets=count)
        week_start = max(start, end - 7 * 86_400_000)
        first, median, count = await timed(
            lambda: store.history(point, week_start, end, bucket_ms=3_600_000)
        )
        figures.update(
            week_days=(end - week_start) / 86_400_000,
            week_median_ms=median * 1000,
            week_buckets=count,
        )
        first, median, count = await timed(lambda: store.history(point, end - 3_600_000, end))
        figures.update(hour_raw_median_ms=median * 1000, hour_raw_rows=count)
    finally:
        await store.close()
    return figures


# --------------------------------------------------------------------------- report


def report(results: Results, args: argparse.Namespace) -> None:
    n = results.changes
    dict_rate = n / results.baseline_dict
    sqlite_rate = n / results.baseline_sqlite
    baseline = n / (results.baseline_dict + results.baseline_sqlite)

    def line(label: str, seconds: float, note: str = "") -> None:
        rate = n / seconds
        print(f"  {label:<44} {rate:>12,.0f}/s  {rate / baseline:>6.2f} x baseline{note}")

    print(
        f"cityvisor core ingest benchmark — Python {platform.python_version()},"
        f" {platform.system()}, {os.cpu_count()} CPUs, load average at start {args.load:.2f}"
    )
    if args.load > 0.5:
        print("  (other processes were running: they skew every figure; compare the ratios)")
    print(
        f"  {results.points:,} points, {results.alarms:,} alarms"
        f" ({results.alarms / results.points:.0%} of points), {n:,} changes"
        f" (~{results.changes_per_round:,.0f} per round, {results.transitions_per_round} alarm"
        f" raise+clear per 2 rounds), best of {args.repeat}, {args.backend}"
    )
    print()
    print("ingest (changes that pass the deadband, per second)")
    print(f"  {'raw: dict update':<44} {dict_rate:>12,.0f}/s")
    print(f"  {'raw: sqlite executemany':<44} {sqlite_rate:>12,.0f}/s")
    print(f"  {'raw baseline: dict + executemany':<44} {baseline:>12,.0f}/s  {1:>6.2f} x baseline")
    line("(a) PointDB", results.pointdb, f"  ({n / results.pointdb / dict_rate:.2f} x dict)")
    line(
        "(b) PointDB + alarms", results.alarmed, f"  ({n / results.alarmed / dict_rate:.2f} x dict)"
    )
    line("(c) PointDB + alarms + history (SQLite)", results.history)
    print(
        f"  history rows written per run: {results.history_rows:,}, dropped: {results.history_dropped},"
        f" alarms raised in all: {results.raised:,}"
    )
    print()
    print("the same, per CPU second of the thread that feeds the changes (what an idle core does)")
    cpu_dict = n / results.baseline_dict_cpu
    print(f"  {'raw: dict update':<44} {cpu_dict:>12,.0f}/s")
    for label, cpu in (
        ("(a) PointDB", results.pointdb_cpu),
        ("(b) PointDB + alarms", results.alarmed_cpu),
        ("(c) + history (its SQLite thread not counted)", results.history_cpu),
    ):
        print(f"  {label:<44} {n / cpu:>12,.0f}/s  {n / cpu / cpu_dict:>6.2f} x dict")
    print()
    print("memory per point (PointDB + alarms, a value in every point)")
    print(f"  tracemalloc: {results.bytes_per_point_traced:,.0f} B/point")
    print(f"  RSS growth:  {results.bytes_per_point_rss:,.0f} B/point")
    if results.trend:
        t = results.trend
        print()
        print(f"trend query ({t['rows']:,.0f} history rows, 5 points, one value a second)")
        print(
            f"  load through SqliteStore.record + flush_history: {t['load_s']:.1f} s"
            f" ({t['rows'] / t['load_s']:,.0f} rows/s), file {t['file_mb']:.0f} MB"
        )
        print(
            f"  24 h, 1-min buckets ({t['day_buckets']:.0f} buckets):"
            f" first {t['day_first_ms']:.1f} ms, median {t['day_median_ms']:.1f} ms"
        )
        print(
            f"  {t['week_days']:.1f} d, 1-h buckets ({t['week_buckets']:.0f} buckets):"
            f" median {t['week_median_ms']:.1f} ms"
        )
        print(f"  1 h raw ({t['hour_raw_rows']:.0f} rows): median {t['hour_raw_median_ms']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="points to register")
    parser.add_argument("--changes", type=int, default=1_000_000, help="changes per measurement")
    parser.add_argument(
        "--alarm-rate",
        type=float,
        default=0.001,
        help="share of changes that raise or clear an alarm (default 0.001)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept")
    parser.add_argument(
        "--trend-rows",
        type=int,
        default=3_000_000,
        help="history rows for the trend query (0: skip)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="a small run of a few seconds")
    args = parser.parse_args(argv)
    # The workload raises alarms on purpose; their flood warnings are expected.
    logging.basicConfig(level=logging.ERROR)
    if args.quick:
        args.points, args.changes, args.repeat, args.trend_rows = 2_000, 20_000, 1, 50_000

    args.load = os.getloadavg()[0]
    results = Results(changes=args.changes)
    with tempfile.TemporaryDirectory(prefix="cityvisor-bench-") as tmp:
        directory = Path(tmp)
        traced, rss = measure_memory(args.points, args.alarm_rate, directory)
        results.bytes_per_point_traced, results.bytes_per_point_rss = traced, rss

        city = build_city(args.points, args.alarm_rate)
        for poll in city.warmup:
            city.points.update_many(poll)
        results.points = len(city.points)
        results.changes_per_round = city.changes_per_round
        results.transitions_per_round = city.transitions_per_round
        baseline = Baseline(city, args.changes, directory)
        anyio.run(
            measure_core,
            city,
            args.changes,
            args.repeat,
            directory,
            results,
            baseline,
            backend=args.backend,
        )
        dict_times, results.baseline_sqlite = baseline.figures()
        results.baseline_dict, results.baseline_dict_cpu = dict_times
        if args.trend_rows:
            results.trend = anyio.run(
                measure_trend, args.trend_rows, directory, backend=args.backend
            )
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
