"""Point pattern benchmark: the linear-time matcher against hostile and benign patterns.

Measured, in one run, over ``--ids`` point ids:

- the **raw baseline**: a benign pattern (``zone/lighting/*/c1/level``)
  compiled by :func:`fnmatch.translate` (one regular expression, matched
  in C), per id, one pass before each pass of every figure (interleaved;
  the best pass of each is kept);
- **cityvisor** (:mod:`cityvisor.core.patterns`) on the same benign pattern,
  and on hostile patterns with ids built to make a backtracking matcher try
  everything; each figure is printed with its ratio to the baseline;
- the **backtracking translation** cityvisor used before (``*`` ->
  ``[^/]*``, ``**`` -> ``.*``) on one hostile id of growing length, until one
  id takes more than ``--give-up`` seconds: the stall the matcher removed.

Run ``python -m bench.patterns`` from the repository root (about 10 s), or
``--quick``. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import re
import time
from collections.abc import Callable

from cityvisor.core.patterns import compile_pattern

BENIGN = "zone/lighting/*/c1/level"
HOSTILE = [
    ("**?**?**?**?!", lambda n: "zone/lighting/" + "x" * n + "/level"),
    ("*a*a*a*a*a*a*a*a*b", lambda n: "a" * n),
    ("**/a/**/a/**/a/**/a/**/b", lambda n: "/".join(["a"] * n)),
]


def backtracking(pattern: str) -> re.Pattern[str]:
    """The translation cityvisor used before its linear-time matcher."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        else:
            char = pattern[i]
            parts.append({"*": "[^/]*", "?": "[^/]", "/": "/"}.get(char, re.escape(char)))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def per_id(match: Callable[[list[str]], object], ids: list[str], rounds: int) -> float:
    """Best nanoseconds per id over ``rounds`` passes."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        match(ids)
        best = min(best, time.perf_counter() - started)
    return best / len(ids) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--give-up", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="10,000 ids, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.ids, args.rounds, args.give_up = 10_000, 2, 0.5
    print(f"{platform.python_implementation()} {platform.python_version()}, ", end="")
    print(f"load average {os.getloadavg()[0]:.2f}, {args.ids:,} ids")

    benign_ids = [f"zone/lighting/cab-{i}/c{i % 4}/level" for i in range(args.ids)]
    raw = re.compile(fnmatch.translate(BENIGN)).match
    ours = compile_pattern(BENIGN)
    hostile = [
        (pattern, compile_pattern(pattern), [f"{make_id(40)}{i}" for i in range(args.ids)])
        for pattern, make_id in HOSTILE
    ]
    # Interleaved pass by pass (baseline, each figure, baseline, ...), the best
    # of each kept: a burst of load elsewhere hits them alike.
    best: dict[str, float] = {}

    def one_pass(label: str, match: Callable[[list[str]], object], ids: list[str]) -> None:
        best[label] = min(best.get(label, float("inf")), per_id(match, ids, 1))

    for _ in range(args.rounds):
        one_pass("raw", lambda ids: [i for i in ids if raw(i)], benign_ids)
        one_pass(BENIGN, ours.filter, benign_ids)
        for pattern, compiled, ids in hostile:
            one_pass("raw", lambda ids: [i for i in ids if raw(i)], benign_ids)
            one_pass(pattern, compiled.filter, ids)
    baseline = best["raw"]
    print(f"raw baseline: fnmatch regex, {BENIGN!r}: {baseline:.0f} ns/id")
    figure = best[BENIGN]
    print(f"cityvisor, {BENIGN!r}: {figure:.0f} ns/id ({figure / baseline:.1f} x raw)")

    for pattern, make_id in HOSTILE:
        figure = best[pattern]
        print(f"cityvisor, hostile {pattern!r}: {figure:.0f} ns/id ({figure / baseline:.1f} x raw)")
        old = backtracking(pattern)
        size = 4
        while True:
            point_id = make_id(size)
            started = time.perf_counter()
            old.match(point_id)
            took = time.perf_counter() - started
            if took > args.give_up or size >= 40:
                break
            size += 2
        print(f"  backtracking, one id of {len(point_id)} characters: {took * 1e3:,.0f} ms")


if __name__ == "__main__":
    main()
