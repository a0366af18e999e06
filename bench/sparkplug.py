"""Sparkplug B benchmark: point changes per second from 4 edge processes to the central's PointDB.

Measured in one run, *interleaved* (raw, cityvisor, raw, cityvisor...) so
that a busy machine stretches both alike, on the broker given (the local
Mosquitto by default):

- **transport ceiling** (for context): ``--edges`` processes publish, as
  fast as aiomqtt lets them, DDATA payloads of ``--batch`` metrics encoded
  once beforehand; one aiomqtt subscriber in this process parses each
  payload with the protobuf runtime and counts its metrics: the MQTT loop
  and the protobuf parse, with no point behind the messages.
- **raw baseline**: the same ``--edges`` hubs with the same source device
  as below, their PointDB changes encoded into the same DDATA payloads and
  sent by a bare aiomqtt loop (no link: no births, no buffer, no commands),
  received by the same bare subscriber that parses and counts them.
- **cityvisor**: ``--edges`` processes each run a real hub in the ``edge``
  role (a device that changes ``--points`` points as fast as it can; the
  PointDB subscription; the edge's DDATA encoding, aliases and seq); this
  process runs a real hub in the ``central`` role (decode, sequence check,
  alias to point, ``PointDB.update_point``, alarms and history listeners).
  The figure is the central PointDB's accepted changes per second.

The producer processes run at a lower priority (``nice 10``): in a city
the edges are machines of their own, and the figure is about what reaches
the central. Each figure is the median of ``--rounds`` rounds of ``--seconds`` seconds
(after a second of warm-up), with its ratio to the raw baseline; then a
DBIRTH of 40,000 metrics is timed (encoding at the edge, decoding,
registering and re-applying at the central) with its size on the wire; the target
is 0.7x or better. The central's CPU per change is printed too: it is what
sizes a central for a city. Run ``python -m bench.sparkplug`` from the repository root
(about a minute), or ``--quick``. Results are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

import cityvisor.plugins.link as link_plugin
from cityvisor import DeviceConfig, DeviceType, hookimpl, point
from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.points import PointValue, Quality
from cityvisor.link import codec


class SourceConfig(DeviceConfig):
    """A bench source: how many channels it changes."""

    channels: int = 1000


class Source(DeviceType):
    """A device whose every channel changes as fast as the loop allows."""

    family = "bench"
    type_name = "bench.source"
    Config = SourceConfig

    value = point(float, per="channel", doc={"fr": "Valeur", "en": "Value"})

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Change every channel, one slice at a time, forever."""
        names = [f"{m}/value" for m in self.members("channel")]
        task_status.started()
        tick = 0.0
        while True:
            tick += 1.0
            for start in range(0, len(names), 100):
                self.publish({name: tick for name in names[start : start + 100]})
                await anyio.lowlevel.checkpoint()


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The bench's device type."""
    return [Source]


def deployment(link: dict[str, Any], devices: str = "") -> str:
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in link.items()]
    return (
        '[site]\nname = "bench"\n\n[store]\npath = "bench.sqlite"\nflush_interval = 1.0\n\n'
        '[[zones]]\nid = "z"\nname = "Z"\n\n' + devices + "\n[plugins.link]\n" + "\n".join(lines)
    )


def manager() -> Any:
    return make_plugin_manager(
        entry_points=False, builtins=(), plugins=[sys.modules[__name__], link_plugin]
    )


# --------------------------------------------------------------------------- the edge processes


