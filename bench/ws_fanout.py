"""WebSocket fan-out benchmark: point changes from the PointDB to many browsers.

A hub (no devices, the web plugin on a loopback port) holds ``--points``
points; a producer changes ``--rate`` of them per second (in 10 ms ticks,
each value being the tick's wall-clock time) for ``--seconds``. ``--clients``
WebSocket clients, in a separate process, log in, subscribe to every point
and measure, for each update they receive, the latency from the PointDB
update to its arrival. Measured, in one run:

- **cityvisor**: ``PointDB.update`` -> subscription batches (every 50 ms) ->
  ``/api/v1/ws`` with its sessions, bounded buffers and shared encoding;
- the **raw baseline**: a bare aiohttp WebSocket server that builds the same
  ``changes`` messages every 50 ms from the same updates, encodes each once
  and sends it to every client in turn.

It prints the updates delivered (of those offered), the delivered rate,
latency p50/p99 and the ratio of cityvisor's rate to the raw rate. Targets:
every update delivered, p99 < 100 ms, at least 0.8 x the raw rate.

Run ``python -m bench.ws_fanout`` from the repository root (about 40 s), or
``--quick`` for a few-second smoke run. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

# The client process imports only aiohttp and anyio (it starts in well under a
# second); the server side imports cityvisor inside the functions that need it.

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark password"
PATTERN = "bench/**"
BATCH_INTERVAL = 0.05
TICK = 0.01
BINS_PER_MS = 10
MAX_LATENCY_MS = 10_000

CONFIG = """
[site]
name = "WebSocket fan-out"

[store]
path = "bench.sqlite"

[web]
host = "127.0.0.1"
port = 0
"""

_VALUE = re.compile(r'"value":([0-9.eE+-]+)')


def point_ids(count: int) -> list[str]:
    """The benchmark's points: ``bench/fan/dev{i}/value``."""
    return [f"bench/fan/dev{i:05d}/value" for i in range(count)]


# --------------------------------------------------------------------------- the producer


async def produce(rate: int, seconds: float, update: Callable[[int, float], None]) -> int:
    """Call ``update(i, now)`` ``rate`` times a second in 10 ms ticks; return how many."""
    per_tick = max(1, round(rate * TICK))
    ticks = round(seconds / TICK)
    start = time.monotonic()
    done = 0
    index = 0
    for tick in range(ticks):
        now = time.time()
        for _ in range(per_tick):
            update(index, now)
            index += 1
        done += per_tick
        # Keep the schedule: a late tick is followed by shorter sleeps, never dropped.
        await anyio.sleep(max(0.0, start + (tick + 1) * TICK - time.monotonic()))
    return done


# --------------------------------------------------------------------------- the clients


class Stats:
    """Updates received and a latency histogram (0.1 ms bins)."""

    def __init__(self) -> None:
        self.received = 0
        self.resyncs = 0
        self.lost = 0
        self.first = 0.0
        self.last = 0.0
        self.bins: Counter[int] = Counter()
        self.expected: int | None = None
        self.complete = anyio.Event()

    def changes(self, text: str, now: float) -> None:
        """Count a ``changes`` message's values and their latencies."""
        values = Counter(_VALUE.findall(text))
        count = sum(values.values())
        self.received += count
        if not self.first:
            self.first = now
        self.last = now
        if self.expected is not None and self.received >= self.expected:
            self.complete.set()
        for value, times in values.items():
            latency_ms = (now - float(value)) * 1000
            self.bins[min(MAX_LATENCY_MS * BINS_PER_MS, max(0, int(latency_ms * BINS_PER_MS)))] += (
                times
            )

    def as_json(self) -> dict[str, Any]:
        """The figures, for the parent process."""
        return {
            "received": self.received,
            "resyncs": self.resyncs,
            "lost": self.lost,
            "first": self.first,
            "last": self.last,
            "bins": dict(self.bins),
        }


