"""The cost of rules: the core ingest benchmark's city with 1,000 rules, changes/s with and without.

The city, its alarms and its workload are those of ``bench/core_ingest.py``
(the PointDB with the AlarmManager evaluating every alarm). One thousand
rules read its float points: seven in ten compare one point with a
threshold halfway between the two values the workload alternates (so they
fire once every other round), two in ten join two such comparisons with
``and``, one in ten holds for 60 s (a timer that the run never reaches).
Their action is a journal note, so every firing writes two journal entries.

Measured in one run, interleaved (without, with, without, with...): the
changes per second the core absorbs without the rule engine, then with it
running (its listener, its evaluating task and its firings' actions), the
figure being timed until every marked rule is evaluated. The firings'
actions (journal notes) run meanwhile in the engine's task group and are
not waited for: the figure is the cost of evaluating, not of acting. The
ratio of the two is the rules' cost; the target is a cost below 20 %.

Run ``python -m bench.rules`` from the repository root, or ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from cityvisor.automation.engine import RuleEngine
from cityvisor.automation.grammar import parse
from cityvisor.automation.rules import NotifyAction, Rule
from cityvisor.automation.settings import AutomationSettings
from cityvisor.core.alarms import AlarmManager
from cityvisor.core.points import DataType
from cityvisor.core.store import SqliteStore

from .core_ingest import City, add_alarms, best, build_city, feed, reset


def make_rules(city: City, count: int, seed: int = 11) -> list[Rule]:
    """``count`` rules over the float points the workload moves between two values."""
    values: dict[str, list[Any]] = {}
    for round_ in city.rounds:
        for poll in round_:
            for point_id, value in poll:
                values.setdefault(point_id, []).append(value)
    flipping = [
        point_id
        for point_id, seen in values.items()
        if len(seen) == 2
        and city.points.get(point_id).spec.dtype is DataType.FLOAT
        and seen[0] is not None
        and seen[1] is not None
        and seen[0] != seen[1]
    ]
    rng = random.Random(seed)
    rng.shuffle(flipping)

    def comparison(point_id: str) -> str:
        low, high = sorted(values[point_id])
        return f"{point_id} > {(low + high) / 2:.4f}"

    rules = []
    for index in range(count):
        point_id = flipping[index % len(flipping)]
        kind = index % 10
        if kind < 7:
            when = comparison(point_id)
        elif kind < 9:
            other = flipping[(index * 7 + 3) % len(flipping)]
            when = f"{comparison(point_id)} and not {comparison(other)}"
        else:
            when = f"{comparison(point_id)} for 60 s"
        rules.append(
            Rule(
                name=f"rule-{index:04d}",
                when=when,
                condition=parse(when),
                actions=[NotifyAction(f"rule {index} fired")],
                source="bench",
            )
        )
    return rules


async def measure(
    city: City, rules_count: int, total: int, repeat: int, directory: Path
) -> dict[str, Any]:
    """Interleaved runs without and with the rule engine; the best of each."""
    store = SqliteStore(directory / "rules.sqlite")
    await store.open()
    without: list[float] = []
    with_rules: list[float] = []
    try:
        manager = AlarmManager(city.points, store)
        add_alarms(manager, city)
        hub = types.SimpleNamespace(points=city.points, alarms=manager, store=store, commands=None)
        rules = make_rules(city, rules_count)
        settings = AutomationSettings(enabled=True, rules=None, queue=10_000)
        engine = RuleEngine(hub, settings, rules)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            await tg.start(store.run)
            for _ in range(repeat):
                reset(city)
                gc.collect()
                without.append((await feed(city, total))[0])

                reset(city)
                async with anyio.create_task_group() as running:
                    await running.start(engine.run)
                    while engine.evaluations == 0 or engine.pending:
                        await anyio.lowlevel.checkpoint()
                    for rule in rules:
                        rule.held = False
                    gc.collect()
                    start = time.perf_counter()
                    await feed(city, total)
                    while engine.pending:
                        await anyio.lowlevel.checkpoint()
                    with_rules.append(time.perf_counter() - start)
                    running.cancel_scope.cancel()
            fired = sum(rule.fired for rule in rules)
            evaluations = engine.evaluations
            onsets = engine.onsets
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    return {
        "without": best(without),
        "with": best(with_rules),
        "fired": fired,
        "evaluations": evaluations,
        "onsets": onsets,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="points to register")
    parser.add_argument("--changes", type=int, default=1_000_000, help="changes per measurement")
    parser.add_argument("--rules", type=int, default=1_000, help="rules")
    parser.add_argument("--alarm-rate", type=float, default=0.001)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    parser.add_argument("--quick", action="store_true", help="a small run of a few seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.quick:
        args.points, args.changes, args.repeat = 2_000, 20_000, 1
    load = os.getloadavg()[0]
    city = build_city(args.points, args.alarm_rate)
    for poll in city.warmup:
        city.points.update_many(poll)
    with tempfile.TemporaryDirectory(prefix="cityvisor-bench-") as tmp:
        found = anyio.run(measure, city, args.rules, args.changes, args.repeat, Path(tmp))
    rate_without = args.changes / found["without"]
    rate_with = args.changes / found["with"]
    cost = 1 - rate_with / rate_without
    print(f"load average at start: {load:.2f}")
    print(
        f"city: {len(city.points):,} points, {args.changes:,} changes per run, {args.rules:,} rules"
    )
    print(f"without rules (PointDB + alarms)  {rate_without:>12,.0f}/s  1.00 x baseline")
    print(
        f"with rules                        {rate_with:>12,.0f}/s  {rate_with / rate_without:.2f} x baseline"
    )
    print(f"rules' cost: {cost:.1%} (target < 20 %)")
    print(
        f"rule evaluations: {found['evaluations']:,}; onsets: {found['onsets']:,}; "
        f"firings whose actions ran before the end: {found['fired']:,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
