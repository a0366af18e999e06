"""``cityvisor badges``: manage badges, their rights and the lockdown exceptions from a shell.

::

    cityvisor badges -c city.toml add 12:3456 --holder "Claire Martin"
    cityvisor badges -c city.toml grant 12:3456 building:mairie --until 2026-12-31
    cityvisor badges -c city.toml exceptions add 12:3456 zone:chalezeule
    cityvisor badges -c city.toml list
    cityvisor badges -c city.toml revoke 7

It opens the store of the deployment file (the hub may be running: SQLite in
WAL mode lets both work, and the doors see a change within seconds). Every
change is journaled as the system account running the command
(``cli:<login>``), with the badge's pseudonym.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from cityvisor.core.config import load_config
from cityvisor.core.store import JournalEntry

from . import rights


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``badges`` subcommand to the ``cityvisor`` command."""
    badges = commands.add_parser(
        "badges",
        parents=[log_level],
        help="manage access badges, their rights and the lockdown exceptions",
        description="Places are building:<id>, zone:<id> or * (every door); dates are ISO 8601.",
    )
    badges.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    actions = badges.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every badge with its rights and exceptions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add = actions.add_parser("add", help="enrol a badge")
    add.add_argument("number", help='the badge number ("12:3456" for a 26-bit card)')
    add.add_argument("--holder", required=True, help="the holder's name")
    add.add_argument("--note", default="", help="a note (service, reason)")
    remove = actions.add_parser("remove", help="withdraw a badge and all its permits")
    remove.add_argument("number")
    grant = actions.add_parser("grant", help="let a badge through the doors of a place")
    _permit_arguments(grant)
    revoke = actions.add_parser("revoke", help="withdraw a right (by id, see list)")
    revoke.add_argument("id", type=int)
    exceptions = actions.add_parser("exceptions", help="the lockdown exception list")
    what = exceptions.add_subparsers(dest="exception_action", metavar="ACTION", required=True)
    what.add_parser("list", help="the badges that still pass in lockdown")
    _permit_arguments(what.add_parser("add", help="let a badge through a place in lockdown"))
    what.add_parser("remove", help="withdraw an exception (by id)").add_argument("id", type=int)
    badges.set_defaults(handler=_run, default_log_level="warning")


def _permit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("number")
    parser.add_argument("place", help="building:<id>, zone:<id> or *")
    parser.add_argument("--from", dest="valid_from", metavar="DATE", help="valid from (included)")
    parser.add_argument(
        "--until", dest="valid_until", metavar="DATE", help="valid until (included)"
    )


def _run(args: argparse.Namespace) -> int:
    from cityvisor.cli import UsageError

    config = load_config(args.config)
    try:
        return anyio.run(_act, args, config)
    except rights.RightsError as error:
        raise UsageError(str(error)) from None


async def _act(args: argparse.Namespace, config: Any) -> int:
    path = config.store.path
    store = config.store.create_store(config.source)
    await store.open()
    try:
        await store.call(rights.create_tables)
        key = await anyio.to_thread.run_sync(rights.pseudonym_key, path)
        action = (
            args.action if args.action != "exceptions" else f"exceptions {args.exception_action}"
        )
        if action in ("list", "exceptions list"):
            badges = await store.call(rights.list_badges)
            for badge in badges:
                badge["pseudonym"] = rights.pseudonym(key, badge["number"])
            if action == "exceptions list":
                badges = [b for b in badges if b["exceptions"]]
            _print(badges, as_json=getattr(args, "json", False))
            return 0
        by = f"cli:{getpass.getuser()}"
        edit: Callable[[Any], Any]
        data: dict[str, Any]
        if action == "add":
            message, data = "badge enrolled", {}
            edit = partial(rights.add_badge, number=args.number, holder=args.holder, note=args.note)
        elif action == "remove":
            message, data = "badge withdrawn", {}
            edit = partial(rights.remove_badge, number=args.number)
        elif action in ("grant", "exceptions add"):
            kind = "right" if action == "grant" else "exception"
            place = rights.parse_place(args.place)
            start = rights.parse_date(args.valid_from)
            end = rights.parse_date(args.valid_until, end=True)
            message, data = (
                f"{kind} granted",
                {"place": place, "valid_from": start, "valid_until": end},
            )
            edit = partial(rights.add_permit, number=args.number, kind=kind, place=place)
            edit = partial(edit, valid_from=start, valid_until=end, by=by)
        else:
            kind = "right" if action == "revoke" else "exception"
            message, data = f"{kind} revoked", {"id": args.id}
            edit = partial(rights.remove_permit, permit_id=args.id, kind=kind)
        result = await store.call(edit)
        number = result if isinstance(result, str) else args.number
        if isinstance(result, int):
            data["id"] = result
        badge = rights.pseudonym(key, number)
        await store.journal(
            JournalEntry(kind="badges", message=message, user=by, data={"badge": badge, **data})
        )
        print(
            f"{message}: {number} ({badge})" + (f", id {result}" if isinstance(result, int) else "")
        )
        return 0
    finally:
        await store.close()


def _print(badges: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        json.dump(badges, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    for badge in badges:
        print(
            f"{badge['number']}  {badge['holder']}  ({badge['pseudonym']})  {badge['note']}".rstrip()
        )
        for kind in ("rights", "exceptions"):
            for permit in badge[kind]:
                period = (
                    f"from {_day(permit['valid_from'])} until before {_day(permit['valid_until'])}"
                )
                print(f"    {kind[:-1]} #{permit['id']}: {permit['place']}  {period}")


def _day(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="minutes")
