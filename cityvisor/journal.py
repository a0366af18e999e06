"""``cityvisor journal ...``: check that nobody rewrote the journal, anchor it, export it.

::

    cityvisor journal verify -c FILE [--public-key KEY.pub] [--anchors FILE] [--json]
    cityvisor journal verify --bundle BUNDLE --public-key KEY.pub [--json]
    cityvisor journal keygen -o KEY
    cityvisor journal anchor -c FILE
    cityvisor journal export -c FILE --from TIME --to TIME -o BUNDLE

``verify`` walks the hash chain of the deployment's journal (see
:mod:`cityvisor.core.store.chain`) and names the first row that does not
hold: edited, deleted before it, or moved; then it checks every anchor
(:mod:`cityvisor.core.store.anchors`) of the anchor file and of the journal
with the public key: a signature that does not match, or a journal that no
longer holds the row an anchor names, is a break too. With ``--bundle`` it
checks an exported bundle alone, on any machine. It reads the store while
the hub runs (SQLite in WAL mode lets both work). Exit status: 0 when
everything holds, 3 when something is broken, 2 for a usage error.

``keygen`` writes a new Ed25519 key (``KEY``, mode 0600) and its public half
(``KEY.pub``). ``anchor`` signs the chain's head with ``[journal]
anchor_key``, appends the anchor to ``[journal] anchor_file`` and journals it
(run it daily: see docs/deployment.md). ``export`` writes the rows between
two times (epoch ms or ISO 8601; without an offset, the site's time) as a
bundle signed with the same key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import zoneinfo
from pathlib import Path
from typing import Any

import anyio

from .core.config import Config, ConfigError, load_config
from .core.points import now_ms
from .core.store import ChainState, Store, StoreUnavailableError, verify_store
from .core.store.anchors import (
    ANCHOR_KIND,
    AnchorError,
    anchor_store,
    check_anchors,
    fingerprint,
    generate_key,
    load_private_key,
    load_public_key,
    read_anchor_file,
    verify_bundle,
    write_bundle,
)
from .core.store.chain import ChainBreak, ChainRow

__all__ = ["EXIT_BROKEN", "register"]

EXIT_BROKEN = 3
"""The exit status of ``journal verify`` when the chain, an anchor or a bundle does not hold."""


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``journal`` subcommand (and its actions) to the ``cityvisor`` command."""
    journal = commands.add_parser(
        "journal",
        parents=[log_level],
        help="check the journal's hash chain, anchor it, export a signed range",
    )
    actions = journal.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        parents=[log_level],
        help="walk the journal's hash chain and its anchors, or a bundle; name the first break",
    )
    verify.add_argument("-c", "--config", metavar="FILE", help="deployment file")
    verify.add_argument("--bundle", metavar="FILE", help="check this exported bundle instead")
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="the anchors' public key (PEM; default: derived from [journal] anchor_key)",
    )
    verify.add_argument(
        "--anchors", metavar="FILE", help="anchor file (default: [journal] anchor_file)"
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_verify, default_log_level="critical")
    keygen = actions.add_parser(
        "keygen", parents=[log_level], help="write a new Ed25519 anchor key and its public half"
    )
    keygen.add_argument("-o", "--output", required=True, metavar="KEY", help="KEY and KEY.pub")
    keygen.set_defaults(handler=_keygen, default_log_level="critical")
    anchor = actions.add_parser(
        "anchor",
        parents=[log_level],
        help="sign the chain's head, append it to the anchor file and journal it",
    )
    anchor.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    anchor.set_defaults(handler=_anchor, default_log_level="critical")
    export = actions.add_parser(
        "export", parents=[log_level], help="write a signed bundle of the journal between two times"
    )
    export.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    export.add_argument("--from", dest="since", required=True, metavar="TIME", help="from (incl.)")
    export.add_argument("--to", dest="until", required=True, metavar="TIME", help="to (excl.)")
    export.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle file")
    export.set_defaults(handler=_export, default_log_level="critical")