async def edge_process(args: argparse.Namespace) -> None:
    """One edge hub: a source device of ``--points`` channels, published until killed."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "edge.toml"
        device = (
            f'[[devices]]\nid = "source"\ntype = "bench.source"\nzone = "z"\n'
            f"config = {{ channels = {args.points} }}\n"
        )
        link = {"role": "edge", "host": args.host, "port": args.port, "group": args.group}
        path.write_text(deployment(link | {"node": args.node}, device))
        hub = Hub(load_config(path), manager())
        await hub.run()


async def hub_raw_process(args: argparse.Namespace) -> None:
    """The same hub and source, its changes sent by a bare aiomqtt loop (no link)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "edge.toml"
        device = (
            f'[[devices]]\nid = "source"\ntype = "bench.source"\nzone = "z"\n'
            f"config = {{ channels = {args.points} }}\n"
        )
        path.write_text(deployment({"role": "off"}, device))
        hub = Hub(load_config(path), manager())
        aliases = {}
        topic = f"spBv1.0/{args.group}/DDATA/{args.node}/source"
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            for alias, entry in enumerate(hub.points.points("**"), start=2):
                aliases[entry.id] = (alias, codec.metric_datatype(entry.spec.dtype))
            async with (
                aiomqtt.Client(args.host, args.port, max_queued_outgoing_messages=1000) as client,
                hub.points.subscribe("**", max_buffer=256) as changes,
            ):
                seq = 0
                async for message in changes:
                    values = getattr(message, "changes", None) or message.snapshot
                    items = [(*aliases[v.id], v) for v in values if v.id in aliases]
                    for start in range(0, len(items), 500):
                        seq = (seq + 1) % 256
                        data = codec.data_payload(1, seq, items[start : start + 500])
                        await client.publish(topic, data)


def payload(batch: int, seq: int) -> bytes:
    value = PointValue("x", 1.0, Quality.GOOD, 1, 1)
    changes = [(alias, codec.DOUBLE, value) for alias in range(2, batch + 2)]
    return codec.data_payload(1, seq, changes)


async def raw_process(args: argparse.Namespace) -> None:
    """Publish pre-encoded DDATA payloads as fast as aiomqtt allows, until killed."""
    payloads = [payload(args.batch, seq) for seq in range(256)]
    topic = f"spBv1.0/{args.group}/DDATA/{args.node}/source"
    async with aiomqtt.Client(args.host, args.port, max_queued_outgoing_messages=1000) as client:
        seq = 0
        while True:
            await client.publish(topic, payloads[seq])
            seq = (seq + 1) % 256


# --------------------------------------------------------------------------- the measuring side


