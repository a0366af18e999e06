"""``cityvisor docs``: regenerate the reference pages under docs/reference/ (work in progress)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``docs`` subcommand to the ``cityvisor`` command."""
    docs = commands.add_parser(
        "docs", parents=[log_level], help="regenerate docs/reference/ from the docstrings"
    )
    docs.set_defaults(handler=_handle, default_log_level="warning")


def _handle(args: argparse.Namespace) -> int:
    from .cli import UsageError

    raise UsageError("not available yet")