def _usage(message: str) -> Exception:
    from .cli import UsageError

    return UsageError(message)


def _store_config(path: str) -> Config:
    config = load_config(path)
    if config.store.backend == "sqlite" and not config.store.path.exists():
        raise _usage(f"{path}: [store] path {config.store.path} does not exist")
    return config


def _store(config: Config) -> Store:
    """The deployment's store, whichever its backend (errors as usage errors, secrets unsaid)."""
    try:
        return config.store.create_store(config.source)
    except ConfigError as error:
        raise _usage(str(error)) from None


async def _open(store: Store, config: Config) -> None:
    try:
        await store.open()
    except StoreUnavailableError as error:
        raise _usage(f"{config.source}: [store] {error}") from None


def _private_key(config: Config) -> Any:
    if config.journal.anchor_key is None:
        raise _usage(f"{config.source}: [journal] anchor_key is not set (cityvisor journal keygen)")
    try:
        return load_private_key(config.journal.anchor_key)
    except AnchorError as error:
        raise _usage(f"{config.source}: [journal] {error}") from None


# --------------------------------------------------------------------------- verify


def _verify(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        return _verify_bundle(args)
    if args.config is None:
        raise _usage("give the deployment file (-c FILE) or a bundle (--bundle FILE)")
    config = _store_config(args.config)
    key = None
    if args.public_key is not None:
        key = _public_key(args.public_key)
    elif config.journal.anchor_key is not None:
        key = _private_key(config).public_key()
    anchors_path = Path(args.anchors) if args.anchors else config.journal.anchor_file
    anchors = read_anchor_file(anchors_path) if anchors_path.exists() else []
    state, anchored, broken = anyio.run(_walk, config, key, anchors)
    result = {**state.as_json(), "anchors_checked": anchored}
    if broken is not None:
        result.update(ok=False, broken=broken.as_json())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(describe(state, broken))
        if key is None and anchors:
            print(f"anchors not checked: no public key ({len(anchors)} in {anchors_path})")
        elif anchored and key is not None:
            print(f"{anchored} anchors checked with key {fingerprint(key)}")
    return 0 if broken is None and state.ok else EXIT_BROKEN


def _public_key(path: str) -> Any:
    try:
        return load_public_key(path)
    except AnchorError as error:
        raise _usage(str(error)) from None


async def _walk(
    config: Config, key: Any, anchors: list[Any]
) -> tuple[ChainState, int, ChainBreak | None]:
    store = _store(config)
    await _open(store, config)
    try:
        state = await verify_store(store)
        if not state.ok or key is None:
            return state, 0, None
        journaled = await store.query_journal(kinds=[ANCHOR_KIND], limit=10_000)
        every = [("anchor file", a) for a in anchors]
        every += [(f"journal row {e.id}", e.data.get("anchor")) for e in reversed(journaled)]
        failed = await check_anchors(store, state, every, key)
        if failed is not None:
            where, anchor, problem = failed
            row = anchor.get("row_id", 0) if isinstance(anchor, dict) else 0
            return state, 0, ChainBreak(row, f"the anchor in the {where}: {problem}")
        return state, len(every), None
    finally:
        await store.close()


def _verify_bundle(args: argparse.Namespace) -> int:
    if args.public_key is None:
        raise _usage("--bundle needs the signer's --public-key")
    key = _public_key(args.public_key)
    try:
        data = Path(args.bundle).read_bytes()
    except OSError as error:
        raise _usage(f"cannot read {args.bundle}: {error.strerror}") from None
    try:
        check = verify_bundle(data, key)
    except AnchorError as error:
        if args.json:
            print(json.dumps({"ok": False, "error": str(error)}, indent=2))
        else:
            print(f"BROKEN: {error}")
        return EXIT_BROKEN
    if args.json:
        print(json.dumps({**check.state.as_json(), "bundle": check.header}, indent=2))
    else:
        print(describe(check.state))
        if check.state.ok:
            print(
                f"bundle signed with key {fingerprint(key)}: rows {check.header['first_id']}"
                f" to {check.header['last_id']}"
            )
    return 0 if check.state.ok else EXIT_BROKEN


def describe(state: ChainState, broken: ChainBreak | None = None) -> str:
    """One line for a person: the chain holds (how many rows, the head) or where it breaks."""
    broken = state.broken or broken
    if broken is not None:
        return f"BROKEN at row {broken.id}: {broken.reason} ({state.rows} rows checked)"
    return f"OK: {state.rows} rows chained, head row {state.head_id} hash {state.head_hash}"


# --------------------------------------------------------------------------- keygen, anchor


def _keygen(args: argparse.Namespace) -> int:
    target = Path(args.output)
    public_path = Path(f"{target}.pub")
    if target.exists() or public_path.exists():
        raise _usage(f"{target} or {public_path} exists already: not overwritten")
    private, public = generate_key()
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(private)
        public_path.write_bytes(public)
    except OSError as error:
        raise _usage(f"cannot write {error.filename}: {error.strerror}") from None
    print(f"wrote {target} (private, mode 0600) and {public_path}")
    print(f"fingerprint {fingerprint(load_public_key(public_path))}")
    return 0


def _anchor(args: argparse.Namespace) -> int:
    config = _store_config(args.config)
    key = _private_key(config)
    anchor = anyio.run(_anchor_store, config, key)
    if anchor is None:
        print("BROKEN: no anchor for a broken chain; run cityvisor journal verify")
        return EXIT_BROKEN
    print(f"anchored row {anchor['row_id']} hash {anchor['hash']} in {config.journal.anchor_file}")
    return 0


async def _anchor_store(config: Config, key: Any) -> dict[str, Any] | None:
    store = _store(config)
    await _open(store, config)
    try:
        if not await store.journal_chain_rows(0, 1):
            raise _usage("the journal is empty: nothing to anchor")
        return await anchor_store(
            store, key, config.journal.anchor_file, f"cli:{getpass.getuser()}"
        )
    finally:
        await store.close()


# --------------------------------------------------------------------------- export


def _export(args: argparse.Namespace) -> int:
    config = _store_config(args.config)
    key = _private_key(config)
    zone = zoneinfo.ZoneInfo(config.site.timezone)
    since, until = _time(args.since, "--from", zone), _time(args.until, "--to", zone)
    rows = anyio.run(_rows_between, config, since, until)
    try:
        bundle = write_bundle(
            rows, key, {"site": config.site.name, "from": since, "to": until, "exported": now_ms()}
        )
    except AnchorError as error:
        raise _usage(str(error)) from None
    try:
        Path(args.output).write_bytes(bundle)
    except OSError as error:
        raise _usage(f"cannot write {args.output}: {error.strerror}") from None
    print(
        f"wrote {args.output}: rows {rows[0].id} to {rows[-1].id}, signed {fingerprint(key.public_key())}"
    )
    return 0


def _time(text: str, option: str, zone: dt.tzinfo) -> int:
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _usage(f"{option} {text!r}: expected epoch milliseconds or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


async def _rows_between(config: Config, since: int, until: int) -> list[ChainRow]:
    """Every row from the first written at or after ``since`` to the last before ``until``."""
    store = _store(config)
    await _open(store, config)
    try:
        ids = await store.journal_ids_between(since, until)
        rows: list[ChainRow] = []
        if ids is None:
            return rows
        first, last = ids
        after = first - 1
        while after < last:
            chunk = await store.journal_chain_rows(after, 5000)
            if not chunk:
                break
            rows += [row for row in chunk if row.id <= last]
            after = chunk[-1].id
        return rows
    finally:
        await store.close()
