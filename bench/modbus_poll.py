"""Modbus polling benchmark: 100 lighting cabinets of 8 circuits, polled at 1 Hz.

The cabinets are simulated in a **separate process** (``--serve``): one
Modbus/TCP server per cabinet by default, as in the street where each
cabinet has its own modem and address (``--per-gateway N`` puts N cabinets
behind one gateway instead). The servers then use the other CPU and do not
slow the client being measured. In this process, measured in one run:

- **requests per cycle**: the lighting plugin's coalesced read plan against
  one request per point, counted at the client and checked at the servers;
- **poll cycle time**, interleaved cycle by cycle on the same servers, in
  this one process with the hub running in it:
  (raw) a plain pymodbus loop: one client per endpoint (as many connections
  as the hub's pool opens), reading the same register blocks of the same
  units, endpoints in parallel and units in turn, checking only that no
  reply is an exception and decoding nothing;
  (cityvisor) the lighting plugin's own path through the running hub:
  ``ModbusDevice.poll()`` (the endpoint's turn on the wire, pacing, safety
  net, typed errors, reply checks, qualities, decoding of the blocks that
  changed) then the driver's ``publish_poll`` (report by exception into the
  PointDB, with its alarms and history);
  the two alternate which goes first from one cycle to the next, and each
  cityvisor cycle is paired with the raw cycle next to it; and, for scale,
  a few cycles of one raw request per point;
- **CPU at 1 Hz**: the hub left to run its drivers freely at one poll per
  second against the raw loop doing the same at the same rate (CPU seconds
  of this process per second of wall time).

The simulated equipment is idle by default: its registers read the same
from one poll to the next, as most of a cabinet's do, so cityvisor decodes
and publishes little. ``--changing`` moves each cabinet's temperature by
1 °C at every read of its input registers: the block of 45 points that
holds it is then decoded and compared at every poll, and one update per
cabinet passes its deadband into the PointDB.

Run ``python -m bench.modbus_poll`` (about a minute) or ``--quick`` (a few
seconds). Results are written up in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pymodbus.client import AsyncModbusTcpClient

from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal.modbus import ModbusPool, ModbusSettings, Table
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.plugins.lighting import LightingCabinet

HOST = "127.0.0.1"
TARGET_RATIO = 1.15
TARGET_COALESCING = 5.0

# --------------------------------------------------------------------------- the simulated street


class RemoteCabinets(LightingSimulator):
    """Cabinets at the end of a network link: each reply leaves ``latency`` s after its request.

    With ``changing``, every read of a cabinet's input registers first moves
    its temperature 1 °C up (10 to 29 °C, round and round): a value that differs
    at every read, whoever reads.
    """

    latency = 0.0
    changing = False

    async def _action(self, unit: int, *request: Any) -> Any:
        if not self._internal:
            if self.latency:
                await anyio.sleep(self.latency)
            if self.changing and request[0] == 4:
                cabinet = self.cabinets[unit]
                cabinet.temperature = 10.0 + (cabinet.temperature - 9.0) % 20.0
                await self.set(unit, "temperature", cabinet.temperature)
        return await super()._action(unit, *request)


async def serve(
    gateways: int, per_gateway: int, circuits: int, latency: float, changing: bool
) -> None:
    """Run the simulators; answer ``stats`` on stdin with their request count and CPU."""
    async with AsyncExitStack() as stack:
        simulators = []
        for index in range(gateways):
            # Slow ticks: the equipment is idle, the benchmark measures the polling.
            simulator = RemoteCabinets(
                HOST, 0, cabinets=per_gateway, circuits=circuits, tick=1.0, seed=index
            )
            simulator.latency = latency
            simulator.changing = changing
            simulators.append(await stack.enter_async_context(simulator))
        sys.stdout.write(json.dumps({"ports": [s.port for s in simulators]}) + "\n")
        sys.stdout.flush()
        async for line in anyio.wrap_file(sys.stdin):
            if line.strip() != "stats":
                break
            stats = {
                "requests": sum(s.request_count() for s in simulators),
                "cpu": time.process_time(),
            }
            sys.stdout.write(json.dumps(stats) + "\n")
            sys.stdout.flush()


class Street:
    """The simulator process, seen from here: its ports, its counters."""

    def __init__(self, process: subprocess.Popen[str], ports: list[int]) -> None:
        self.process = process
        self.ports = ports

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, gateways: int, per_gateway: int, circuits: int, latency: float, changing: bool = False
    ) -> Any:
        command = [sys.executable, __file__, "--serve", f"--gateways={gateways}"]
        command += [f"--per-gateway={per_gateway}", f"--circuits={circuits}"]
        command += [f"--latency={latency}"] + (["--changing"] if changing else [])
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as process:
            try:
                assert process.stdout is not None
                ports = json.loads(process.stdout.readline())["ports"]
                yield cls(process, ports)
            finally:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(timeout=10)

    def stats(self) -> dict[str, float]:
        """Requests received so far by every simulator, and the server process's CPU seconds."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))


