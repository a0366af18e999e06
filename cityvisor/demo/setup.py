"""What both demos share: the HMI's port checked, the users' passwords and badges, the HMI's address."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from .city import BADGES

__all__ = [
    "PASSWORD_VARIABLE",
    "SUPERVISOR",
    "SUPERVISOR_VARIABLE",
    "check_port",
    "hmi_url",
    "prepare_store",
]

PASSWORD_VARIABLE = "CITYVISOR_ADMIN_PASSWORD"
SUPERVISOR = "superviseur"
"""The demo's second user, a supervisor: with ``admin``, two people to try two-person approval."""
SUPERVISOR_VARIABLE = "CITYVISOR_SUPERVISOR_PASSWORD"


def check_port(host: str, port: int) -> None:
    """Refuse to start when the HMI's port is taken (the web server would retry forever)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(
                error.errno, f"{host}:{port} is not available ({error.strerror}); try --port"
            ) from None


async def prepare_store(config: Any) -> tuple[str | None, str]:
    """Set the two users' passwords and enrol the demo's badges.

    Return the admin's password if it was generated (None when it came from the
    environment) and the supervisor's (always shown: it protects only the demo).
    """
    from ..core.store import SqliteStore
    from ..core.users import Role
    from ..plugins.access import rights
    from ..web.auth import Accounts

    password = os.environ.get(PASSWORD_VARIABLE)
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    store = SqliteStore(config.store.path)
    await store.open()
    try:
        accounts = Accounts(store, config.user_list())
        await accounts.setup()
        supervisor = os.environ.get(SUPERVISOR_VARIABLE) or secrets.token_urlsafe(12)
        for name, secret, role in (
            ("admin", password, Role.ADMIN),
            (SUPERVISOR, supervisor, Role.SUPERVISOR),
        ):
            if await accounts.get(name) is None:
                await accounts.add(name, secret, role, ["*"])
            else:
                await accounts.set_password(name, secret)

        def enrol(db: Any) -> None:
            rights.create_tables(db)
            enrolled = {badge["number"] for badge in rights.list_badges(db)}
            for badge in BADGES:
                if badge.number in enrolled:
                    continue
                rights.add_badge(db, badge.number, badge.holder, "demo")
                for place in badge.places:
                    rights.add_permit(db, badge.number, "right", place, by="demo")
                if badge.lockdown_exception:
                    rights.add_permit(db, badge.number, "exception", "*", by="demo")

        await store.call(enrol)
    finally:
        await store.close()
    return generated, supervisor


async def hmi_url(hub: Any) -> str:
    from ..web import find_server

    server = find_server(hub)
    if server is None:
        raise RuntimeError("the web plugin did not start the HMI")
    await server.ready.wait()
    return server.url
