"""A small city for the browser tests: demo tanks, a lighting cabinet, a camera, the HMI.

:func:`browser_city` runs a real hub with its web server on a free loopback
port (or the given one), a lighting cabinet on a Modbus/TCP simulator, a
simulated ONVIF camera watching a tank, and the test users (cheap argon2
hashes, password :data:`PASSWORD`). :func:`launch_chromium` starts the
Debian package's Chromium through Playwright (no browser download ever).

Run it by hand to look at the screens with real data::

    python -m tests.web.browser_fixtures --port 8765     # then http://127.0.0.1:8765/
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import shutil
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from PIL import Image

from cityvisor.core.hub import Hub
from cityvisor.core.points import PointValue, Quality, now_ms
from cityvisor.demo.city import outlines
from cityvisor.hal.sim.camera import SimulatedCamera
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.plugins import cameras, demo, lighting
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub, wait_for_point
from cityvisor.web import WebServer, find_server

from .conftest import PASSWORD, add_users

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "PASSWORD",
    "City",
    "browser_city",
    "chromium_missing",
    "crowded_city",
    "launch_chromium",
    "seed_history",
    "tile_server",
]

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium (packages chromium and chromium-driver; .ci/run installs them)."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CAMERA_PASSWORD = "Cam-pa55word"

CONFIG = """
[site]
name = "Ville de Test"
timezone = "Europe/Paris"
language = "fr"
latitude = 47.3220
longitude = 5.0415

[store]
path = "browser.sqlite"
flush_interval = 0.05

[web]
host = "127.0.0.1"
port = {port}
tile_url = "{tile_url}"

[[zones]]
id = "centre"
name = "Centre"
label = {{ fr = "Centre-ville", en = "City centre" }}

[[zones]]
id = "nord"
name = "Nord"
label = {{ fr = "Quartier nord", en = "North district" }}

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
name = "Réservoir A"
tags = ["water"]
location = [47.3225, 5.0330]
watched_by = ["cam-1"]
config = {{ period = 0.1, fill_rate = 25, initial_level = 50 }}

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "nord"
name = "Réservoir B"
tags = ["water"]
location = [47.3290, 5.0400]
config = {{ period = 0.1, fill_rate = 25, initial_level = 40 }}

[[devices]]
id = "cab-1"
type = "lighting.cabinet"
zone = "centre"
name = "Armoire place Darcy"
tags = ["lighting"]
location = [47.3220, 5.0415]
config = {{ host = "127.0.0.1", port = {lighting_port}, unit = 1, circuits = 4, period = 0.2 }}

[[devices]]
id = "cam-1"
type = "cameras.camera"
zone = "centre"
name = "Caméra place Darcy"
location = [47.3228, 5.0340]
config = {{ host = "127.0.0.1", port = {camera_port}, username = "cityvisor", password = "${{CITYVISOR_TEST_CAMERA_PASSWORD}}", timeout = 5 }}

[[procedures]]
id = "DEMO-01"
version = 1
title = {{ fr = "Niveau haut d'un réservoir", en = "High water in a tank" }}
steps = [
    {{ fr = "Vérifier le niveau et la consigne.", en = "Check the level and the setpoint." }},
    {{ fr = "Abaisser la consigne à 50 %.", en = "Lower the setpoint to 50 %." }},
    {{ fr = "Appeler l'astreinte si le niveau monte encore.", en = "Call the on-call engineer if it still rises." }},
]
"""


@dataclass
class City:
    """The running hub, its web server's URL and the simulators behind it."""

    hub: Hub
    server: WebServer
    url: str
    lighting: LightingSimulator
    camera: SimulatedCamera
    _unplug: anyio.Event
    _unplugged: anyio.Event

    async def unplug_lighting(self) -> None:
        """Stop the lighting cabinet's simulator: the cabinet stops answering for good."""
        self._unplug.set()
        with anyio.fail_after(10):
            await self._unplugged.wait()


