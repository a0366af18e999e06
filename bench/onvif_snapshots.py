"""Camera snapshots for a video wall: what reaches the cameras, and how fast browsers get pictures.

``--cameras`` simulated ONVIF cameras (one port each, in this process) run
under a real hub with the cameras plugin; ``--clients`` browsers each show
every camera and ask for every picture once per second through
``GET /api/v1/cameras/{id}/snapshot`` (six connections per browser, as an
HTTP/1.1 browser opens to one server), for ``--duration`` seconds. Measured:

- **requests reaching the cameras** (snapshots the simulators served), per
  camera per second: the shared cache must hold it to one;
- the browsers' **latency** per picture (p50, p99, max) and their error count;
- the cache's own counters (fetches, served from memory, shared fetches).

Then the same load with the cache's age set to zero (``--compare``, on by
default in a full run): concurrent requests still share one fetch, but every
request that finds no fetch in flight reaches a camera. The gap is what the
one-second cache saves the cameras.

The **raw baseline**, in the same run and before each of those phases
(interleaved): a bare aiohttp proxy of the same cameras, in the same
process, on the same route: each request fetches the camera's snapshot
URI through one aiohttp client session per camera (HTTP Digest by
aiohttp's own middleware) and returns the picture, with no cache, no
sharing, no limits. Each phase's rate and latency are printed with their
ratio to the raw phase just before it.

Everything runs in one process on loopback; the web server is the plugin's
routes behind a stand-in session check (the figures are the plugin's, not
the HMI's). Run ``python -m bench.onvif_snapshots`` (about a minute) or
``--quick`` (a few seconds). Results are written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.users import Role, User
from cityvisor.hal.sim.camera import SimulatedCamera, run_cameras
from cityvisor.plugins import cameras as cameras_plugin
from cityvisor.plugins.cameras.evidence import CameraServices

PASSWORD = "bench-password"
VIEWER = User("wall", Role.VIEWER)


@dataclass
class Phase:
    """The figures of one load phase."""

    name: str
    max_age: float
    raw: bool = False
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    camera_requests: list[int] = field(default_factory=list)
    cache: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def deployment(cameras: list[SimulatedCamera], directory: Path) -> Path:
    devices = "\n".join(
        f"""
[[devices]]
id = "cam-{i:02d}"
type = "cameras.camera"
zone = "centre"
config = {{ host = "{c.host}", port = {c.port}, username = "bench", password = "{PASSWORD}" }}
"""
        for i, c in enumerate(cameras)
    )
    path = directory / "bench.toml"
    path.write_text(
        f'[site]\nname = "Bench"\n[store]\npath = "bench.sqlite"\n'
        f'[[zones]]\nid = "centre"\nname = "Centre"\n{devices}',
        encoding="utf-8",
    )
    return path


def web_app(hub: Hub) -> web.Application:
    """The plugin's routes behind a stand-in session check that logs every request in."""

    @web.middleware
    async def session(request: web.Request, handler: Any) -> web.StreamResponse:
        request["user"] = VIEWER
        return await handler(request)

    app = web.Application(middlewares=[session])
    for _, routes in hub.plugins.call_each("cityvisor_web_routes", hub=hub):
        app.router.add_routes(routes)
    return app


def raw_proxy(cameras: list[SimulatedCamera], camera_ids: list[str]) -> web.Application:
    """The baseline: ``GET /api/v1/cameras/{id}/snapshot`` fetched from the camera every time."""
    token = SimulatedCamera.PROFILES[0][0]
    targets = {
        camera_id: f"{camera.url}/onvif/snapshot?profile={token}"
        for camera_id, camera in zip(camera_ids, cameras, strict=True)
    }
    sessions: dict[str, aiohttp.ClientSession] = {}

    async def snapshot(request: web.Request) -> web.StreamResponse:
        camera_id = request.match_info["camera_id"]
        session = sessions.get(camera_id)
        if session is None:
            session = sessions[camera_id] = aiohttp.ClientSession(
                middlewares=(aiohttp.DigestAuthMiddleware("bench", PASSWORD),)
            )
        async with session.get(targets[camera_id]) as response:
            body = await response.read()
            return web.Response(
                status=response.status, body=body, content_type=response.content_type
            )

    async def close(app: web.Application) -> None:
        for session in sessions.values():
            await session.close()

    app = web.Application()
    app.router.add_get("/api/v1/cameras/{camera_id}/snapshot", snapshot)
    app.on_cleanup.append(close)
    return app


async def browser(
    base: str, camera_ids: list[str], until: float, latencies: list[float], errors: list[int]
) -> None:
    """One browser showing every camera: all pictures once a second, six connections."""
    connector = aiohttp.TCPConnector(limit=6)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def picture(camera_id: str) -> None:
            started = time.perf_counter()
            try:
                async with session.get(f"/api/v1/cameras/{camera_id}/snapshot") as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors[0] += 1

        while (start := time.monotonic()) < until:
            async with anyio.create_task_group() as tg:
                for camera_id in camera_ids:
                    tg.start_soon(picture, camera_id)
            await anyio.sleep(max(0.0, start + 1.0 - time.monotonic()))


def browsers(
    base: str, camera_ids: list[str], clients: int, duration: float
) -> tuple[list[float], int, float]:
    """Every browser, in a process of its own (run there): latencies, errors, seconds."""
    latencies: list[float] = []
    errors = [0]

    async def all_browsers() -> None:
        until = time.monotonic() + duration
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(browser, base, camera_ids, until, latencies, errors)

    started = time.monotonic()
    anyio.run(all_browsers, backend="asyncio")
    return latencies, errors[0], time.monotonic() - started


