"""``cityvisor demo --nodes N``: N edge hubs (one per commune) and a central, all local.

Each edge is a hub of its own in a subprocess (``cityvisor run``) with the
simulated water tanks of its commune (the built-in ``demo.tank``, no
hardware; one of them drops its link now and then), publishing over MQTT
Sparkplug B to the broker (the local Mosquitto, or one started for the
demo on a free port when nothing listens on ``--broker``). The central
runs here with the HMI: every commune's points appear under the node's id
(``chenove/chenove/demo/...``), with a communication alarm per node.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.abc import Process

from . import tomlfile
from .setup import PASSWORD_VARIABLE, check_port, hmi_url, prepare_store
from .zones import ZONES

__all__ = ["run_nodes"]

log = logging.getLogger(__name__)

GROUP = "cityvisor-demo"
HOST_ID = "demo-central"
TANKS = 3


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def edge_config(zone: Any, broker: tuple[str, int], index: int) -> dict[str, Any]:
    """The deployment of the edge hub of one commune."""
    lat, lon = zone.centre
    devices = [
        {
            "id": f"{zone.id}-tank-{n}",
            "type": "demo.tank",
            "zone": zone.id,
            "name": f"Réservoir {n} ({zone.name})",
            "location": [lat + 0.002 * n, lon - 0.002 * n],
            "config": {"initial_level": 20.0 + 25 * n, "period": 1.0}
            | ({"fail_every": 60.0 + 20 * index} if n == 1 else {}),
        }
        for n in range(1, TANKS + 1)
    ]
    return {
        "site": {"name": f"Nœud {zone.name}", "timezone": "Europe/Paris", "language": "fr"},
        "store": {"path": f"node-{zone.id}.sqlite", "flush_interval": 1.0},
        "web": {"host": "127.0.0.1", "port": 0},
        "plugins": {
            "entry_points": False,
            "link": {
                "role": "edge",
                "host": broker[0],
                "port": broker[1],
                "group": GROUP,
                "node": zone.id,
                "primary_hosts": [HOST_ID],
                "buffer": f"node-{zone.id}-buffer.sqlite",
            },
        },
        "zones": [{"id": zone.id, "name": zone.name}],
        "devices": devices,
    }


def central_config(
    zones: list[Any], broker: tuple[str, int], host: str, port: int, store: str
) -> dict[str, Any]:
    """The deployment of the central hub (with the HMI)."""
    lat, lon = zones[0].centre
    return {
        "site": {
            "name": "Salle de supervision (démonstration)",
            "timezone": "Europe/Paris",
            "language": "fr",
            "latitude": lat,
            "longitude": lon,
        },
        "store": {"path": store, "flush_interval": 1.0, "retention": {"default": 7}},
        "web": {"host": host, "port": port},
        "plugins": {
            "entry_points": False,
            "link": {
                "role": "central",
                "host": broker[0],
                "port": broker[1],
                "groups": [GROUP],
                "host_id": HOST_ID,
            },
        },
        "zones": [{"id": zone.id, "name": zone.name} for zone in zones],
        "users": [{"name": "admin", "role": "admin"}],
    }


async def _broker(stack: AsyncExitStack, wanted: str) -> tuple[str, int]:
    """The broker of ``--broker``, or a private Mosquitto when nothing listens there."""
    host, _, port_text = wanted.rpartition(":")
    host, port = host or "127.0.0.1", int(port_text or 1883)
    if _listening(host, port):
        return host, port
    mosquitto = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if mosquitto is None:
        raise OSError(f"no MQTT broker on {host}:{port} and no mosquitto to start one")
    port = _free_port()
    process = await anyio.open_process(
        [mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stack.push_async_callback(_stop, process)
    with anyio.fail_after(10):
        while not _listening("127.0.0.1", port):  # noqa: ASYNC110  (a socket, no event)
            await anyio.sleep(0.05)
    log.info("started a private Mosquitto on 127.0.0.1:%d", port)
    return "127.0.0.1", port


async def _stop(process: Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
            return
        process.kill()
        await process.wait()


async def run_nodes(options: argparse.Namespace, *, out: TextIO | None = None) -> None:
    """Run ``options.nodes`` edge hubs and a central until SIGINT or SIGTERM."""
    from ..cli import log_in_site_time
    from ..core.config import ConfigError, check_config, load_config
    from ..core.hub import Hub
    from ..core.plugins import make_plugin_manager

    out = out or sys.stdout
    count = options.nodes
    if not 1 <= count <= len(ZONES):
        raise ValueError(f"--nodes must be 1..{len(ZONES)}")
    check_port(options.host, options.port)
    data_dir = Path(options.data_dir)
    await anyio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    zones = list(ZONES[:count])
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as stack:
            broker = await _broker(stack, options.broker)
            central_path = data_dir / "central.toml"
            await anyio.Path(central_path).write_text(
                tomlfile.dumps(
                    central_config(zones, broker, options.host, options.port, "central.sqlite")
                ),
                encoding="utf-8",
            )
            config = load_config(central_path)
            log_in_site_time(config.site.timezone)
            plugins = make_plugin_manager(entry_points=False)
            problems = check_config(config, plugins)
            if problems:
                raise ConfigError(problems)
            passwords = await prepare_store(config)
            hub = Hub(config, plugins)
            async with anyio.create_task_group() as tg:
                await tg.start(hub.run)
                for index, zone in enumerate(zones):
                    path = data_dir / f"node-{zone.id}.toml"
                    await anyio.Path(path).write_text(
                        tomlfile.dumps(edge_config(zone, broker, index)), encoding="utf-8"
                    )
                    process = await anyio.open_process(
                        [
                            sys.executable,
                            "-m",
                            "cityvisor",
                            "run",
                            "-c",
                            str(path),
                            "--log-level",
                            options.log_level or "warning",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=None,
                    )
                    stack.push_async_callback(_stop, process)
                url = await hmi_url(hub)
                _banner(out, hub, url, passwords, zones, broker)
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    break
    print("demo stopped", file=out, flush=True)


def _banner(
    out: TextIO,
    hub: Any,
    url: str,
    passwords: tuple[str | None, str],
    zones: list[Any],
    broker: tuple[str, int],
) -> None:
    password, _supervisor = passwords
    lines = [
        f"cityvisor demo: a central and {len(zones)} edge hubs over MQTT Sparkplug B "
        f"(broker {broker[0]}:{broker[1]})",
        "  edge nodes: " + ", ".join(f"{z.id} ({z.name})" for z in zones),
        "",
        f"HMI of the central: {url}/",
        "  user: admin",
        f"  password: {password}" if password else f"  password: the value of ${PASSWORD_VARIABLE}",
        "",
        "The communes' points arrive under their node's id. Stop with Ctrl-C.",
    ]
    print("\n".join(lines), file=out, flush=True)