async def one_client(url: str, login: bool, stats: Stats, ready: Callable[[], None]) -> None:
    """One browser: log in, subscribe to every point, count what arrives."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        headers = {"Origin": url}
        if login:
            async with http.post(
                url + "/api/v1/session",
                json={"username": "bench", "password": PASSWORD},
                headers=headers,
            ) as response:
                assert response.status == 200, await response.text()
        async with http.ws_connect(url + "/api/v1/ws", headers=headers, max_msg_size=0) as ws:
            await ws.send_json({"type": "subscribe", "points": [PATTERN]})
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                text: str = message.data
                now = time.time()
                if text.startswith('{"type":"changes"'):
                    stats.changes(text, now)
                elif text.startswith('{"type":"snapshot"') and '"more":true' not in text[:80]:
                    ready()
                elif text.startswith('{"type":"resync"'):
                    stats.resyncs += 1
                    stats.lost += json.loads(text)["lost"]


async def run_clients(url: str, clients: int, login: bool) -> None:
    """The client process: connect, say READY, count until EXPECTed updates arrived, print stats.

    The parent writes ``EXPECT n`` once it has produced everything; the
    clients stop when ``n`` updates arrived in all, or 60 s later.
    """
    stats = Stats()
    ready = anyio.Event()
    connected = 0

    def one_ready() -> None:
        nonlocal connected
        connected += 1
        if connected == clients:
            ready.set()

    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(one_client, url, login, stats, one_ready)
        await ready.wait()
        print("READY", flush=True)
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        stats.expected = int(line.split()[1])
        if stats.received >= stats.expected:
            stats.complete.set()
        with anyio.move_on_after(60):
            await stats.complete.wait()
        tg.cancel_scope.cancel()
    print(json.dumps(stats.as_json()), flush=True)


# --------------------------------------------------------------------------- the servers


async def measure(
    url: str, clients: int, login: bool, run: Callable[[], Awaitable[int]]
) -> dict[str, Any]:
    """Start the client process, run the producer once every client has its snapshot."""
    command = [sys.executable, "-m", "bench.ws_fanout", "--client", url, "--clients", str(clients)]
    if login:
        command.append("--login")
    async with await anyio.open_process(command, cwd=ROOT, stderr=None) as process:
        assert process.stdout is not None and process.stdin is not None
        lines = _Lines(process.stdout)
        with anyio.fail_after(120):
            line = await lines.next()
        if line != "READY":
            raise RuntimeError(f"client process said {line!r}")
        start = time.time()
        cpu = time.process_time()
        offered = await run()
        await process.stdin.send(f"EXPECT {offered * clients}\n".encode())
        with anyio.fail_after(90):
            result = json.loads(await lines.next())
        result["offered"] = offered * clients
        result["start"] = start
        # The server process's CPU until every update arrived: less sensitive to
        # other processes on the machine than the rate or the latencies.
        result["server_cpu"] = time.process_time() - cpu
        return result


class _Lines:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()


async def measure_cityvisor(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """The hub with its web plugin, the same producer writing into its PointDB."""
    import argon2

    from cityvisor.core.points import DataType, PointSpec
    from cityvisor.core.users import Role
    from cityvisor.plugins import web as web_plugin
    from cityvisor.testing import running_hub
    from cityvisor.web import find_server
    from cityvisor.web.auth import Accounts

    async with running_hub(CONFIG, directory, plugins=[web_plugin]) as hub:
        ids = point_ids(args.points)
        entries = [
            hub.points.register(point_id, PointSpec("value", DataType.FLOAT, history="none"))
            for point_id in ids
        ]
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        accounts = Accounts(hub.store)
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        await accounts.add("bench", PASSWORD, Role.VIEWER, ["*"], hasher=cheap)
        state = server.state
        state.max_clients_per_session = args.clients
        points = hub.points

        def update(index: int, now: float) -> None:
            points.update_point(entries[index % len(entries)], now)

        result = await measure(
            server.url, args.clients, True, lambda: produce(args.rate, args.seconds, update)
        )
        result["server_resyncs"] = state.counters["ws_resyncs"]
        result["server_dropped"] = state.counters["ws_dropped"]
        return result


async def measure_raw(args: argparse.Namespace) -> dict[str, Any]:
    """A bare aiohttp broadcast of the same messages: encode once, send to each client."""
    from cityvisor.core.points import PointValue, Quality
    from cityvisor.web.texts import encode_point

    ids = point_ids(args.points)
    sockets: set[web.WebSocketResponse] = set()
    pending: list[Any] = []
    good = Quality.good()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024)
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                snapshot = [PointValue(i, None, good, 0, 0) for i in ids]
                await ws.send_str(
                    '{"type":"snapshot","sub":1,"points":['
                    + ",".join(encode_point(v) for v in snapshot)
                    + "]}"
                )
                sockets.add(ws)
        sockets.discard(ws)
        return ws

    async def broadcast() -> None:
        nonlocal pending
        while True:
            await anyio.sleep(BATCH_INTERVAL)
            if not pending or not sockets:
                continue
            batch, pending = pending, []
            text = (
                '{"type":"changes","sub":1,"points":['
                + ",".join(json.dumps(v.as_json(), separators=(",", ":")) for v in batch)
                + "]}"
            )
            for ws in list(sockets):
                try:
                    await ws.send_str(text)
                except ConnectionError:  # the client process has finished
                    sockets.discard(ws)

    def update(index: int, now: float) -> None:
        ms = int(now * 1000)
        pending.append(PointValue(ids[index % len(ids)], now, good, ms, ms))

    app = web.Application()
    app.router.add_get("/api/v1/ws", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(broadcast)
            result = await measure(
                f"http://{host}:{port}",
                args.clients,
                False,
                lambda: produce(args.rate, args.seconds, update),
            )
            tg.cancel_scope.cancel()
        return result
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- report


def percentile(bins: dict[str, int], fraction: float) -> float:
    """The latency (ms) below which ``fraction`` of the updates arrived."""
    ordered = sorted((int(k), v) for k, v in bins.items())
    total = sum(v for _, v in ordered)
    if total == 0:
        return float("nan")
    target = fraction * total
    seen = 0
    for index, count in ordered:
        seen += count
        if seen >= target:
            return index / BINS_PER_MS
    return ordered[-1][0] / BINS_PER_MS


def summary(result: dict[str, Any]) -> dict[str, float]:
    """A phase's figures: delivered, rate, latency percentiles, server CPU."""
    elapsed = max(1e-9, result["last"] - result["start"])
    return {
        "received": result["received"],
        "offered": result["offered"],
        "share": result["received"] / max(1, result["offered"]),
        "rate": result["received"] / elapsed,
        "p50": percentile(result["bins"], 0.50),
        "p99": percentile(result["bins"], 0.99),
        "resyncs": result["resyncs"],
        "lost": result["lost"],
        "cpu_us": result["server_cpu"] / max(1, result["received"]) * 1e6,
    }


