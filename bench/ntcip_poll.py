"""NTCIP polling benchmark: 300 simulated signal controllers read by the signals plugin.

The controllers are simulated in **separate processes** (``--serve``, split
in ``--agent-processes``), so that their CPU is not the poller's. Measured
in this process, in one run, against the same agents:

- **paired cycles** (the figure): a cycle reads every controller once, all
  at once. (raw) plain pysnmp, no cityvisor code: per controller the same
  PDUs as the plugin, a GET of the status objects (phase groups, holds,
  unit and flash status, pattern, detectors) and a GETBULK walk of the
  priority request status column, values kept in a dict; (cityvisor) the
  plugin's own refresh of every device of a running hub: the HAL's GET and
  walk, decoding of the bitmaps and enumerations, the conflict table per
  phase, publishing into the point database with alarms and history. Raw
  and cityvisor cycles alternate (the order swapping each pair); the ratio
  is the median of the pairs' ratios, for wall time and for CPU time.
- **free-running**: the hub's drivers on their own schedule every
  ``--period`` seconds for a while: polls done against polls due, and the
  CPU share of one core.

    python -m bench.ntcip_poll            # 300 controllers (about two minutes)
    python -m bench.ntcip_poll --quick    # 5 controllers, seconds; tests/test_bench_smoke.py runs it

Results are written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pysnmp
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_cmd,
    get_cmd,
)
from pysnmp.proto import rfc1905

from cityvisor import hookimpl
from cityvisor.core.config import parse_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal import ntcip
from cityvisor.hal.sim.signal_controller import simulated_controllers
from cityvisor.plugins.signals import SignalController

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "bench.ntcip_poll", "--serve"]
TIMEOUT = 5.0
"""Seconds per SNMP attempt, for both sides: many agents share few cores here."""
DETECTORS = [1, 2]
PHASES = [2, 4, 6, 8]

Address = tuple[str, int]


async def serve(count: int) -> None:
    """Run simulated controllers until our standard input closes (the parent is done)."""
    async with simulated_controllers(count, detectors={1: 2, 2: 4}) as controllers:
        print(json.dumps([list(c.address) for c in controllers]), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def start_agents(count: int, processes: int) -> tuple[list[Any], list[Address]]:
    """Start the agent processes; return them and every controller's address."""
    shares = [len(range(n, count, processes)) for n in range(processes)]
    agents = [
        subprocess.Popen(
            [*SERVE, "--controllers", str(share)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    addresses = [
        (str(host), int(port))
        for agent in agents
        for host, port in json.loads(agent.stdout.readline())
    ]
    return agents, addresses


class RawPoller:
    """Plain pysnmp: one engine, one target per controller, the plugin's PDUs."""

    def __init__(self) -> None:
        self.engine = SnmpEngine()
        self.targets: list[UdpTransportTarget] = []
        self.requests = 0
        # The very OIDs the plugin's GET carries (its controller object builds them).
        self.oids = ntcip.NtcipController(None, PHASES, DETECTORS)._status_oids()  # type: ignore[arg-type]
        column = f"{ntcip.PRIORITY_ENTRY}.{ntcip.PRIORITY_COLUMNS['status']}"
        self.priority = tuple(int(n) for n in column.split("."))

    @classmethod
    @asynccontextmanager
    async def running(cls, addresses: list[Address]) -> AsyncIterator[RawPoller]:
        """A poller whose engine is closed on exit."""
        poller = cls()
        try:
            for address in addresses:
                target = await UdpTransportTarget.create(address, timeout=TIMEOUT, retries=1)
                poller.targets.append(target)
            yield poller
        finally:
            poller.engine.close_dispatcher()

    async def cycle(self) -> None:
        """Read every controller once, all at once."""
        async with anyio.create_task_group() as tg:
            for target in self.targets:
                tg.start_soon(self.poll, target)

    async def poll(self, target: UdpTransportTarget) -> dict[Any, Any]:
        """One controller: the status GET (in PDUs of 32 varbinds), then the priority walk."""
        engine, auth = self.engine, CommunityData("private")
        values: dict[Any, Any] = {}
        for start in range(0, len(self.oids), 32):
            chunk = [ObjectType(ObjectIdentity(oid)) for oid in self.oids[start : start + 32]]
            error, status, _i, var_binds = await get_cmd(
                engine, auth, target, ContextData(), *chunk, lookupMib=False
            )
            assert error is None and not status, error or status
            self.requests += 1
            values.update((str(name), int(value)) for name, value in var_binds)
        cursor, prefix = self.priority, self.priority
        while True:
            error, status, _i, var_binds = await bulk_cmd(
                engine,
                auth,
                target,
                ContextData(),
                0,
                25,
                ObjectType(ObjectIdentity(cursor)),
                lookupMib=False,
            )
            assert error is None and not status, error or status
            self.requests += 1
            done = False
            for name, value in var_binds:
                oid = tuple(name)
                if isinstance(value, rfc1905.EndOfMibView) or oid[: len(prefix)] != prefix:
                    done = True
                    break
                cursor = oid
                values[oid] = int(value)
            if done or not var_binds:
                return values


class TimedController(SignalController):
    """The plugin's controller, with each refresh recorded."""

    type_name = "bench.controller"
    refreshes: ClassVar[list[tuple[str, float, float]]] = []

    async def _refresh(self) -> None:
        start = time.perf_counter()
        await super()._refresh()
        TimedController.refreshes.append((self.id, start, time.perf_counter()))

    @classmethod
    def intervals(cls, since: float) -> tuple[list[float], list[float]]:
        """Seconds between a driver's successive reads, and each read's duration, after ``since``."""
        starts: dict[str, list[float]] = {}
        durations = []
        for device, start, end in cls.refreshes:
            if start >= since:
                starts.setdefault(device, []).append(start)
                durations.append(end - start)
        gaps = [b - a for times in starts.values() for a, b in itertools.pairwise(times)]
        return gaps, durations


class BenchPlugin:
    """Registers the timed controller type (the bench's only plugin)."""

    @hookimpl
    def cityvisor_device_types(self) -> list[type[SignalController]]:
        """The timed controller."""
        return [TimedController]


@asynccontextmanager
async def running_hub(
    addresses: list[Address], period: float, directory: Path
) -> AsyncIterator[Hub]:
    """A hub with one controller device per agent, polling every ``period`` seconds."""
    TimedController.refreshes = []
    settings = {"write_community": "private", "detectors": DETECTORS, "poll_period": period}
    devices = [
        {
            "id": f"tsc-{number:03d}",
            "type": "bench.controller",
            "zone": "city",
            "config": {"host": host, "port": port, "timeout": TIMEOUT, **settings},
        }
        for number, (host, port) in enumerate(addresses)
    ]
    config = parse_config(
        {
            "site": {"name": "bench"},
            "store": {"path": str(directory / "bench.sqlite")},
            "zones": [{"id": "city", "name": "City"}],
            "devices": devices,
        }
    )
    hub = Hub(config, make_plugin_manager(builtins=(), entry_points=False, plugins=[BenchPlugin()]))
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        try:
            yield hub
        finally:
            tg.cancel_scope.cancel()


def requests_sent(hub: Hub) -> int:
    """Requests the plugin's SNMP clients have sent."""
    return sum(
        d._ntcip.client.requests  # type: ignore[attr-defined]
        for d in hub.devices.values()
        if d._ntcip is not None  # type: ignore[attr-defined]
    )


async def until_online(hub: Hub, count: int, timeout: float = 180.0) -> None:
    """Wait until every controller has been read once (each driver is online)."""
    with anyio.fail_after(timeout):
        while len(TimedController.refreshes) < count:  # noqa: ASYNC110 - a bench, polling its own hub
            await anyio.sleep(0.1)


@dataclass
class Figures:
    """What one run measured."""

    raw_wall: list[float] = field(default_factory=list)
    raw_cpu: list[float] = field(default_factory=list)
    hub_wall: list[float] = field(default_factory=list)
    hub_cpu: list[float] = field(default_factory=list)
    raw_requests: float = 0.0
    hub_requests: float = 0.0
    free_seconds: float = 0.0
    free_polls: int = 0
    free_gaps: list[float] = field(default_factory=list)
    free_durations: list[float] = field(default_factory=list)
    free_cpu: float = 0.0
    restarts: int = 0


async def timed(cycle: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall, CPU) seconds of one cycle."""
    cpu, wall = time.process_time(), time.perf_counter()
    await cycle()
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(addresses: list[Address], args: argparse.Namespace, directory: Path) -> Figures:
    """Paired cycles, then free-running at the period."""
    figures = Figures()
    async with (
        RawPoller.running(addresses) as raw,
        running_hub(addresses, 3600, directory / "paired") as hub,
    ):
        # The drivers are idle (an hour's period) after their first read; the bench
        # calls the plugin's refresh of every device itself.
        await until_online(hub, len(addresses))
        devices = list(hub.devices.values())

        async def hub_cycle() -> None:
            async with anyio.create_task_group() as tg:
                for device in devices:
                    tg.start_soon(device._refresh)  # type: ignore[attr-defined]

        sent = requests_sent(hub)
        for pair in range(1 + args.cycles):  # the first pair warms up
            if pair % 2:
                raw_wall, raw_cpu = await timed(raw.cycle)
                hub_wall, hub_cpu = await timed(hub_cycle)
            else:
                hub_wall, hub_cpu = await timed(hub_cycle)
                raw_wall, raw_cpu = await timed(raw.cycle)
            if pair == 0:
                raw.requests, sent = 0, requests_sent(hub)
                continue
            figures.raw_wall.append(raw_wall)
            figures.raw_cpu.append(raw_cpu)
            figures.hub_wall.append(hub_wall)
            figures.hub_cpu.append(hub_cpu)
        figures.raw_requests = raw.requests / args.cycles
        figures.hub_requests = (requests_sent(hub) - sent) / args.cycles
        figures.restarts += hub.supervisor.restarts
    async with running_hub(addresses, args.period, directory / "free") as hub:
        await until_online(hub, len(addresses))
        first = len(TimedController.refreshes)
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(args.free_seconds)
        figures.free_seconds = time.perf_counter() - wall
        figures.free_cpu = (time.process_time() - cpu) / figures.free_seconds
        figures.free_polls = len(TimedController.refreshes) - first
        figures.free_gaps, figures.free_durations = TimedController.intervals(since=wall)
        figures.restarts += hub.supervisor.restarts
    return figures


def report(figures: Figures, args: argparse.Namespace, load: float) -> None:
    """Print the figures."""
    median = statistics.median
    print(
        f"NTCIP polling: {args.controllers} controllers ({len(PHASES)} phases, "
        f"{len(DETECTORS)} detectors each), agents in {args.agent_processes} process(es)"
    )
    print(
        f"Python {platform.python_version()}, pysnmp {pysnmp.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print()
    print(f"Paired cycles ({args.cycles} pairs, every controller read once per cycle)")
    print(
        f"  requests per cycle: raw {figures.raw_requests:.0f}, cityvisor {figures.hub_requests:.0f}"
    )
    print(
        f"  raw pysnmp GET + GETBULK walk:  wall median {median(figures.raw_wall):6.3f} s, "
        f"CPU median {median(figures.raw_cpu):6.3f} s"
    )
    print(
        f"  cityvisor signals plugin:       wall median {median(figures.hub_wall):6.3f} s, "
        f"CPU median {median(figures.hub_cpu):6.3f} s"
    )
    wall_ratio = median(h / r for h, r in zip(figures.hub_wall, figures.raw_wall, strict=True))
    cpu_ratio = median(h / r for h, r in zip(figures.hub_cpu, figures.raw_cpu, strict=True))
    print(
        f"  ratio cityvisor / raw (median of paired cycles): {wall_ratio:.3f} x wall, "
        f"{cpu_ratio:.3f} x CPU"
    )
    print()
    print(f"Free-running every {args.period:g} s ({figures.free_seconds:.0f} s)")
    gaps = figures.free_gaps or [0.0]
    print(
        f"  polls: {figures.free_polls}; between two reads of a controller: median "
        f"{median(gaps):.2f} s, max {max(gaps):.2f} s; a read: median "
        f"{median(figures.free_durations or [0.0]):.3f} s"
    )
    print(f"  CPU {figures.free_cpu:6.1%} of one core")
    print(f"  {figures.restarts} driver restarts")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve``, agents for it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=8, help="paired cycles measured")
    parser.add_argument("--period", type=float, default=15.0, help="free-running poll period")
    parser.add_argument("--free-seconds", type=float, default=60.0, help="free-running time")
    parser.add_argument("--agent-processes", type=int, default=2, help="processes for the agents")
    parser.add_argument("--quick", action="store_true", help="5 controllers, a few cycles")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        anyio.run(serve, args.controllers, backend="asyncio")
        return 0
    if args.quick:
        args.controllers, args.cycles, args.period, args.free_seconds = 5, 3, 0.5, 3.0
        args.agent_processes = 1
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    agents, addresses = start_agents(args.controllers, args.agent_processes)
    try:
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / "paired").mkdir()
            (Path(directory) / "free").mkdir()
            figures = anyio.run(measure, addresses, args, Path(directory), backend="asyncio")
    finally:
        for agent in agents:
            if agent.stdin is not None:
                agent.stdin.close()
            agent.wait(timeout=10)
    report(figures, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
