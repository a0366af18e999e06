"""Dispatch benchmark: the nearest crew among 500 vehicles, 10,000 open incidents, OsmAnd positions.

Measured, in one run:

- **nearest-crew query**: :meth:`Operations.propose` for open incidents
  picked at random among ``--incidents`` (10,000) held by the incident book,
  with ``--vehicles`` (500) crews placed at random over a 20 km square, a
  third of them busy and each with one or two of four skills. The raw
  baseline is a bare loop computing the same haversine over the same 500
  positions and keeping the minimum (no skill, state or zone filter, no
  sorting of the candidates).
- **positions ingested per second**: trackers posting OsmAnd
  ``GET /?id=..&lat=..&lon=..&timestamp=..&speed=..&token=..`` over
  ``--connections`` keep-alive connections to the trackers' aiohttp
  application (parsing, token check, fleet update), against a raw aiohttp
  handler that only reads ``lat`` and ``lon`` as floats, on the same
  loopback, with the same client in the same process.

Run ``python -m bench.ops_dispatch`` from the repository root (about 20 s),
or ``--quick`` for a smoke run. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

CONFIG = """
[site]
name = "Dispatch benchmark"

[store]
path = "bench.sqlite"

[[zones]]
id = "city"
name = "City"

[plugins.ops]
enabled = true
"""

SKILLS = ("lighting", "roads", "police", "network")
CENTRE = (47.322, 5.041)


def _spot(rng: random.Random) -> tuple[float, float]:
    # About 20 km x 20 km around Dijon.
    return CENTRE[0] + rng.uniform(-0.09, 0.09), CENTRE[1] + rng.uniform(-0.13, 0.13)


def _haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def build(vehicles: int, incidents: int, directory: Path) -> Any:
    """An Operations layer with ``vehicles`` placed crews and ``incidents`` open incidents."""
    from cityvisor.core.alarms import Priority
    from cityvisor.core.config import load_config
    from cityvisor.core.hub import Hub
    from cityvisor.core.plugins import make_plugin_manager
    from cityvisor.ops.crews import Crew, CrewState, Position
    from cityvisor.ops.incidents import Incident, State
    from cityvisor.ops.operations import Operations
    from cityvisor.plugins import ops as ops_plugin

    path = directory / "bench.toml"
    path.write_text(CONFIG, encoding="utf-8")
    manager = make_plugin_manager(entry_points=False, builtins=(), plugins=[ops_plugin])
    hub = Hub(load_config(path), manager)
    ops = Operations(hub, hub.config.settings("ops"))
    rng = random.Random(7)
    now = int(time.time() * 1000)
    for n in range(vehicles):
        skills = frozenset(rng.sample(SKILLS, rng.choice((1, 2))))
        crew = Crew(f"crew-{n}", f"Crew {n}", skills, f"tracker-{n}")
        ops.fleet.add(crew)
        ops._tokens[crew.tracker] = f"token-{n:04}-0123456789"
        crew.position = Position(*_spot(rng), now)
        if n % 3 == 0:
            crew.state = CrewState.DISPATCHED
    for n in range(1, incidents + 1):
        ops.book.incidents[n] = Incident(
            n,
            f"incident {n}",
            "city",
            Priority(rng.randint(1, 4)),
            rng.choice((State.NEW, State.ASSIGNED, State.ON_SITE)),
            now,
            "bench",
            now,
            _spot(rng),
            skill=rng.choice(SKILLS),
        )
    return ops


def bench_queries(ops: Any, queries: int) -> tuple[list[float], list[float]]:
    """Per-query times (s) of ``propose`` and of the raw loop, same incidents."""
    rng = random.Random(11)
    chosen = rng.sample(list(ops.book.incidents.values()), queries)
    positions = [(c.position.lat, c.position.lon) for c in ops.fleet.crews.values()]
    ours, raw = [], []
    for incident in chosen:
        started = time.perf_counter()
        found = ops.propose(incident)
        ours.append(time.perf_counter() - started)
        assert found, "no crew proposed"
        started = time.perf_counter()
        best = min(_haversine(p, incident.location) for p in positions)
        raw.append(time.perf_counter() - started)
        assert best <= found[0].distance_m + 1e-6
    return ours, raw


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _post_positions(port: int, vehicles: int, seconds: float, connections: int) -> int:
    """Positions answered 200 within ``seconds`` over ``connections`` keep-alive connections."""
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def tracker(offset: int) -> None:
            nonlocal done
            rng = random.Random(offset)
            n = offset
            while time.perf_counter() < deadline:
                n = (n + connections) % vehicles
                lat, lon = _spot(rng)
                params = {
                    "id": f"tracker-{n}",
                    "lat": f"{lat:.6f}",
                    "lon": f"{lon:.6f}",
                    "timestamp": str(int(time.time())),
                    "speed": "12.5",
                    "token": f"token-{n:04}-0123456789",
                }
                async with http.get(f"http://127.0.0.1:{port}/", params=params) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                    else:
                        raise RuntimeError(f"position refused: {response.status}")

        async with anyio.create_task_group() as tg:
            for offset in range(connections):
                tg.start_soon(tracker, offset)
    return done


def raw_app() -> web.Application:
    """The baseline: read ``lat`` and ``lon`` as floats, answer 200."""

    async def position(request: web.Request) -> web.Response:
        float(request.query["lat"])
        float(request.query["lon"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/", position)
    return app


async def bench_ingest(
    ops: Any, vehicles: int, seconds: float, connections: int
) -> tuple[float, float]:
    """Positions per second: the trackers' application and the raw handler, in turns."""
    from cityvisor.ops.http import tracker_app

    # Interleaved: the two servers take turns, twice, and the best of each is kept.
    rates = [0.0, 0.0]
    for _ in range(2):
        for n, app in enumerate((tracker_app(ops), raw_app())):
            runner, port = await _serve(app)
            try:
                await _post_positions(port, vehicles, 0.5, connections)  # warm up
                count = await _post_positions(port, vehicles, seconds / 2, connections)
            finally:
                await runner.cleanup()
            rates[n] = max(rates[n], count / (seconds / 2))
    return rates[0], rates[1]


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.seconds = 200, 1.0
    logging.basicConfig(level=logging.WARNING)
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as directory:
        ops = build(args.vehicles, args.incidents, Path(directory))
        ours, raw = bench_queries(ops, args.queries)
        median, base = statistics.median(ours), statistics.median(raw)
        print(
            f"nearest crew, {args.vehicles} vehicles, {len(ops.book.open_incidents())} open "
            f"incidents: median {median * 1e6:.0f} us, p99 {_ms(ours, 0.99):.2f} ms, "
            f"raw loop median {base * 1e6:.0f} us, {median / base:.2f} x baseline"
        )
        started = time.perf_counter()
        ops.book.open_incidents()
        print(
            f"open incidents listed (sorted by priority): {(time.perf_counter() - started) * 1000:.1f} ms"
        )
        ours_rate, raw_rate = anyio.run(
            bench_ingest, ops, args.vehicles, args.seconds, args.connections
        )
        print(
            f"positions ingested: {ours_rate:,.0f}/s, raw aiohttp handler {raw_rate:,.0f}/s, "
            f"{ours_rate / raw_rate:.2f} x baseline ({args.connections} connections)"
        )
        print(f"fleet: {ops.fleet.positions_received:,} positions received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