# --------------------------------------------------------------------------- the hub


def city_config(ports: Sequence[int], per_gateway: int, circuits: int, period: float) -> str:
    lines = ['[site]\nname = "bench"\n', '[store]\npath = "bench.sqlite"\n']
    lines.append('[[zones]]\nid = "bench"\nname = "Bench"\n')
    for gateway, port in enumerate(ports):
        for unit in range(1, per_gateway + 1):
            lines.append(
                f'[[devices]]\nid = "cab-{gateway}-{unit}"\ntype = "lighting.cabinet"\n'
                f'zone = "bench"\nconfig = {{ host = "{HOST}", port = {port}, unit = {unit}, '
                f"circuits = {circuits}, period = {period} }}\n"
            )
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def running_hub(config: str, directory: Path) -> Any:
    path = directory / f"bench-{time.monotonic_ns()}.toml"
    path.write_text(config)
    plugins = make_plugin_manager(builtins=["cityvisor.plugins.lighting"], entry_points=False)
    hub = Hub(load_config(path), plugins)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        with anyio.fail_after(30):
            for device in hub.devices.values():
                online = device.point_id("online")
                await hub.points.wait_for(online, lambda v: v.value is True, 30)
        try:
            yield hub
        finally:
            tg.cancel_scope.cancel()


def endpoints_of(hub: Hub) -> list[list[LightingCabinet]]:
    """The hub's cabinets grouped by endpoint (a TCP connection), in config order."""
    by_address: dict[tuple[str, int], list[LightingCabinet]] = {}
    for device in hub.devices.values():
        assert isinstance(device, LightingCabinet)
        config: Any = device.config
        by_address.setdefault((config.host, config.port), []).append(device)
    return list(by_address.values())


def requests_sent(hub: Hub) -> int:
    pool = hub.resources.get("modbus", ModbusPool)
    return sum(e.requests_sent for e in pool.endpoints.values())


# --------------------------------------------------------------------------- the raw loop


class RawLoop:
    """Plain pymodbus: one client per endpoint, the given reads per unit, nothing decoded."""

    def __init__(self, ports: Sequence[int], units: int, reads: Sequence[tuple[Table, int, int]]):
        # The client the HAL makes, with the HAL's default timeout: no retries,
        # no reconnection task.
        timeout = ModbusSettings().timeout
        self.clients = [
            AsyncModbusTcpClient(HOST, port=port, timeout=timeout, retries=0, reconnect_delay=0)
            for port in ports
        ]
        self.units = units
        self.reads = list(reads)

    async def __aenter__(self) -> RawLoop:
        for client in self.clients:
            if not await client.connect():
                raise ConnectionError(
                    f"raw client cannot connect to port {client.comm_params.port}"
                )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()

    async def cycle(self, reads: Sequence[tuple[Table, int, int]] | None = None) -> int:
        """Read every unit of every endpoint once; return the requests sent."""
        reads = self.reads if reads is None else reads
        sent = 0

        async def one_endpoint(client: AsyncModbusTcpClient) -> None:
            nonlocal sent
            methods = {
                Table.COIL: client.read_coils,
                Table.DISCRETE_INPUT: client.read_discrete_inputs,
                Table.HOLDING: client.read_holding_registers,
                Table.INPUT: client.read_input_registers,
            }
            for unit in range(1, self.units + 1):
                for table, address, count in reads:
                    response = await methods[table](address, count=count, device_id=unit)
                    if response.isError():
                        raise RuntimeError(f"unit {unit}: {response}")
                    sent += 1

        async with anyio.create_task_group() as tg:
            for client in self.clients:
                tg.start_soon(one_endpoint, client)
        return sent


