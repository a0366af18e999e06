"""``cityvisor demo``: a living city on this machine, with no hardware, in one command.

::

    cityvisor demo [--host 127.0.0.1] [--port 8080] [--data-dir cityvisor-demo]
                   [--small] [--seed N] [--life-rate EVENTS_PER_MINUTE]

It starts the simulators of every family on free loopback ports
(:mod:`cityvisor.demo.city`), writes the deployment file that points a hub
at them into the data directory (``demo-city.toml``: read it, copy it,
``cityvisor run -c`` it), sets the ``admin`` password (``$CITYVISOR_ADMIN_PASSWORD``,
or a generated one, printed) and a second user's, the supervisor ``superviseur``
(``$CITYVISOR_SUPERVISOR_PASSWORD`` or generated, always printed: two people
to try a two-person approval), enrols a few badges, runs the hub with the
HMI, and lets life happen (:mod:`cityvisor.demo.life`): alarms appear
within the first minute. Ctrl-C (or SIGTERM) stops the hub, then the
simulators, and exits with status 0.

Everything runs in one process under one task group: the simulators cost
little next to the hub (docs/performance.md, "The demo city").
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio

from . import tomlfile
from .city import FULL, SMALL, SimulatedCity, outlines
from .life import Life
from .setup import (
    PASSWORD_VARIABLE,
    SUPERVISOR,
    SUPERVISOR_VARIABLE,
    check_port,
    hmi_url,
    prepare_store,
)
from .zones import ZONES

__all__ = ["DemoError", "DemoOptions", "register", "run_demo"]

log = logging.getLogger(__name__)

CONFIG_NAME = "demo-city.toml"
STORE_NAME = "demo.sqlite"
BASEMAP_NAME = "communes.geojson"

HEADER = """\
The demo city, written by `cityvisor demo` at each start: the simulators'
ports are picked free then, so this file changes from one start to the next.
It is an ordinary deployment file: `cityvisor check-config` it, copy it for
a real city and replace the loopback addresses with your equipment's.
Run with `cityvisor run -c` alone (without `cityvisor demo`), every device
stays offline: nothing answers on these ports.
The full reference of every key is docs/configuration.md."""


class DemoError(Exception):
    """The demo cannot run here (a built-in plugin fails to load: a broken install)."""


class DemoOptions(argparse.Namespace):
    """The demo's settings (what the command line gives :func:`run_demo`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "cityvisor-demo"
    small: bool = False
    seed: int = 0
    life_rate: float = 3.0


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``demo`` subcommand to the ``cityvisor`` command."""
    demo = commands.add_parser(
        "demo",
        parents=[log_level],
        help="run a simulated city with the HMI on this machine (no hardware needed)",
        description="Start the simulators of a small city (lighting, bollards, cameras, "
        "switches, badge readers), a hub configured for them and the HMI, and let life "
        "happen: lamps fail, links drop, badges are presented, cameras see motion. "
        f"The admin password is ${PASSWORD_VARIABLE}, or generated and printed; a second "
        f"user, the supervisor {SUPERVISOR}, has ${SUPERVISOR_VARIABLE} or a generated "
        "password, printed (two people, to try two-person approvals). "
        "Stop with Ctrl-C.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address of the HMI (default: 127.0.0.1)")
    demo.add_argument(
        "--port", type=int, default=8080, help="port of the HMI (default: 8080; 0: any free port)"
    )
    demo.add_argument(
        "--data-dir",
        default="cityvisor-demo",
        metavar="DIR",
        help="where the config file and the SQLite store go (default: ./cityvisor-demo)",
    )
    demo.add_argument(
        "--small", action="store_true", help="a few devices of each family instead of a city"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the city's life (default: 0)")
    demo.add_argument(
        "--life-rate",
        type=float,
        default=3.0,
        metavar="N",
        help="events per minute in the city's life (default: 3)",
    )
    demo.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="run N edge hubs (one per commune, each a process) and a central with the HMI, "
        "linked over MQTT Sparkplug B (default: 0, one hub)",
    )
    demo.add_argument(
        "--broker",
        default="127.0.0.1:1883",
        metavar="HOST:PORT",
        help="the MQTT broker of --nodes (default: 127.0.0.1:1883; "
        "a private Mosquitto is started when nothing listens there)",
    )
    demo.set_defaults(handler=_handle, default_log_level="warning")


def _handle(args: argparse.Namespace) -> int:
    from ..cli import EXIT_BUG, EXIT_OK, UsageError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, not {args.port}")
    if args.life_rate <= 0:
        raise UsageError("--life-rate must be a number of events per minute above 0")
    if not 0 <= args.nodes <= len(ZONES):
        raise UsageError(f"--nodes must be 0..{len(ZONES)} (one per commune), not {args.nodes}")
    try:
        if args.nodes:
            from .nodes import run_nodes

            anyio.run(run_nodes, args, backend="asyncio")
        else:
            anyio.run(run_demo, args, backend="asyncio")
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 128 + signal.SIGINT
    except OSError as error:
        raise UsageError(f"cannot start: {error.strerror or error}") from None
    except DemoError as error:
        print(f"cityvisor demo: cannot start: {error}", file=sys.stderr)
        return EXIT_BUG
    except Exception:
        log.critical("the demo stopped on an unexpected error", exc_info=True)
        return EXIT_BUG
    return EXIT_OK


async def run_demo(options: argparse.Namespace, *, out: TextIO | None = None) -> None:
    """Run the demo city until SIGINT or SIGTERM (the ``cityvisor demo`` command, awaitable)."""
    from ..cli import log_in_site_time
    from ..core.config import ConfigError, check_config, load_config
    from ..core.hub import Hub
    from ..core.plugins import make_plugin_manager

    out = out or sys.stdout
    check_port(options.host, options.port)
    data_dir = Path(options.data_dir)
    await anyio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    city = SimulatedCity(
        size=SMALL if options.small else FULL,
        seed=options.seed,
        web_host=options.host,
        web_port=options.port,
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as simulators:
            started = anyio.current_time()
            await city.start(simulators)
            config_path = data_dir / CONFIG_NAME
            written = city.config(STORE_NAME, basemap=BASEMAP_NAME)
            # The map's background, with no tile server: the communes' outlines.
            await anyio.Path(data_dir / BASEMAP_NAME).write_text(
                json.dumps(outlines(written), ensure_ascii=False), encoding="utf-8"
            )
            await anyio.Path(config_path).write_text(
                tomlfile.dumps(written, header=HEADER), encoding="utf-8"
            )
            config = load_config(config_path)
            log_in_site_time(config.site.timezone)
            plugins = make_plugin_manager(entry_points=False)
            if plugins.failures:  # a broken install: say which plugin, not a traceback later
                raise DemoError("; ".join(str(failure) for failure in plugins.failures))
            problems = check_config(config, plugins)
            if problems:  # a bug of the demo: the file is ours
                raise ConfigError(problems)
            password, supervisor_password = await prepare_store(config)
            hub = Hub(config, plugins)
            life = Life(city, rate=options.life_rate, seed=options.seed)
            async with anyio.create_task_group() as tg:
                await tg.start(hub.run)
                url = await hmi_url(hub)
                await tg.start(life.run)
                await _start_field(tg, hub, url, options.seed)
                log.info("demo city up in %.1f s", anyio.current_time() - started)
                _banner(out, city, hub, url, (password, supervisor_password), config_path)
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    break
    print("demo stopped", file=out, flush=True)


async def _start_field(tg: Any, hub: Any, url: str, seed: int) -> None:
    """Crews driving (OsmAnd positions) and citizens reporting (Open311), over HTTP."""
    from ..plugins.ops import operations
    from .fleet import Citizens, DrivingCrews

    ops = operations(hub)
    if ops is not None:
        with anyio.move_on_after(30):
            await ops.ready.wait()
    if ops is None or ops.tracker_port is None:
        log.warning("the operations layer is not running: no crews, no citizen reports")
        return
    tracker_url = f"http://127.0.0.1:{ops.tracker_port}/"
    tg.start_soon(DrivingCrews(tracker_url, ops, seed=seed).run, name="demo crews")
    tg.start_soon(Citizens(url, seed=seed).run, name="demo citizens")


def _banner(
    out: TextIO,
    city: SimulatedCity,
    hub: Any,
    url: str,
    passwords: tuple[str | None, str],
    config_path: Path,
) -> None:
    password, supervisor = passwords
    size = city.size
    cabinets = len(city.cabinets)
    lines = [
        f"cityvisor demo: {hub.config.site.name}, {len(hub.config.zones)} communes, "
        f"{len(hub.devices)} devices, {len(hub.points)} points",
        f"  {cabinets} lighting cabinets ({size.circuits} circuits), "
        f"{len(city.bollard_ids)} bollards, {len(city.cameras)} cameras, "
        f"{len(city.switches)} switches ({size.switch_ports} ports each), "
        f"{len(city.readers)} badge doors",
        f"  config: {config_path}   store: {hub.config.store.path}",
        "",
        f"HMI: {url}/",
        "  user: admin",
        f"  password: {password}" if password else f"  password: the value of ${PASSWORD_VARIABLE}",
        f"  second user: {SUPERVISOR} (supervisor), password: {supervisor}",
        "  (two-person commands wait for the other one's approval: log in as both to try it)",
        "",
        *([f"Open data (no login): {url}/opendata/", ""] if hub.config.opendata.enabled else []),
        "Life happens on its own: alarms appear within a minute. Stop with Ctrl-C.",
    ]
    print("\n".join(lines), file=out, flush=True)
