"""``cityvisor users ...``: manage who may log in to the HMI.

::

    cityvisor users add NAME -c FILE [--role ROLE] [--zones Z1,Z2] [--password-stdin]
    cityvisor users passwd NAME -c FILE [--password-stdin]
    cityvisor users list -c FILE [--json]
    cityvisor users remove NAME -c FILE

Accounts are kept in the deployment's store (``[store] path``), so the
command works while the hub runs. The password is read from the terminal
without echo (asked twice), or as one line from standard input with
``--password-stdin`` (for scripts: ``printf '%s\\n' "$PW" | cityvisor users
add ...``); it never appears on the command line, in a log or in the
journal. A user the deployment file declares in ``[[users]]`` keeps the
file's role and zones (see :mod:`cityvisor.web.auth`). Every change is
written to the journal (kind ``user``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

import anyio

from ..core.config import Config, load_config
from ..core.store import JournalEntry, Store
from ..core.users import Role
from .auth import Account, Accounts, PasswordError, check_password

__all__ = ["register"]


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``users`` subcommand (and its actions) to the ``cityvisor`` command."""
    users = commands.add_parser(
        "users",
        parents=[log_level],
        help="manage the HMI's users: add, passwd, list, remove",
        description="Manage who may log in to the HMI. Passwords are stored as argon2 hashes "
        "in the deployment's store; roles and zones declared in the deployment file win.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", parents=[common, log_level], help="create a user")
    add.add_argument("name", help="login name")
    add.add_argument(
        "--role",
        choices=[str(r) for r in Role],
        default=None,
        help="viewer, operator, supervisor or admin (default: the file's, else viewer)",
    )
    add.add_argument(
        "--zones",
        default=None,
        metavar="Z1,Z2",
        help='comma-separated zone ids the user may act in; "*" for all (default: *)',
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password as a line from stdin"
    )
    add.set_defaults(handler=_add, default_log_level="critical")

    passwd = actions.add_parser(
        "passwd", parents=[common, log_level], help="set a user's password (ends their sessions)"
    )
    passwd.add_argument("name", help="login name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password as a line from stdin"
    )
    passwd.set_defaults(handler=_passwd, default_log_level="critical")

    listing = actions.add_parser("list", parents=[common, log_level], help="list the users")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list, default_log_level="critical")

    remove = actions.add_parser(
        "remove", parents=[common, log_level], help="delete a user (ends their sessions)"
    )
    remove.add_argument("name", help="login name")
    remove.set_defaults(handler=_remove, default_log_level="critical")


# --------------------------------------------------------------------------- helpers


def _usage(message: str) -> Exception:
    from ..cli import UsageError

    return UsageError(message)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise _usage("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise _usage("no terminal to ask the password on: give it with --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != password:
        raise _usage("the two passwords differ")
    return password


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _zones(config: Config, text: str | None) -> list[str]:
    if text is None:
        return ["*"]
    zones = [z.strip() for z in text.split(",") if z.strip()]
    if not zones:
        raise _usage('--zones needs at least one zone id, or "*"')
    declared = {z.id for z in config.zones}
    unknown = [z for z in zones if z != "*" and z not in declared]
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise _usage(f'unknown zone {unknown[0]!r} (declared zones: {known}, or "*")')
    return zones


async def _with_accounts(config: Config, action: Any) -> Any:
    store = config.store.create_store(config.source)
    await store.open()
    try:
        accounts = Accounts(store, config.user_list())
        await accounts.setup()
        return await action(accounts, store)
    finally:
        await store.close()


def _run(config: Config, action: Any) -> Any:
    return anyio.run(_with_accounts, config, action, backend="asyncio")


def _journal(store: Store, message: str, name: str, data: dict[str, Any]) -> Any:
    return store.journal(
        JournalEntry(kind="user", message=message, user=_operator(), data={"name": name, **data})
    )


# --------------------------------------------------------------------------- actions


def _add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    declared = {u.name: u for u in config.user_list()}.get(args.name)
    zones = _zones(config, args.zones)
    role = Role.parse(args.role) if args.role else (declared.role if declared else Role.VIEWER)
    password = _read_password(args.password_stdin)
    try:
        check_password(args.name, password)
    except PasswordError as error:
        raise _usage(str(error)) from None

    async def add(accounts: Accounts, store: Store) -> Account:
        try:
            account = await accounts.add(args.name, password, role, zones)
        except ValueError as error:
            raise _usage(str(error)) from None
        await _journal(
            store,
            f"user {args.name} added",
            args.name,
            {"role": str(account.role), "zones": sorted(account.zones)},
        )
        return account

    account = _run(config, add)
    if declared is not None and (
        (args.role and declared.role != role) or (args.zones and declared.zones != set(zones))
    ):
        print(
            f"note: {args.name} is declared in {config.source}: its role and zones there win "
            f"({account.role}, zones {','.join(sorted(account.zones))})",
            file=sys.stderr,
        )
    print(f"added {args.name}: {account.role}, zones {','.join(sorted(account.zones))}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    password = _read_password(args.password_stdin)
    try:
        check_password(args.name, password)
    except PasswordError as error:
        raise _usage(str(error)) from None

    async def passwd(accounts: Accounts, store: Store) -> int:
        try:
            ended = await accounts.set_password(args.name, password)
        except KeyError:
            raise _usage(f"unknown user {args.name!r}") from None
        await _journal(
            store, f"password of {args.name} changed", args.name, {"sessions_ended": ended}
        )
        return ended

    ended = _run(config, passwd)
    print(f"password of {args.name} changed; {ended} session(s) ended")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def listing(accounts: Accounts, store: Store) -> list[Account]:
        return await accounts.list_all()

    accounts = _run(config, listing)
    if args.json:
        json.dump([a.as_json() for a in accounts], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for account in accounts:
        flags = "" if account.has_password else "  (no password yet)"
        print(
            f"{account.name}\t{account.role}\t{','.join(sorted(account.zones))}"
            f"\t{account.source}{flags}"
        )
    return 0


def _remove(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def remove(accounts: Accounts, store: Store) -> int:
        try:
            ended = await accounts.remove(args.name)
        except KeyError:
            raise _usage(f"unknown user {args.name!r}") from None
        await _journal(store, f"user {args.name} removed", args.name, {"sessions_ended": ended})
        return ended

    ended = _run(config, remove)
    print(f"removed {args.name}; {ended} session(s) ended")
    if args.name in {u.name for u in config.users}:
        print(
            f"note: {args.name} is still declared in {config.source}; without a password "
            "it cannot log in",
            file=sys.stderr,
        )
    return 0