async def measure(
    hub: Hub, base: str, cameras: list[SimulatedCamera], phase: Phase, clients: int, duration: float
) -> None:
    cache = CameraServices.of(hub).snapshots
    cache.max_age = phase.max_age
    cache.clear()
    cache.fetches = cache.hits = cache.shared = 0
    before = [c.requests["snapshot"] for c in cameras]
    camera_ids = sorted(hub.devices)
    # The browsers get a process (and so a core) of their own: in this one they
    # would compete with the server they measure.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(browsers, base, camera_ids, clients, duration)
        phase.latencies, phase.errors, phase.seconds = await anyio.to_thread.run_sync(future.result)
    phase.camera_requests = [
        c.requests["snapshot"] - b for c, b in zip(cameras, before, strict=True)
    ]
    phase.cache = {"fetches": cache.fetches, "hits": cache.hits, "shared": cache.shared}


async def run(args: argparse.Namespace) -> list[Phase]:
    cameras = [
        SimulatedCamera(f"Camera {i:02d}", username="bench", password=PASSWORD)
        for i in range(args.cameras)
    ]
    phases = [Phase("raw aiohttp proxy", 0.0, raw=True), Phase("cache 1 s", 1.0)]
    if args.compare:
        phases.append(Phase("raw aiohttp proxy", 0.0, raw=True))
        phases.append(Phase("no cache (shared fetches only)", 0.0))
    with tempfile.TemporaryDirectory(prefix="cityvisor-bench-") as tmp:
        async with anyio.create_task_group() as tg:
            await tg.start(run_cameras, cameras)  # their ports go into the deployment file
            manager = make_plugin_manager(entry_points=False, plugins=[cameras_plugin], builtins=())
            hub = Hub(load_config(deployment(cameras, Path(tmp))), manager)
            await tg.start(hub.run)
            with anyio.fail_after(120):
                for device_id in hub.devices:
                    online = f"centre/cameras/{device_id}/online"
                    await hub.points.wait_for(online, lambda v: v.value is True, 120)
            runner = web.AppRunner(web_app(hub), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            raw = web.AppRunner(raw_proxy(cameras, sorted(hub.devices)), access_log=None)
            await raw.setup()
            await web.TCPSite(raw, "127.0.0.1", 0).start()
            raw_host, raw_port = raw.addresses[0][:2]
            try:
                for phase in phases:
                    base = f"http://{raw_host}:{raw_port}" if phase.raw else f"http://{host}:{port}"
                    await measure(hub, base, cameras, phase, args.clients, args.duration)
            finally:
                await raw.cleanup()
                await runner.cleanup()
                tg.cancel_scope.cancel()
    return phases


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    print(
        f"camera snapshots: {args.cameras} cameras, {args.clients} browsers asking for every "
        f"picture every second, {args.duration:g} s per phase "
        f"(load average at start {args.load:.2f}, {os.cpu_count()} CPUs)"
    )
    raw: Phase | None = None
    for phase in phases:
        total = sum(phase.camera_requests)
        per_camera = [n / phase.seconds for n in phase.camera_requests]
        asked = len(phase.latencies)
        print(f"\n{phase.name}:")
        print(
            f"  browser requests: {asked:,} ({asked / phase.seconds:,.0f}/s), errors: {phase.errors}"
        )
        if phase.raw:
            raw = phase
        elif raw is not None:
            rate, raw_rate = asked / phase.seconds, len(raw.latencies) / raw.seconds
            print(
                f"  against the raw proxy just before: {rate / raw_rate:.2f} x its rate,"
                f" {phase.percentile(0.5) / raw.percentile(0.5):.2f} x its p50 latency,"
                f" {total / max(1, sum(raw.camera_requests)):.2f} x its camera requests"
            )
        print(
            f"  requests reaching the cameras: {total:,} "
            f"({total / phase.seconds:,.1f}/s); per camera: mean {statistics.fmean(per_camera):.2f}/s, "
            f"max {max(per_camera):.2f}/s"
        )
        print(
            f"  latency: p50 {phase.percentile(0.50):.1f} ms, p99 {phase.percentile(0.99):.1f} ms, "
            f"max {max(phase.latencies, default=0) * 1000:.1f} ms"
        )
        print(
            f"  cache: fetches {phase.cache['fetches']:,}, served from memory "
            f"{phase.cache['hits']:,}, shared fetches {phase.cache['shared']:,}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=50, help="simulated cameras (default 50)")
    parser.add_argument("--clients", type=int, default=20, help="browsers (default 20)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false", help="skip the run without cache"
    )
    parser.add_argument("--quick", action="store_true", help="a small run of a few seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.cameras, args.clients, args.duration, args.compare = 5, 3, 2.0, False
    args.load = os.getloadavg()[0]
    # The stand-in session sets request["user"] with a plain string key, as the
    # hook contract says; aiohttp 3.14 would rather have a web.RequestKey.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)
    logging.basicConfig(level=logging.ERROR)
    phases = anyio.run(run, args, backend="asyncio")
    report(phases, args)
    # Exit status 1 if a camera got more than one request per second of the cached phase.
    cached = next(p for p in phases if p.max_age > 0)
    return 0 if max(cached.camera_requests) <= math.ceil(cached.seconds) + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
