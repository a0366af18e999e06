"""``cityvisor sim NAME ...``: run one of the equipment simulators from the command line.

Integrators use it to try a plugin without hardware; the demo and the tests
use the same simulators in-process. Each simulator module has a blocking
``main(argv) -> int`` with its own options (``cityvisor sim lighting --help``).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SIMULATORS: dict[str, tuple[str, str]] = {
    "lighting": ("cityvisor.hal.sim.lighting", "lighting cabinets over Modbus/TCP"),
    "bollards": ("cityvisor.hal.sim.bollard", "bollard PLCs over Modbus/TCP"),
    "osdp": ("cityvisor.hal.sim.osdp_reader", "OSDP badge readers"),
    "camera": ("cityvisor.hal.sim.camera", "ONVIF cameras"),
    "signals": ("cityvisor.hal.sim.signal_controller", "an NTCIP traffic signal controller"),
    "hydro": ("cityvisor.hal.sim.gauge", "water-level gauges over Modbus/TCP"),
}
"""Simulator name -> (module with ``main(argv)``, one-line description)."""


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``sim`` subcommand to the ``cityvisor`` command."""
    listing = "; ".join(f"{name}: {text}" for name, (_, text) in SIMULATORS.items())
    sim = commands.add_parser(
        "sim",
        parents=[log_level],
        help="run an equipment simulator (" + ", ".join(SIMULATORS) + ")",
        description=f"Run an equipment simulator until interrupted. {listing}.",
    )
    sim.add_argument("simulator", choices=sorted(SIMULATORS), help="which simulator")
    sim.add_argument(
        "arguments", nargs=argparse.REMAINDER, help="the simulator's own options (see its --help)"
    )
    sim.set_defaults(handler=_run, default_log_level="info")


def _run(args: argparse.Namespace) -> int:
    module_name, _ = SIMULATORS[args.simulator]
    module = importlib.import_module(module_name)
    return int(module.main(args.arguments))