def spawn(args: argparse.Namespace, mode: str, group: str, count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.sparkplug",
                "--role",
                mode,
                "--group",
                group,
                "--node",
                f"edge-{i}",
                "--host",
                args.host,
                "--port",
                str(args.port),
                "--points",
                str(args.points),
                "--batch",
                str(args.batch),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


async def measure_raw(args: argparse.Namespace, mode: str = "raw") -> float:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    count = 0
    parse = codec.Payload.FromString
    async with aiomqtt.Client(args.host, args.port, max_queued_incoming_messages=100_000) as client:
        await client.subscribe(f"spBv1.0/{group}/#", qos=0)
        processes = spawn(args, mode, group, args.edges)
        try:
            started = None
            with anyio.move_on_after(args.seconds + 1.0 + 20.0):
                async for message in client.messages:
                    metrics = len(parse(message.payload).metrics)
                    now = time.perf_counter()
                    if started is None:
                        started = now + 1.0  # warm-up
                    elif now >= started:
                        count += metrics
                        if now - started >= args.seconds:
                            break
        finally:
            stop(processes)
    return count / args.seconds


async def measure_cityvisor(args: argparse.Namespace) -> tuple[float, float]:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "central.toml"
        link = {"role": "central", "host": args.host, "port": args.port, "groups": [group]}
        path.write_text(deployment(link | {"host_id": f"{group}-host"}))
        hub = Hub(load_config(path), manager())
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            central = link_plugin.role(hub)
            processes = spawn(args, "edge", group, args.edges)
            try:
                with anyio.fail_after(30):
                    for i in range(args.edges):
                        await central.wait_born(group, f"edge-{i}", "source")  # type: ignore[union-attr]
                await anyio.sleep(1.0)  # warm-up
                before, cpu_before = hub.points.changes, time.process_time()
                started = time.perf_counter()
                await anyio.sleep(args.seconds)
                elapsed = time.perf_counter() - started
                changes = hub.points.changes - before
                cpu = time.process_time() - cpu_before
                gaps = central.gaps  # type: ignore[union-attr]
                print(f"  round: {changes / elapsed:,.0f} changes/s, sequence gaps {gaps}")
            finally:
                stop(processes)
                tg.cancel_scope.cancel()
    # Leave no retained STATE of this run's host on the broker.
    async with aiomqtt.Client(args.host, args.port) as client:
        await client.publish(f"spBv1.0/STATE/{group}-host", b"", qos=1, retain=True)
    return changes / elapsed, cpu / elapsed


async def measure_births(metrics: int) -> dict[str, float]:
    """A DBIRTH of ``metrics`` points: the edge's encoding, the central's decoding and applying."""
    from cityvisor.core.points import DataType, PointSpec

    spec = PointSpec("level", DataType.FLOAT, unit="%", doc={"fr": "Niveau", "en": "Level"})
    now = int(time.time() * 1000)
    value = PointValue("x", 12.5, Quality.GOOD, now, now)
    birth = [
        codec.BirthMetric(f"c{i}/level", i + 2, spec, value, "z", "bench", f"c{i}")
        for i in range(metrics)
    ]
    figures: dict[str, float] = {}
    started = time.perf_counter()
    raw = codec.device_birth_payload(now, 1, birth)
    figures["encode"] = (time.perf_counter() - started) / metrics * 1e6
    figures["bytes"] = len(raw) / metrics
    data = [(i + 2, codec.DOUBLE, value) for i in range(500)]
    figures["ddata_bytes"] = len(codec.data_payload(now, 2, data)) / 500
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "central.toml"
        path.write_text(deployment({"role": "central", "host_id": "births"}))
        hub = Hub(load_config(path), manager())
        central = link_plugin.role(hub)
        node = central._node(("g", "n"))  # type: ignore[union-attr]
        started = time.perf_counter()
        decoded = codec.decode(raw)
        figures["decode"] = (time.perf_counter() - started) / metrics * 1e6
        for key in ("register", "rebirth"):
            started = time.perf_counter()
            central._device_birth(node, "source", decoded)  # type: ignore[union-attr]
            figures[key] = (time.perf_counter() - started) / metrics * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["bench", "edge", "raw", "hub-raw"], default="bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--edges", type=int, default=4)
    parser.add_argument("--points", type=int, default=1000, help="points per edge")
    parser.add_argument("--batch", type=int, default=500, help="metrics per raw DDATA")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group", default="")
    parser.add_argument("--node", default="")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.role != "bench":
        # Producers yield to the measured side: on a small machine the central (or the
        # raw subscriber) gets the CPU, as it would with edges on machines of their own.
        os.nice(10)
    if args.role == "edge":
        anyio.run(edge_process, args)
        return
    if args.role == "raw":
        anyio.run(raw_process, args)
        return
    if args.role == "hub-raw":
        anyio.run(hub_raw_process, args)
        return
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(
        f"{args.edges} edge processes x {args.points} points, broker {args.host}:{args.port}, "
        f"{args.rounds} rounds of {args.seconds:g} s"
    )
    ceilings, raws, ours, cpus = [], [], [], []
    for _ in range(args.rounds):
        ceilings.append(anyio.run(measure_raw, args, "raw"))
        raws.append(anyio.run(measure_raw, args, "hub-raw"))
        rate, cpu = anyio.run(measure_cityvisor, args)
        ours.append(rate)
        cpus.append(cpu)
    ceiling, raw, mine = (statistics.median(x) for x in (ceilings, raws, ours))
    print(
        f"transport ceiling: pre-encoded DDATA, aiomqtt + parse  {ceiling:>12,.0f}/s  "
        f"{ceiling / raw:.2f} x baseline"
    )
    print(f"raw baseline: same hubs, bare aiomqtt loop + parse    {raw:>12,.0f}/s  1.00 x baseline")
    cpu = statistics.median(cpus)
    births = anyio.run(measure_births, 2000 if args.quick else 40_000)
    print(
        f"cityvisor: edge hubs -> central PointDB              {mine:>12,.0f}/s  "
        f"{mine / raw:.2f} x baseline"
    )
    per_change = cpu / mine * 1e6 if mine else 0.0
    print(
        f"central process: {cpu:.2f} CPU s/s, {per_change:.1f} us CPU per change "
        f"(about {1e6 / per_change if per_change else 0:,.0f} changes/s per core)"
    )
    print(
        f"DBIRTH: edge encodes {births['encode']:.1f} us/metric, {births['bytes']:.0f} B/metric; "
        f"central decodes {births['decode']:.1f} us/metric, registers {births['register']:.1f} "
        f"us/point, re-applies {births['rebirth']:.1f} us/point; "
        f"DDATA {births['ddata_bytes']:.1f} B/metric"
    )


if __name__ == "__main__":
    main()