def report(args: argparse.Namespace, ours: dict[str, Any], raw: dict[str, Any]) -> bool:
    """Print both phases side by side; True if the targets are met."""
    mine, theirs = summary(ours), summary(raw)
    ratio = mine["rate"] / theirs["rate"] if theirs["rate"] else float("nan")
    print(
        f"cityvisor WebSocket fan-out benchmark — Python {platform.python_version()},"
        f" {platform.system()}, {os.cpu_count()} CPUs, load average at start {args.load:.2f}"
    )
    if args.load > 0.5:
        print("  (other processes were running: they skew every figure; compare the ratios)")
    print(
        f"  {args.points:,} points, {args.rate:,} changes/s for {args.seconds:g} s,"
        f" {args.clients} clients subscribed to every point (clients in a second process),"
        f" best of {args.repeat}"
    )
    print()
    for label, figures in (("raw aiohttp broadcast", theirs), ("cityvisor /api/v1/ws", mine)):
        print(
            f"  {label:<24} delivered {figures['received']:>10,.0f} of {figures['offered']:,.0f}"
            f" ({figures['share']:.1%})  {figures['rate']:>10,.0f}/s"
            f"  latency p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms"
            f"  server CPU {figures['cpu_us']:.2f} us/update"
        )
    print(
        f"  cityvisor resyncs: {mine['resyncs']:.0f} (lost {mine['lost']:.0f}),"
        f" clients dropped: {ours['server_dropped']}"
    )
    print(f"  ratio: {ratio:.2f} x raw")
    met = mine["share"] >= 0.999 and mine["p99"] < 100 and ratio >= 0.8
    print(f"  targets (all delivered, p99 < 100 ms, >= 0.8 x raw): {'met' if met else 'NOT met'}")
    return met


def main(argv: list[str] | None = None) -> int:
    """Run both phases and print the report (or be the client process with --client)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000, help="points changed in turn")
    parser.add_argument("--rate", type=int, default=10_000, help="point changes per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to produce")
    parser.add_argument("--clients", type=int, default=50, help="WebSocket clients")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each, interleaved; the fastest is kept"
    )
    parser.add_argument("--quick", action="store_true", help="a small run of a few seconds")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--login", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.client:
        anyio.run(run_clients, args.client, args.clients, args.login, backend="asyncio")
        return 0
    if args.quick:
        args.points, args.rate, args.seconds, args.clients, args.repeat = 200, 2_000, 2.0, 10, 1
    args.load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cityvisor-bench-") as tmp:
        raws, ours = [], []
        for attempt in range(args.repeat):
            # Interleaved, so that a burst of load elsewhere hits both alike.
            raws.append(anyio.run(measure_raw, args, backend="asyncio"))
            directory = Path(tmp) / str(attempt)
            directory.mkdir()
            ours.append(anyio.run(measure_cityvisor, args, directory, backend="asyncio"))
    report(
        args,
        max(ours, key=lambda r: summary(r)["rate"]),
        max(raws, key=lambda r: summary(r)["rate"]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