async def _lighting(
    sim: LightingSimulator,
    unplug: anyio.Event,
    unplugged: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    # The simulator is entered and left in this task (anyio's task groups want that),
    # so that a test can stop it while the hub goes on.
    try:
        async with sim:
            task_status.started()
            await unplug.wait()
    finally:
        unplugged.set()


@asynccontextmanager
async def browser_city(
    directory: Path, *, port: int = 0, tile_url: str = "", camera: bool = True
) -> AsyncIterator[City]:
    """Run the small city until the block ends; devices online, users created."""
    await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("CITYVISOR_TEST_CAMERA_PASSWORD")
    os.environ["CITYVISOR_TEST_CAMERA_PASSWORD"] = CAMERA_PASSWORD
    async with AsyncExitStack() as stack:
        stack.callback(_restore_env, "CITYVISOR_TEST_CAMERA_PASSWORD", previous)
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        sim = LightingSimulator("127.0.0.1", 0, cabinets=1, circuits=4, ramp_rate=100.0, tick=0.05)
        unplug, unplugged = anyio.Event(), anyio.Event()
        await group.start(_lighting, sim, unplug, unplugged)
        cam = await stack.enter_async_context(
            SimulatedCamera(
                "Caméra place Darcy",
                username="cityvisor",
                password=CAMERA_PASSWORD,
                image_size=(320, 180),
                time_zone="Europe/Paris",
            )
        )
        config = CONFIG.format(
            port=port, tile_url=tile_url, lighting_port=sim.port, camera_port=cam.port
        )
        if not camera:
            config = config.replace('watched_by = ["cam-1"]\n', "")
            config = (
                config[: config.index('[[devices]]\nid = "cam-1"')]
                + config[config.index("[[procedures]]") :]
            )
        hub = await stack.enter_async_context(
            running_hub(config, directory, plugins=[demo, lighting, cameras, web_plugin])
        )
        server = find_server(hub)
        assert server is not None, "the web plugin did not start a server"
        with anyio.fail_after(20):
            await server.ready.wait()
            await wait_for_point(hub, "centre/lighting/cab-1/online", lambda v: v.value is True)
            if camera:
                await wait_for_point(hub, "centre/cameras/cam-1/online", lambda v: v.value is True)
        await add_users(hub)
        yield City(hub, server, server.url, sim, cam, unplug, unplugged)


CROWDED_ZONES = {
    "dijon": ("Dijon", (47.3220, 5.0415)),
    "chenove": ("Chenôve", (47.2930, 5.0070)),
    "talant": ("Talant", (47.3370, 5.0060)),
}


def crowded_config(devices: int, alarms: int, port: int = 0) -> str:
    """A city of ``devices`` idle tanks around three communes; ``alarms`` of them in alarm."""
    lines = [
        '[site]\nname = "Ville encombrée"\ntimezone = "Europe/Paris"\nlanguage = "fr"',
        "latitude = 47.3220\nlongitude = 5.0415",
        '[store]\npath = "crowded.sqlite"\nflush_interval = 0.5',
        f'[web]\nhost = "127.0.0.1"\nport = {port}\nbasemap = "communes.geojson"',
    ]
    for zone, (name, _) in CROWDED_ZONES.items():
        lines.append(f'[[zones]]\nid = "{zone}"\nname = "{name}"')
    zones = list(CROWDED_ZONES.items())
    side = math.ceil(math.sqrt(devices / len(zones)))
    for i in range(devices):
        zone, (_, (latitude, longitude)) = zones[i % len(zones)]
        n = i // len(zones)
        # A square grid around the commune's centre, about 25 m apart.
        location = [
            latitude + (n // side - side / 2) * 0.00022,
            longitude + (n % side - side / 2) * 0.00033,
        ]
        level = 95 if i < alarms else 40
        lines.append(
            f'[[devices]]\nid = "t{i:05d}"\ntype = "demo.tank"\nzone = "{zone}"\n'
            f'name = "Réservoir {i}"\nlocation = [{location[0]:.6f}, {location[1]:.6f}]\n'
            f"config = {{ period = 3600, initial_level = {level} }}"
        )
    return "\n\n".join(lines) + "\n"


@asynccontextmanager
async def crowded_city(directory: Path, *, devices: int, alarms: int = 0) -> AsyncIterator[Hub]:
    """Run a hub with ``devices`` idle demo tanks (for the map at scale); users created."""
    await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
    config = crowded_config(devices, alarms)
    # The map's offline background: the communes' outlines, as the demo writes them.
    parsed = tomllib.loads(config)
    await anyio.Path(directory / "communes.geojson").write_text(
        json.dumps(outlines(parsed), ensure_ascii=False), encoding="utf-8"
    )
    async with running_hub(config, directory, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None, "the web plugin did not start a server"
        with anyio.fail_after(120):
            await server.ready.wait()
        await add_users(hub)
        yield hub


def seed_history(hub: Hub, point_id: str, minutes: float = 15.0, step_s: float = 5.0) -> int:
    """Give a point a plausible past (a slow wave) so that its trend has something to show."""
    point = hub.points.get(point_id)
    now = now_ms()
    count = int(minutes * 60 / step_s)
    for i in range(count):
        ts = now - int((count - i) * step_s * 1000)
        value = 55 + 20 * math.sin(i / count * 2 * math.pi) + 6 * math.sin(i / 7)
        hub.store.record(PointValue(point_id, round(value, 2), Quality.GOOD, ts, ts), point.spec)
    return count


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@asynccontextmanager
async def tile_server() -> AsyncIterator[str]:
    """A map tile server on loopback (one grey PNG for every tile); yields its URL template."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (58, 66, 82)).save(buffer, "PNG")
    tile = buffer.getvalue()
    served: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=tile, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{z}/{x}/{y}.png", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"
    finally:
        await runner.cleanup()


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


@asynccontextmanager
async def launch_chromium(**options: Any) -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (a fresh profile per launch)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **options
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _serve(port: int, directory: Path) -> None:
    async with browser_city(directory, port=port) as city:
        seed_history(city.hub, "centre/demo/tank-a/level", minutes=60)
        print(f"HMI on {city.url}/ — users admin, sue, olivia, nora, victor; password {PASSWORD!r}")
        await anyio.sleep_forever()


def main() -> None:
    """Run the small city by hand (``python -m tests.web.browser_fixtures``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cityvisor-browser-city"))
    arguments = parser.parse_args()
    shutil.rmtree(arguments.dir, ignore_errors=True)
    arguments.dir.mkdir(parents=True)
    logging.basicConfig(level=logging.WARNING)
    anyio.run(_serve, arguments.port, arguments.dir)


if __name__ == "__main__":
    main()