async def hub_cycle(endpoints: Sequence[Sequence[LightingCabinet]]) -> int:
    """One poll of every cabinet through the plugin's path; return the requests sent."""
    sent = 0

    async def one_endpoint(cabinets: Sequence[LightingCabinet]) -> None:
        nonlocal sent
        for cabinet in cabinets:
            assert cabinet.modbus is not None
            result = await cabinet.modbus.poll()
            cabinet.publish_poll(result)
            sent += result.requests

    async with anyio.create_task_group() as tg:
        for cabinets in endpoints:
            tg.start_soon(one_endpoint, cabinets)
    return sent


# --------------------------------------------------------------------------- measurements


@dataclass
class Figures:
    cabinets: int = 0
    endpoints: int = 0
    points_per_cabinet: int = 0
    requests_per_cabinet: int = 0
    raw_cycles: list[float] = field(default_factory=list)
    raw_cpu: list[float] = field(default_factory=list)
    hub_cycles: list[float] = field(default_factory=list)
    hub_cpu: list[float] = field(default_factory=list)
    naive_cycles: list[float] = field(default_factory=list)
    requests_hub_cycle: int = 0
    requests_raw_cycle: int = 0
    requests_naive_cycle: int = 0
    connections_hub: int = 0
    connections_raw: int = 0
    requests_at_servers: float = 0.0
    free_seconds: float = 0.0
    free_cpu_hub: float = 0.0
    free_cpu_raw: float = 0.0
    free_requests_hub: float = 0.0
    free_restarts: int = 0
    server_cpu: float = 0.0
    point_updates: int = 0


async def timed(cycle: Any) -> tuple[float, float, int]:
    cpu, wall = time.process_time(), time.perf_counter()
    sent = await cycle()
    return time.perf_counter() - wall, time.process_time() - cpu, sent


