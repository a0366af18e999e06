"""``cityvisor journal ...``: check that nobody rewrote the journal.

::

    cityvisor journal verify -c FILE [--json]

``verify`` walks the hash chain of the deployment's journal (see
:mod:`cityvisor.core.store.chain`) and names the first row that does not
hold: edited, deleted before it, or moved. It reads the store while the hub
runs (SQLite in WAL mode lets both work). Exit status: 0 when the chain
holds, 3 when it is broken, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from .core.config import load_config
from .core.store import ChainState, SqliteStore, verify_store

__all__ = ["EXIT_BROKEN", "register"]

EXIT_BROKEN = 3
"""The exit status of ``journal verify`` when the chain does not hold."""


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``journal`` subcommand (and its actions) to the ``cityvisor`` command."""
    journal = commands.add_parser(
        "journal", parents=[log_level], help="check the journal's hash chain"
    )
    actions = journal.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        parents=[log_level],
        help="walk the journal's hash chain and name the first broken row",
    )
    verify.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_verify, default_log_level="critical")


def _verify(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not config.store.path.exists():
        from .cli import UsageError

        raise UsageError(f"{args.config}: [store] path {config.store.path} does not exist")
    state = anyio.run(_walk, config.store.path)
    if args.json:
        print(json.dumps(state.as_json(), indent=2))
    else:
        print(describe(state))
    return 0 if state.ok else EXIT_BROKEN


async def _walk(path: Any) -> ChainState:
    store = SqliteStore(path)
    await store.open()
    try:
        return await verify_store(store)
    finally:
        await store.close()


def describe(state: ChainState) -> str:
    """One line for a person: the chain holds (how many rows, the head) or where it breaks."""
    if state.broken is not None:
        return (
            f"BROKEN at row {state.broken.id}: {state.broken.reason}"
            f" ({state.rows} rows before it hold)"
        )
    return f"OK: {state.rows} rows chained, head row {state.head_id} hash {state.head_hash}"
