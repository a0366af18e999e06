"""``cityvisor badges ...``: manage the badges, their rights and the lockdown exceptions."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``badges`` subcommand to the ``cityvisor`` command."""
    badges = commands.add_parser(
        "badges",
        parents=[log_level],
        help="manage access badges, their rights and the lockdown exceptions",
    )
    badges.set_defaults(handler=lambda args: badges.print_help() or 0, default_log_level="warning")