async def measure(args: argparse.Namespace, street: Street, directory: Path) -> Figures:
    figures = Figures()
    per_gateway, circuits = args.per_gateway, args.circuits
    config = city_config(street.ports, per_gateway, circuits, period=3600.0)
    async with running_hub(config, directory) as hub:
        endpoints = endpoints_of(hub)
        plan = endpoints[0][0].modbus.plan  # type: ignore[union-attr]
        figures.cabinets = len(hub.devices)
        figures.endpoints = len(endpoints)
        figures.points_per_cabinet = plan.points
        figures.requests_per_cabinet = len(plan)
        reads = [(b.table, b.address, b.count) for b in plan.blocks]
        # One request per point: what a client without coalescing sends.
        naive = [
            (block.table, spec.address, spec.width)
            for block in plan.blocks
            for _, spec in block.points
        ]
        # The drivers poll once at start, then sleep an hour: this benchmark drives the
        # same polls itself, cycle by cycle, alternating with the raw loop.
        async with RawLoop(street.ports, per_gateway, reads) as raw:
            pool = hub.resources.get("modbus", ModbusPool)
            figures.connections_hub = sum(e.connections for e in pool.endpoints.values())
            figures.connections_raw = len(raw.clients)
            updates = [0]
            hub.points.add_listener(lambda point, value: updates.__setitem__(0, updates[0] + 1))
            for index in range(args.warmup + args.cycles):
                # Each goes first every other cycle: what one leaves behind (garbage,
                # a history flush) weighs on the other side as often as on its own.
                if index % 2:
                    hub_wall, hub_cpu, hub_sent = await timed(lambda: hub_cycle(endpoints))
                    raw_wall, raw_cpu, raw_sent = await timed(raw.cycle)
                else:
                    raw_wall, raw_cpu, raw_sent = await timed(raw.cycle)
                    hub_wall, hub_cpu, hub_sent = await timed(lambda: hub_cycle(endpoints))
                if raw_sent != hub_sent:
                    raise RuntimeError(f"not the same requests: raw {raw_sent}, hub {hub_sent}")
                if index >= args.warmup:
                    figures.raw_cycles.append(raw_wall)
                    figures.raw_cpu.append(raw_cpu)
                    figures.hub_cycles.append(hub_wall)
                    figures.hub_cpu.append(hub_cpu)
                figures.requests_raw_cycle, figures.requests_hub_cycle = raw_sent, hub_sent
            figures.point_updates = updates[0]
            before = street.stats()["requests"]
            for _ in range(args.naive_cycles):
                wall, _cpu, sent = await timed(lambda: raw.cycle(naive))
                figures.naive_cycles.append(wall)
                figures.requests_naive_cycle = sent
            figures.requests_at_servers = (street.stats()["requests"] - before) / max(
                1, args.naive_cycles
            )

            # The raw loop at 1 Hz, for its CPU use.
            seconds = args.free_seconds
            cpu = time.process_time()
            started = anyio.current_time()
            for tick in range(int(seconds)):
                await raw.cycle()
                await anyio.sleep_until(started + tick + 1)
            figures.free_cpu_raw = (time.process_time() - cpu) / seconds

    # The hub on its own: every driver polls at 1 Hz, publishes, alarms and history run.
    config = city_config(street.ports, per_gateway, circuits, period=1.0)
    async with running_hub(config, directory) as hub:
        await anyio.sleep(1.0)  # let the start-up polls settle
        sent, cpu = requests_sent(hub), time.process_time()
        server = street.stats()
        started = anyio.current_time()
        await anyio.sleep(args.free_seconds)
        elapsed = anyio.current_time() - started
        figures.free_seconds = elapsed
        figures.free_cpu_hub = (time.process_time() - cpu) / elapsed
        figures.free_requests_hub = (requests_sent(hub) - sent) / elapsed
        after = street.stats()
        figures.server_cpu = (after["cpu"] - server["cpu"]) / elapsed
        figures.free_restarts = sum(s.restarts for s in hub.supervisor.drivers.values())
    return figures


# --------------------------------------------------------------------------- report


