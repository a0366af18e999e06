"""Subscription benchmark: subscribe, join and unsubscribe at 250,000 points, snapshot chunks.

A :class:`~cityvisor.core.points.PointDB` holds ``--points`` points with ids
``zone-NN/family/device/member/point`` (100 zones). Measured, in one run,
each cityvisor phase *interleaved* with its raw baselines (baseline, phase,
baseline, phase, ... so a busy machine stretches both alike):

- the **raw baselines**: a dict lookup of one id (the least a subscription
  can cost), and a plain scan of every id with the compiled pattern (what
  a subscription cost before the index);
- **cityvisor**: ``await subscribe(...)`` that builds a new watch (one
  device, one zone, every lighting point of one zone by wildcard, the
  whole city: built in slices with turns of the loop between them),
  ``subscribe`` that joins a watch another screen already holds,
  ``close`` of a screen that is not the last, and of the last (small
  watches are let go at once; the city-wide one by the run task, in slices);
- the **loop held**: for each subscribe, the longest the event loop went
  without a turn (a probe task takes a turn whenever it can and notes the
  gaps): what every other task of the hub waited at worst;
- the **snapshot**: building the shared list of the city-wide watch, and
  encoding one chunk of it (``SNAPSHOT_CHUNK`` values) as the WebSocket
  does; each is the longest the event loop is held by one step.

Each figure is the median (and max) of ``--rounds`` rounds, in milliseconds,
with its ratio to the dict lookup and to the plain scan. The targets: every
subscribe and unsubscribe under 5 ms at 250,000 points (a new city-wide
watch is the exception the shared watch is for: it is paid once), and no
subscribe, the city-wide one included, holding the loop 20 ms or more.

Run ``python -m bench.subscriptions`` from the repository root (about 30 s),
or ``--quick``. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from cityvisor.core.patterns import compile_pattern
from cityvisor.core.points import DataType, PointDB, PointSpec
from cityvisor.web.texts import SNAPSHOT_CHUNK, _snapshot_texts

FAMILIES = ("lighting", "switches", "cameras", "doors", "bollards")


def build(points: int) -> tuple[PointDB, list[str]]:
    """A city of ``points`` points in 100 zones, five families, ten points a device."""
    db = PointDB()
    spec = PointSpec("value", DataType.FLOAT)
    ids = []
    per_zone = max(1, points // 100)
    for n in range(points):
        zone, rest = divmod(n, per_zone)
        family = FAMILIES[(rest // 10) % len(FAMILIES)]
        device, member = divmod(rest, 10)
        point_id = f"zone-{zone:02d}/{family}/dev-{device:05d}/c{member % 5}/p{member // 5}"
        ids.append(point_id)
        db.register(point_id, spec)
    return db, ids


def timed(action: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


class Holds:
    """The longest the loop goes without giving this probe a turn, while ``watching``."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.last = time.perf_counter()

    async def run(self) -> None:
        while True:
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            self.longest = max(self.longest, now - self.last)
            self.last = now

    async def timed(self, action: Callable[[], Awaitable[object]]) -> tuple[float, float]:
        """Milliseconds ``action`` takes, and the longest it held the loop."""
        await anyio.lowlevel.checkpoint()
        started = self.last = time.perf_counter()
        self.longest = 0.0
        await action()
        now = time.perf_counter()
        held = max(self.longest, now - self.last)
        return (now - started) * 1000, held * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="20,000 points, 5 rounds")
    args = parser.parse_args()
    if args.quick:
        args.points, args.rounds = 20_000, 5
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    db, ids = build(args.points)
    print(f"{len(db):,} points built in {time.perf_counter() - started:.1f} s")
    gc.collect()
    gc.freeze()  # a collection in the middle of a phase measures the collector, not the phase
    device = "/".join(ids[len(ids) // 2].split("/")[:3])
    zone = ids[len(ids) // 2].split("/")[0]
    phases = {
        "new watch: one device": (f"{device}/**",),
        "new watch: one zone": (f"{zone}/**",),
        "new watch: zone lighting by wildcard": (f"{zone}/light*/*/c?/*",),
        "new watch: three patterns": (f"{zone}/**", f"{device}/**", "zone-0?/doors/*/c1/p0"),
        "new watch: the whole city": ("**",),
    }
    scan_pattern = compile_pattern(f"{zone}/**")
    samples: dict[str, list[float]] = {"raw: dict lookup": [], "raw: plain scan": []}
    lookup_id = ids[len(ids) // 3]
    points = db._points

    def baselines() -> None:
        samples["raw: dict lookup"].append(timed(lambda: points.get(lookup_id)))
        samples["raw: plain scan"].append(timed(lambda: scan_pattern.filter(points)))

    async def rounds() -> None:
        holds = Holds()
        async with anyio.create_task_group() as tg:
            tg.start_soon(holds.run)
            for _ in range(args.rounds):
                await one_round(holds)
            tg.cancel_scope.cancel()

    async def one_round(holds: Holds) -> None:
        for label, patterns in phases.items():
            baselines()
            first: list = []

            async def subscribe(p: tuple[str, ...] = patterns, out: list = first) -> None:
                out.append(await db.subscribe(*p))

            wall, held = await holds.timed(subscribe)
            samples.setdefault(label, []).append(wall)
            samples.setdefault(label.replace("new watch", "loop held by new watch"), []).append(
                held
            )
            baselines()
            second: list = []
            join = label.replace("new watch", "join a shared watch")
            wall, held = await holds.timed(
                lambda p=patterns, out=second: subscribe(p, out)  # type: ignore[misc]
            )
            samples.setdefault(join, []).append(wall)
            assert second[0].watch is first[0].watch
            if label.endswith("whole city"):
                snapshot_label = "snapshot: build the city's list at once"
                first[0].watch._snapshot = None
                samples.setdefault(snapshot_label, []).append(timed(first[0].watch.snapshot))
                snapshot = first[0].watch.snapshot()
                chunk_label = f"snapshot: encode one chunk ({SNAPSHOT_CHUNK} values)"
                samples.setdefault(chunk_label, []).extend(
                    timed(lambda n=n, s=snapshot: _snapshot_texts.chunk(s, n)) for n in range(0, 20)
                )
                first[0].watch._snapshot = None  # the next screen reads a new one, in slices
                third: list = []
                wall, held = await holds.timed(
                    lambda p=patterns, out=third: subscribe(p, out)  # type: ignore[misc]
                )
                samples.setdefault("join the city, reading a new snapshot", []).append(wall)
                samples.setdefault("loop held by it", []).append(held)
                third[0].close()
            baselines()
            leave = label.replace("new watch", "close, not the last")
            samples.setdefault(leave, []).append(timed(second[0].close))
            baselines()
            last = label.replace("new watch", "close, the last")
            samples.setdefault(last, []).append(timed(first[0].close))
            # What the run task does, in slices of 10,000 points, between the rounds here:
            wall, held = await holds.timed(db._reap)
            if label.endswith("whole city"):
                samples.setdefault("the run task lets the city's watch go", []).append(wall)
                samples.setdefault("loop held by letting it go", []).append(held)

    anyio.run(rounds)

    dict_ms = statistics.median(samples["raw: dict lookup"])
    scan_ms = statistics.median(samples["raw: plain scan"])
    print(f"{'figure':<52} {'median':>10} {'max':>10} {'x dict':>10} {'x scan':>8}")
    for label, values in samples.items():
        median = statistics.median(values)
        print(
            f"{label:<52} {median:>7.3f} ms {max(values):>7.3f} ms "
            f"{median / dict_ms:>10,.0f} {median / scan_ms:>8.4f}"
        )
    worst = max(
        max(v)
        for label, v in samples.items()
        if ("join a" in label or "close" in label or label.startswith("new watch"))
        and "whole city" not in label
    )
    print(
        f"worst subscribe/unsubscribe (whole-city new watch apart): {worst:.2f} ms (target < 5 ms)"
    )
    held = max(max(v) for label, v in samples.items() if label.startswith("loop held"))
    print(
        f"longest the loop was held by a subscribe or its release: {held:.2f} ms (target < 20 ms)"
    )


if __name__ == "__main__":
    main()
