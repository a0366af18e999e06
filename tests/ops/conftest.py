"""A real hub with the operations layer, its web server and trackers' port on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from cityvisor.plugins import demo
from cityvisor.plugins import ops as ops_plugin
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import find_server

from ..web.conftest import Env, add_users

TOKENS = {
    "van-1": "token-of-van-one-0123",
    "van-2": "token-of-van-two-0123",
    "van-3": "token-of-van-three-01",
}

CONFIG = """
[site]
name = "Testville"

[store]
path = "ops.sqlite"
flush_interval = 0.05

[web]
host = "127.0.0.1"
port = 0

[security]
zone_reading = "{zone_reading}"

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
location = [47.3200, 5.0400]
config = {{ period = 0.05, fill_rate = 100, initial_level = 50 }}

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "nord"
location = [47.3800, 5.0500]
config = {{ period = 0.05, fill_rate = 100, initial_level = 40 }}

[plugins.ops]
enabled = true
procedures = "procedures"
road_speed_kmh = 36

[plugins.ops.trackers]
port = 0

[[plugins.ops.crews]]
id = "water-far"
name = "Water crew (far)"
skills = ["demo"]
tracker = "van-1"
token = "token-of-van-one-0123"

[[plugins.ops.crews]]
id = "water-near"
name = "Water crew (near)"
skills = ["demo", "lighting"]
tracker = "van-2"
token = "token-of-van-two-0123"

[[plugins.ops.crews]]
id = "police-nearest"
name = "Police patrol"
skills = ["police"]
tracker = "van-3"
token = "token-of-van-three-01"

[[plugins.ops.open311.services]]
code = "leak"
name = "Water leak"
group = "Water"
skill = "demo"
priority = "medium"

[[plugins.ops.open311.services]]
code = "graffiti"
name = "Graffiti"
"""

PROCEDURE = """+++
id = "DEMO-01"
version = 3
title = { fr = "Niveau haut", en = "High water" }

[applies_to]
alarms = ["high_water"]
device_types = ["demo.tank"]
+++

# Niveau haut

- [ ] Vérifier le niveau sur la courbe
- [ ] Baisser la consigne `command: set_level`
- [ ] Appeler l'astreinte eau `call: +33 3 80 00 00 00`
"""


def write_procedures(directory: Path) -> None:
    """The test city's procedure files."""
    directory.mkdir(exist_ok=True)
    (directory / "DEMO-01.md").write_text(PROCEDURE, encoding="utf-8")
    (directory / "WATER-02.toml").write_text(
        'title = "Fuite"\nsteps = ["Fermer la vanne", {text = "Appeler", call = "astreinte"}]\n',
        encoding="utf-8",
    )
    (directory / "COMM-01.toml").write_text(
        'title = "Liaison perdue"\nsteps = ["Vérifier le réseau", "Envoyer une équipe"]\n',
        encoding="utf-8",
    )


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp needs asyncio."""
    return "asyncio"


@dataclass
class OpsEnv(Env):
    """The running hub with its operations layer."""

    @property
    def ops(self) -> Any:
        return ops_plugin.operations(self.hub)

    @property
    def tracker_url(self) -> str:
        return f"http://127.0.0.1:{self.ops.tracker_port}/"


@asynccontextmanager
async def start(
    tmp_path: Path, zone_reading: str = "all", *, users: bool = True
) -> AsyncIterator[OpsEnv]:
    """Run the test city; yield its environment."""
    write_procedures(tmp_path / "procedures")
    text = CONFIG.format(zone_reading=zone_reading)
    async with running_hub(text, tmp_path, plugins=[demo, web_plugin, ops_plugin]) as hub:
        server = find_server(hub)
        assert server is not None
        operations = ops_plugin.operations(hub)
        assert operations is not None
        with anyio.fail_after(10):
            await server.ready.wait()
            await operations.ready.wait()
        if users:
            await add_users(hub)
        environment = OpsEnv(hub, server, server.url)
        try:
            yield environment
        finally:
            for session in environment.sessions:
                await session.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[OpsEnv]:
    """The test city, everyone reading every zone."""
    async with start(tmp_path) as environment:
        yield environment


@pytest.fixture
async def own_zone_env(tmp_path: Path) -> AsyncIterator[OpsEnv]:
    """The test city where users read only their own zones."""
    async with start(tmp_path, "own") as environment:
        yield environment
