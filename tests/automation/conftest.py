"""A real hub with demo tanks and the automation plugin, rule files on disk."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from cityvisor.core.hub import Hub
from cityvisor.core.store import JournalEntry
from cityvisor.plugins import automation, demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import find_server

from ..web.conftest import Env, add_users

CONFIG = """
[site]
name = "Testville"

[store]
path = "automation.sqlite"
flush_interval = 0.05

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
config = {{ period = 0.05, fill_rate = 400, initial_level = 50 }}

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "centre"
config = {{ period = 0.05, fill_rate = 400, initial_level = 40 }}

[[devices]]
id = "tank-n1"
type = "demo.tank"
zone = "nord"
tags = ["reservoir"]
config = {{ period = 0.05, fill_rate = 400, initial_level = 60 }}

[[devices]]
id = "tank-n2"
type = "demo.tank"
zone = "nord"
tags = ["reservoir"]
config = {{ period = 0.05, fill_rate = 400, initial_level = 60 }}

[plugins.automation]
enabled = true
rules = "rules"
{extra}
"""

LEVEL_A = "centre/demo/tank-a/level"
LEVEL_B = "centre/demo/tank-b/level"


def write_config(directory: Path, rules: str, extra: str = "") -> Path:
    """Write the deployment file and one rule file; return the deployment file."""
    (directory / "rules").mkdir(exist_ok=True)
    (directory / "rules" / "city.toml").write_text(rules, encoding="utf-8")
    path = directory / "cityvisor.toml"
    path.write_text(CONFIG.format(extra=extra), encoding="utf-8")
    return path


HubFactory = Callable[[str], AbstractAsyncContextManager[Hub]]


@pytest.fixture
def hub_with_rules(tmp_path: Path) -> HubFactory:
    """``async with hub_with_rules(rules_toml) as hub``: a running hub with those rules."""

    @asynccontextmanager
    async def start(rules: str) -> AsyncIterator[Hub]:
        path = write_config(tmp_path, rules)
        async with running_hub(path, tmp_path, plugins=[demo, automation]) as hub:
            await rules_ready(hub)
            yield hub

    return start


async def rules_ready(hub: Hub) -> None:
    """Wait until the hub's rule engine has loaded its files."""
    found = automation.engine(hub)
    assert found is not None
    with anyio.fail_after(10):
        await found.ready.wait()


async def firings(hub: Hub, rule: str) -> list[JournalEntry]:
    """The journaled firings of one rule, oldest first."""
    entries = await hub.store.query_journal(kinds=["rule"], limit=1000)
    return [
        e for e in reversed(entries) if e.data.get("rule") == rule and e.message.endswith("fired")
    ]


@asynccontextmanager
async def running_web(path: Path, directory: Path) -> AsyncIterator[Env]:
    """A hub of the deployment file ``path`` with its web server, the test users and its rules."""
    async with running_hub(path, directory, plugins=[demo, web_plugin, automation]) as hub:
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        await rules_ready(hub)
        await add_users(hub)
        environment = Env(hub, server, server.url)
        try:
            yield environment
        finally:
            for session in environment.sessions:
                await session.close()


async def eventually(check: Callable[[], Any], timeout: float = 20) -> None:
    """Wait until ``check()`` (a value or an awaitable) is true: a run's state, a stored row."""
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(0.05)
