"""A real hub with the demo tanks and the web server on a free loopback port, and HTTP clients.

Users are created with cheap argon2 parameters (the hash carries its own
parameters, so the server verifies them cheaply too): the tests log in
dozens of times on a shared two-core machine.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import argon2
import pytest

from cityvisor.core.hub import Hub
from cityvisor.core.users import Role
from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import WebServer, find_server
from cityvisor.web.auth import Accounts

CONFIG = """
[site]
name = "Testville"

[store]
path = "web.sqlite"
flush_interval = 0.05

[web]
host = "127.0.0.1"
port = 0
metrics_token = "scrape-me-please-0123456789"

[[zones]]
id = "centre"
name = "Centre"

[[zones]]
id = "nord"
name = "Nord"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
name = "Tank A"
tags = ["water"]
location = [47.32, 5.04]
config = { period = 0.05, fill_rate = 100, initial_level = 50 }

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "nord"
tags = ["water"]
config = { period = 0.05, fill_rate = 100, initial_level = 40 }

[[procedures]]
id = "DEMO-01"
version = 2
title = { fr = "Niveau haut", en = "High water" }
steps = ["Check the level", "Lower the setpoint", "Call the on-call engineer"]

[[users]]
name = "sam"
role = "supervisor"
"""

PASSWORD = "correct horse battery"
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

USERS: dict[str, tuple[Role, list[str]]] = {
    "admin": (Role.ADMIN, ["*"]),
    "sam": (Role.VIEWER, ["*"]),  # the config makes sam a supervisor: the file wins
    "sue": (Role.SUPERVISOR, ["*"]),
    "olivia": (Role.OPERATOR, ["centre"]),
    "nora": (Role.OPERATOR, ["nord"]),
    "victor": (Role.VIEWER, ["*"]),
}


class Client:
    """An HTTP client of the API: keeps the cookie, sends the CSRF token on every change."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = session
        self.csrf: str | None = None
        self.origin = base

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """Send a request; return the status and the decoded JSON (or text)."""
        sent = {"Origin": self.origin}
        if self.csrf and method not in ("GET", "HEAD"):
            sent["X-CSRF-Token"] = self.csrf
        sent.update(headers or {})
        async with self.http.request(
            method, self.base + path, json=json, headers=sent, **kwargs
        ) as response:
            text = await response.text()
            if response.content_type == "application/json":
                import json as json_module

                return response.status, json_module.loads(text)
            return response.status, text

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kwargs)

    async def login(self, name: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = await self.post("/api/v1/session", {"username": name, "password": password})
        assert status == 200, body
        self.csrf = body["csrf_token"]
        return body


@dataclass
class Env:
    """The running hub, its web server and a factory of clients."""

    hub: Hub
    server: WebServer
    url: str
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def client(self) -> Client:
        """A client with its own cookie jar (not logged in)."""
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sessions.append(session)
        return Client(self.url, session)

    async def login(self, name: str) -> Client:
        """A client logged in as ``name``."""
        client = self.client()
        await client.login(name)
        return client

    @property
    def state(self) -> Any:
        return self.server.state


async def add_users(hub: Hub) -> None:
    accounts = Accounts(hub.store, hub.config.user_list())
    await accounts.setup()
    for name, (role, zones) in USERS.items():
        await accounts.add(name, PASSWORD, role, zones, hasher=CHEAP)


@asynccontextmanager
async def running_env(config: str, directory: Path) -> AsyncIterator[Env]:
    """A hub of ``config`` serving the HMI on a free port, with the test users."""
    async with running_hub(config, directory, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None, "the web plugin did not start a server"
        with anyio.fail_after(10):
            await server.ready.wait()
        await add_users(hub)
        environment = Env(hub, server, server.url)
        try:
            yield environment
        finally:
            for session in environment.sessions:
                await session.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """A running hub serving the HMI on a free port, with the test users."""
    async with running_env(CONFIG, tmp_path) as environment:
        yield environment


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive window: a client that stops reading blocks fast."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock
