"""SNMP polling benchmark: 50 simulated 48-port switches polled by the switches plugin.

The switches are simulated in **separate processes** (``--serve``, split in
``--agent-processes``), so that their CPU is not the poller's. Measured in
this process, in one run, against the same agents:

- **paired cycles** (the figure the target is about): a cycle polls every
  switch once, all at once. (raw) plain pysnmp, no cityvisor code: per
  switch a GET of sysName/sysDescr/sysUpTime and a GETBULK walk of the
  IF-MIB columns the plugin reads, the same PDUs (same columns, same
  max-repetitions), values kept in a dict; (cityvisor) the plugin's own
  poll of every device of a running hub: the HAL's GET and walk, counter
  rates, port status, publish into the point database with its alarms and
  history. Raw and cityvisor cycles alternate (the order swapping each
  pair), so load from elsewhere hits both alike; the ratio is the median
  of the pairs' ratios, for wall time and for this process's CPU time.
- **free-running at the period**: the hub's drivers polling on their own
  schedule every ``--period`` seconds, against a raw loop doing the same:
  the cycle as the drivers see it (first start to last end of one round of
  polls) and the CPU share of one core, background work included.

    python -m bench.snmp_poll              # 50 switches x 48 ports (about 3 minutes)
    python -m bench.snmp_poll --quick      # 3 switches, seconds; tests/test_bench_smoke.py runs it

Results are written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
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

from cityvisor import hookimpl
from cityvisor.core.config import parse_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal.sim.switch import simulated_switches
from cityvisor.hal.snmp import SYS_DESCR, SYS_NAME, SYS_UPTIME
from cityvisor.plugins.switches import COLUMNS, Switch

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "bench.snmp_poll", "--serve"]
TARGET_RATIO = 1.2
TIMEOUT = 5.0
"""Seconds per SNMP attempt, for both sides: many agents share few cores here."""

Address = tuple[str, int]


# --------------------------------------------------------------------------- the agents


async def serve(count: int, ports: int) -> None:
    """Run simulated switches until our standard input closes (the parent is done)."""
    async with simulated_switches(count, ports=ports) as switches:
        print(json.dumps([list(s.address) for s in switches]), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def start_agents(switches: int, ports: int, processes: int) -> tuple[list[Any], list[Address]]:
    """Start the agent processes; return them and every switch's address."""
    shares = [len(range(n, switches, processes)) for n in range(processes)]
    agents = [
        subprocess.Popen(
            [*SERVE, "--switches", str(share), "--ports", str(ports)],
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


# --------------------------------------------------------------------------- raw pysnmp


class RawPoller:
    """Plain pysnmp: one engine, one target per switch, the plugin's PDUs."""

    def __init__(self, addresses: list[Address]) -> None:
        self.addresses = addresses
        self.engine = SnmpEngine()
        self.targets: list[UdpTransportTarget] = []
        self.requests = 0

    @classmethod
    @asynccontextmanager
    async def running(cls, addresses: list[Address]) -> AsyncIterator[RawPoller]:
        """A poller whose engine is closed on exit."""
        poller = cls(addresses)
        try:
            for address in addresses:
                target = await UdpTransportTarget.create(address, timeout=TIMEOUT, retries=1)
                poller.targets.append(target)
            yield poller
        finally:
            poller.engine.close_dispatcher()

    async def cycle(self) -> None:
        """Poll every switch once, all at once."""
        async with anyio.create_task_group() as tg:
            for target in self.targets:
                tg.start_soon(self.poll, target)

    async def poll(self, target: UdpTransportTarget) -> None:
        """One switch: GET of the system group, then a GETBULK walk of the columns."""
        engine, auth = self.engine, CommunityData("public")
        scalars = [ObjectType(ObjectIdentity(oid)) for oid in (SYS_NAME, SYS_DESCR, SYS_UPTIME)]
        error, *_ = await get_cmd(engine, auth, target, ContextData(), *scalars, lookupMib=False)
        assert error is None, error
        self.requests += 1
        prefixes = [tuple(int(n) for n in oid.split(".")) for oid in COLUMNS.values()]
        cursors = list(prefixes)
        active = list(range(len(prefixes)))
        rows: dict[int, list[Any]] = {}
        while active:
            repetitions = max(1, min(25, 60 // len(active)))  # as SnmpClient.walk_table
            request = [ObjectType(ObjectIdentity(cursors[column])) for column in active]
            error, status, _index, var_binds = await bulk_cmd(
                engine, auth, target, ContextData(), 0, repetitions, *request, lookupMib=False
            )
            assert error is None and not status, error or status
            self.requests += 1
            finished: set[int] = set()
            for position, (name, value) in enumerate(var_binds):
                column = active[position % len(active)]
                oid = tuple(name)
                if column in finished or oid[: len(prefixes[column])] != prefixes[column]:
                    finished.add(column)
                    continue
                cursors[column] = oid
                rows.setdefault(oid[-1], []).append(value)
            active = [column for column in active if column not in finished]


# --------------------------------------------------------------------------- the plugin


class TimedSwitch(Switch):
    """The plugin's switch, with the start and end of each poll recorded."""

    type_name = "bench.switch"
    polls: ClassVar[list[tuple[str, float, float]]] = []
    awaited: ClassVar[tuple[int, anyio.Event]] = (0, anyio.Event())

    async def _poll(self) -> None:
        start = time.perf_counter()
        await super()._poll()
        TimedSwitch.polls.append((self.id, start, time.perf_counter()))
        count, event = TimedSwitch.awaited
        if len(TimedSwitch.polls) >= count:
            event.set()

    @classmethod
    async def wait_for_polls(cls, count: int, timeout: float) -> None:
        """Wait until ``count`` polls (every switch together) are done."""
        cls.awaited = (count, anyio.Event())
        if len(cls.polls) < count:
            with anyio.fail_after(timeout):
                await cls.awaited[1].wait()

    @classmethod
    def cycles(cls, skip: int) -> list[float]:
        """The drivers' cycles: the n-th poll of every switch, first start to last end."""
        by_switch: dict[str, list[tuple[float, float]]] = {}
        for switch, start, end in cls.polls:
            by_switch.setdefault(switch, []).append((start, end))
        count = min(len(polls) for polls in by_switch.values())
        return [
            max(polls[n][1] for polls in by_switch.values())
            - min(polls[n][0] for polls in by_switch.values())
            for n in range(skip, count)
        ]


class BenchPlugin:
    """Registers the timed switch type (the bench's only plugin)."""

    @hookimpl
    def cityvisor_device_types(self) -> list[type[Switch]]:
        """The timed switch."""
        return [TimedSwitch]


@asynccontextmanager
async def running_hub(
    addresses: list[Address], period: float, directory: Path
) -> AsyncIterator[Hub]:
    """A hub with one switch device per agent, polling every ``period`` seconds."""
    TimedSwitch.polls = []
    settings = {"ports": 48, "poll_period": period, "timeout": TIMEOUT, "trap_listen": ""}
    devices = [
        {
            "id": f"sw-{number:02d}",
            "type": "bench.switch",
            "zone": "net",
            "config": {"host": host, "port": port, "critical_ports": [47, 48], **settings},
        }
        for number, (host, port) in enumerate(addresses)
    ]
    config = parse_config(
        {
            "site": {"name": "bench"},
            "store": {"path": str(directory / "bench.sqlite")},
            "zones": [{"id": "net", "name": "Network"}],
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
    return sum(d._client.requests for d in hub.devices.values() if d._client)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- measurements


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
    free_cpu_raw: float = 0.0
    free_cpu_hub: float = 0.0
    free_cycles_raw: list[float] = field(default_factory=list)
    free_cycles_hub: list[float] = field(default_factory=list)
    restarts: int = 0


async def timed(cycle: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall, CPU) seconds of one cycle."""
    cpu, wall = time.process_time(), time.perf_counter()
    await cycle()
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(addresses: list[Address], args: argparse.Namespace, directory: Path) -> Figures:
    """Paired cycles, then free-running at the period."""
    figures = Figures()
    async with RawPoller.running(addresses) as raw:
        # Paired: the hub's drivers are idle (an hour's period) after their first poll;
        # the bench calls the plugin's poll of every device itself.
        async with running_hub(addresses, 3600, directory / "paired") as hub:
            await TimedSwitch.wait_for_polls(len(addresses), timeout=120)
            devices = list(hub.devices.values())

            async def hub_cycle() -> None:
                async with anyio.create_task_group() as tg:
                    for device in devices:
                        tg.start_soon(device._poll)  # type: ignore[attr-defined]

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

        # Free-running: the drivers on their own schedule, then the raw loop at the same rate.
        seconds = args.free_cycles * args.period
        async with running_hub(addresses, args.period, directory / "free") as hub:
            await TimedSwitch.wait_for_polls(len(addresses), timeout=120)
            cpu, wall = time.process_time(), time.perf_counter()
            await TimedSwitch.wait_for_polls(
                (1 + args.free_cycles) * len(addresses), timeout=seconds + 120
            )
            figures.free_cpu_hub = (time.process_time() - cpu) / (time.perf_counter() - wall)
            figures.free_cycles_hub = TimedSwitch.cycles(skip=1)
            figures.restarts += hub.supervisor.restarts
        cpu, wall, next_cycle = time.process_time(), time.perf_counter(), anyio.current_time()
        for _cycle in range(args.free_cycles):
            started = time.perf_counter()
            await raw.cycle()
            figures.free_cycles_raw.append(time.perf_counter() - started)
            next_cycle += args.period
            await anyio.sleep_until(next_cycle)
        figures.free_cpu_raw = (time.process_time() - cpu) / (time.perf_counter() - wall)
        figures.free_seconds = seconds
    return figures


# --------------------------------------------------------------------------- report


def report(figures: Figures, args: argparse.Namespace, load: float) -> bool:
    """Print the figures; return whether the ratio meets the target."""
    median = statistics.median
    print(
        f"SNMP polling: {args.switches} switches x {args.ports} ports, "
        f"agents in {args.agent_processes} process(es)"
    )
    print(
        f"Python {platform.python_version()}, pysnmp {pysnmp.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print()
    print(f"Paired cycles ({args.cycles} pairs, every switch polled once per cycle)")
    print(
        f"  requests per cycle: raw {figures.raw_requests:.0f}, cityvisor {figures.hub_requests:.0f}"
    )
    print(
        f"  raw pysnmp GET + GETBULK walk:  wall median {median(figures.raw_wall):6.3f} s, "
        f"CPU median {median(figures.raw_cpu):6.3f} s"
    )
    print(
        f"  cityvisor switches plugin:      wall median {median(figures.hub_wall):6.3f} s, "
        f"CPU median {median(figures.hub_cpu):6.3f} s"
    )
    wall_ratio = median(h / r for h, r in zip(figures.hub_wall, figures.raw_wall, strict=True))
    cpu_ratio = median(h / r for h, r in zip(figures.hub_cpu, figures.raw_cpu, strict=True))
    print(
        f"  ratio cityvisor / raw (median of paired cycles): {wall_ratio:.3f} x wall, "
        f"{cpu_ratio:.3f} x CPU (target <= {TARGET_RATIO:g} x)"
    )
    print()
    print(f"Free-running every {args.period:g} s ({figures.free_seconds:.0f} s each)")
    print(
        f"  raw loop:   cycle median {median(figures.free_cycles_raw):6.3f} s, "
        f"CPU {figures.free_cpu_raw:6.1%} of one core"
    )
    print(
        f"  hub:        cycle median {median(figures.free_cycles_hub):6.3f} s, "
        f"CPU {figures.free_cpu_hub:6.1%} of one core"
    )
    print(f"  {figures.restarts} driver restarts")
    return wall_ratio <= TARGET_RATIO and cpu_ratio <= TARGET_RATIO


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve``, agents for it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=50)
    parser.add_argument("--ports", type=int, default=48)
    parser.add_argument("--cycles", type=int, default=8, help="paired cycles measured")
    parser.add_argument("--period", type=float, default=10.0, help="free-running poll period")
    parser.add_argument("--free-cycles", type=int, default=3, help="free-running cycles")
    parser.add_argument("--agent-processes", type=int, default=2, help="processes for the agents")
    parser.add_argument("--quick", action="store_true", help="3 switches, a few cycles")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        anyio.run(serve, args.switches, args.ports, backend="asyncio")
        return 0
    if args.quick:
        args.switches, args.cycles, args.period, args.free_cycles = 3, 3, 1.5, 2
        args.agent_processes = 1
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    agents, addresses = start_agents(args.switches, args.ports, args.agent_processes)
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