def report(figures: Figures, args: argparse.Namespace) -> bool:
    """Print the figures; return True if both targets are met."""

    def ms(values: Sequence[float]) -> str:
        if not values:
            return "not run (--naive-cycles 0)"
        return f"median {statistics.median(values) * 1000:7.1f} ms"

    raw = statistics.median(figures.raw_cycles)
    raw_cpu, hub_cpu = statistics.median(figures.raw_cpu), statistics.median(figures.hub_cpu)
    # Paired: each cityvisor cycle against the raw cycle just before it, so that
    # the load of other processes, which drifts, weighs on both sides alike.
    ratio = statistics.median(
        h / r for h, r in zip(figures.hub_cycles, figures.raw_cycles, strict=True)
    )
    cpu_ratio = statistics.median(
        h / r for h, r in zip(figures.hub_cpu, figures.raw_cpu, strict=True)
    )
    coalescing = figures.points_per_cabinet / figures.requests_per_cabinet
    print(
        f"cityvisor Modbus polling benchmark — Python {platform.python_version()},"
        f" {platform.system()}, {os.cpu_count()} CPUs, load average at start {args.load:.2f}"
    )
    print(
        f"  {figures.cabinets} cabinets x {args.circuits} circuits on {figures.endpoints}"
        f" Modbus/TCP endpoints ({args.per_gateway} per endpoint), simulated in another process;"
        f" {args.cycles} measured cycles after {args.warmup} warm-up, interleaved"
    )
    print(
        f"  equipment {'changing (a temperature at every poll)' if args.changing else 'idle'};"
        f" connections: cityvisor {figures.connections_hub}, raw {figures.connections_raw};"
        f" latency per reply {args.latency * 1000:g} ms"
    )
    print()
    print("requests per cycle")
    print(
        f"  points read per cabinet: {figures.points_per_cabinet};"
        f" requests per cabinet: {figures.requests_per_cabinet} coalesced"
        f" vs {figures.points_per_cabinet} one per point"
    )
    print(
        f"  per cycle: cityvisor {figures.requests_hub_cycle}, raw {figures.requests_raw_cycle},"
        f" one per point {figures.requests_naive_cycle}"
        f" (servers counted {figures.requests_at_servers:.0f})"
    )
    print(f"  coalescing: {coalescing:.1f} x fewer requests (target >= {TARGET_COALESCING:g} x)")
    print()
    print("poll cycle time (every cabinet read once)")
    print(
        f"  raw pymodbus loop, same blocks:     {ms(figures.raw_cycles)}  CPU {raw_cpu * 1000:6.1f} ms"
    )
    print(
        f"  cityvisor (poll + publish to hub):  {ms(figures.hub_cycles)}  CPU {hub_cpu * 1000:6.1f} ms"
    )
    print(f"  raw pymodbus loop, one per point:   {ms(figures.naive_cycles)}")
    print(
        f"  ratio cityvisor / raw (median of paired cycles): {ratio:.3f} x wall,"
        f" {cpu_ratio:.3f} x CPU"
        f" (target <= {TARGET_RATIO:g} x)"
        + (
            f"; one-per-point / coalesced raw: {statistics.median(figures.naive_cycles) / raw:.1f} x"
            if figures.naive_cycles
            else ""
        )
    )
    print(f"  point updates that passed their deadband: {figures.point_updates:,}")
    print()
    print(f"CPU at 1 Hz ({figures.free_seconds:.0f} s, this process, share of one core)")
    print(f"  raw pymodbus loop:                  {figures.free_cpu_raw:6.1%}")
    print(
        f"  hub, drivers free-running:          {figures.free_cpu_hub:6.1%}"
        f"  ({figures.free_requests_hub:.0f} requests/s, {figures.free_restarts} driver restarts)"
    )
    print(f"  the simulators (other process):     {figures.server_cpu:6.1%}")
    met = ratio <= TARGET_RATIO and coalescing >= TARGET_COALESCING
    print()
    print(f"targets {'met' if met else 'NOT met'}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cabinets", type=int, default=100, help="cabinets in all")
    parser.add_argument("--circuits", type=int, default=8, help="circuits per cabinet")
    parser.add_argument("--per-gateway", type=int, default=1, help="cabinets per endpoint")
    parser.add_argument("--cycles", type=int, default=30, help="measured cycles of each loop")
    parser.add_argument("--warmup", type=int, default=3, help="cycles not measured")
    parser.add_argument("--naive-cycles", type=int, default=3, help="one-per-point cycles")
    parser.add_argument("--free-seconds", type=float, default=10.0, help="1 Hz run, seconds")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each simulated cabinet takes to answer (a network link; 0: loopback only)",
    )
    parser.add_argument(
        "--changing",
        action="store_true",
        help="every read of a cabinet's input registers finds its temperature moved by 1 °C",
    )
    parser.add_argument("--quick", action="store_true", help="a small run of a few seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gateways", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(
                serve, args.gateways, args.per_gateway, args.circuits, args.latency, args.changing
            )
        return 0
    if args.quick:
        args.cabinets, args.cycles, args.warmup, args.naive_cycles = 10, 5, 1, 1
        args.free_seconds = 2.0
    logging.basicConfig(level=logging.WARNING)
    args.load = os.getloadavg()[0]
    gateways = -(-args.cabinets // args.per_gateway)
    with (
        tempfile.TemporaryDirectory(prefix="cityvisor-bench-") as tmp,
        Street.start(
            gateways, args.per_gateway, args.circuits, args.latency, args.changing
        ) as street,
    ):
        figures = anyio.run(measure, args, street, Path(tmp))
    report(figures, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
