"""``cityvisor new-plugin NAME``: write a ready plugin package (work in progress)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``new-plugin`` subcommand to the ``cityvisor`` command."""
    new = commands.add_parser(
        "new-plugin", parents=[log_level], help="write a ready plugin package to start from"
    )
    new.add_argument("name", help="the plugin's name (flood-gauge)")
    new.add_argument("--dir", default=None, metavar="DIR", help="where to write it")
    new.set_defaults(handler=_handle, default_log_level="warning")


def _handle(args: argparse.Namespace) -> int:
    from .cli import UsageError

    raise UsageError("not available yet")
