"""Points listing benchmark: the event loop's lag while ``GET /api/v1/points`` lists the city.

A hub with its web plugin holds ``--points`` points. A loop-lag probe in the
hub's loop asks for a 1 ms sleep again and again and notes how late it
wakes. A client in another process (so that neither its loop nor its JSON
decoding shares the hub's loop or its GIL) lists the city. Measured, in one run, each phase
*interleaved* with the idle baseline (idle, phase, idle, phase, ...):

- **raw: idle**: the probe alone, nothing else asked of the hub;
- **raw: one-step encode**: the time to encode every point's JSON in one
  ``json.dumps``, as a listing built in one go holds the loop;
- **pages**: the whole city in pages of ``--page`` points, each asked with
  the previous page's ``next`` as ``cursor``;
- **one request**: ``limit=100000`` (the largest page), streamed.

For each: the probe's lag p50, p99 and max, in milliseconds, and the wall
time of the listing. The target: lag p99 and max under 20 ms.

Run ``python -m bench.points_listing`` from the repository root (about
40 s at 250,000 points), or ``--quick``. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

CONFIG = """
[site]
name = "Points listing"

[store]
path = "bench.sqlite"

[web]
host = "127.0.0.1"
port = 0
"""

PASSWORD = "correct horse battery"


class Probe:
    """Loop lag: how late a 1 ms sleep wakes, sampled while ``running``."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.running = False

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await anyio.sleep(0.001)
            if self.running:
                self.lags.append((time.perf_counter() - started - 0.001) * 1000)

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags


def opener(url: str) -> urllib.request.OpenerDirector:
    """A blocking HTTP client with a cookie jar, logged in as the bench user."""
    jar = http.cookiejar.CookieJar()
    client = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    client.addheaders = [("Origin", url)]
    body = json.dumps({"username": "bench", "password": PASSWORD}).encode()
    request = urllib.request.Request(
        url + "/api/v1/session", data=body, headers={"Content-Type": "application/json"}
    )
    with client.open(request) as response:
        assert response.status == 200
    return client


def list_pages(client: Any, url: str, page: int) -> int:
    """Every point, page by page with the cursor; how many came."""
    cursor, count = None, 0
    while True:
        query = f"{url}/api/v1/points?limit={page}"
        if cursor is not None:
            query += "&cursor=" + urllib.request.quote(cursor, safe="")
        with client.open(query) as response:
            body = json.loads(response.read())
        count += body["count"]
        if not body["truncated"]:
            return count
        cursor = body["next"]


def list_at_once(client: Any, url: str) -> int:
    with client.open(f"{url}/api/v1/points?limit=100000") as response:
        return int(json.loads(response.read())["count"])


def figures(lags: list[float]) -> str:
    if not lags:
        return "no samples"
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"lag p50 {statistics.median(ordered):6.2f} ms, p99 {p99:6.2f} ms, "
        f"max {ordered[-1]:6.2f} ms ({len(ordered):,} samples)"
    )


async def bench(args: argparse.Namespace, directory: Path) -> None:
    import argon2

    from cityvisor.core.points import DataType, PointSpec
    from cityvisor.core.users import Role
    from cityvisor.plugins import web as web_plugin
    from cityvisor.testing import running_hub
    from cityvisor.web import find_server
    from cityvisor.web.api.devices import _point_json
    from cityvisor.web.auth import Accounts

    async with running_hub(CONFIG, directory, plugins=[web_plugin]) as hub:
        spec = PointSpec("value", DataType.FLOAT, history="none")
        for n in range(args.points):
            zone, rest = divmod(n, max(1, args.points // 100))
            hub.points.register(f"zone-{zone:02d}/lighting/cab-{rest // 10:05d}/p{rest % 10}", spec)
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        await Accounts(hub.store).add("bench", PASSWORD, Role.VIEWER, ["*"], hasher=cheap)
        url = server.url
        probe = Probe()
        encode_label = f"raw: one-step encode ({min(args.points, 100_000):,})"
        samples: dict[str, list[float]] = {}
        walls: dict[str, list[float]] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            for _ in range(args.rounds):
                probe.running = True
                await anyio.sleep(1.0)
                probe.running = False
                samples.setdefault("raw: idle", []).extend(probe.take())
                started = time.perf_counter()
                json.dumps([_point_json(p) for p in list(hub.points.points())[:100_000]])
                walls.setdefault(encode_label, []).append(time.perf_counter() - started)
                for label, mode in (
                    (f"pages of {args.page:,}", "pages"),
                    ("one request, limit=100000", "once"),
                ):
                    command = [sys.executable, "-m", "bench.points_listing", "--client", url]
                    command += ["--mode", mode, "--page", str(args.page)]
                    async with await anyio.open_process(command) as process:
                        assert process.stdout is not None
                        ready = await process.stdout.receive()  # logged in: the listing starts
                        assert ready.startswith(b"ready"), ready
                        probe.running = True
                        started = time.perf_counter()
                        out = b""
                        async for data in process.stdout:
                            out += data
                        await process.wait()
                    count = int(out.split()[-1])
                    walls.setdefault(label, []).append(time.perf_counter() - started)
                    probe.running = False
                    samples.setdefault(label, []).extend(probe.take())
                    assert count == min(args.points, 100_000) or label.startswith("pages")
            tg.cancel_scope.cancel()
        print(f"{'phase':<34} {'wall':>10}   loop lag")
        for label in (encode_label,):
            print(
                f"{label:<34} {statistics.median(walls[label]) * 1000:7.0f} ms   (held the loop throughout)"
            )
        print(f"{'raw: idle':<34} {'':>10}   {figures(samples['raw: idle'])}")
        for label, lags in samples.items():
            if label != "raw: idle":
                wall = statistics.median(walls[label]) * 1000
                print(f"{label:<34} {wall:7.0f} ms   {figures(lags)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250_000)
    parser.add_argument("--page", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 points, one round")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the listing client, in its own process
        client = opener(args.client)
        print("ready", flush=True)
        if args.mode == "pages":
            count = list_pages(client, args.client, args.page)
        else:
            count = list_at_once(client, args.client)
        print(count, flush=True)
        return
    if args.quick:
        args.points, args.rounds = 20_000, 1
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{args.points:,} points")
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(bench, args, Path(directory), backend="asyncio")


if __name__ == "__main__":
    main()
