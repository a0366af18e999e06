"""Positions from a Traccar server's API: a small Traccar of our own over a real socket."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from cityvisor.plugins import demo
from cityvisor.plugins import ops as ops_plugin
from cityvisor.testing import running_hub

pytestmark = pytest.mark.anyio

TOKEN = "traccar-api-token-0123"
FIX_TIME_MS = int(dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC).timestamp() * 1000)


class FakeTraccar:
    """``/api/devices`` and ``/api/positions`` as Traccar answers them; ``mode`` misbehaves."""

    def __init__(self) -> None:
        self.mode = "good"
        self.requests = 0
        self.latitude = 47.3300

    async def devices(self, request: web.Request) -> web.Response:
        return self._answer(
            request,
            [
                {"id": 1, "name": "Van 1", "uniqueId": "van-1", "status": "online"},
                {"id": 2, "name": "Stranger", "uniqueId": "not-a-crew"},
            ],
        )

    async def positions(self, request: web.Request) -> web.Response:
        return self._answer(
            request,
            [
                {
                    "id": 10,
                    "deviceId": 1,
                    "protocol": "osmand",
                    "fixTime": "2026-12-02T10:00:00.000+00:00",
                    "valid": True,
                    "latitude": self.latitude,
                    "longitude": 5.0410,
                    "speed": 20.0,
                },
                {"id": 11, "deviceId": 2, "latitude": 1.0, "longitude": 1.0, "fixTime": "x"},
                {"id": 12, "deviceId": 1, "latitude": "north"},
            ],
        )

    def _answer(self, request: web.Request, body: Any) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.mode == "down":
            return web.Response(status=503, text="maintenance")
        if self.mode == "nonsense":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        return web.Response(text=json.dumps(body), content_type="application/json")


@asynccontextmanager
async def fake_traccar() -> AsyncIterator[tuple[FakeTraccar, str]]:
    server = FakeTraccar()
    app = web.Application()
    app.router.add_get("/api/devices", server.devices)
    app.router.add_get("/api/positions", server.positions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


CONFIG = """
[site]
name = "Traccar city"

[store]
path = "traccar.sqlite"

[[zones]]
id = "centre"
name = "Centre"

[plugins.ops]
enabled = true

[plugins.ops.trackers]
port = 0

[plugins.ops.traccar]
url = "{url}"
token = "{token}"
interval = 1

[[plugins.ops.crews]]
id = "water"
name = "Water"
skills = ["demo"]
tracker = "van-1"
token = "token-of-van-one-0123"
"""


async def wait_until(predicate: Any, seconds: float = 10) -> None:
    """Poll ``predicate`` (state of the poller, which has no event to wait on) until true."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not true after {seconds} s")


async def test_positions_come_from_the_traccar_api_and_a_failing_server_changes_nothing(
    tmp_path: Path,
):
    async with fake_traccar() as (traccar, url):
        config = CONFIG.format(url=url, token=TOKEN)
        async with running_hub(config, tmp_path, plugins=[demo, ops_plugin]) as hub:
            ops = ops_plugin.operations(hub)
            assert ops is not None
            with anyio.fail_after(10):
                await ops.ready.wait()
            crew = ops.fleet.crews["water"]
            await wait_until(lambda: crew.position is not None)
            assert crew.position.lat == pytest.approx(47.33)
            assert crew.position.speed == pytest.approx(20 * 1852 / 3600)
            assert crew.position.ts == FIX_TIME_MS

            traccar.mode = "down"
            failures = ops.traccar.failures
            await wait_until(lambda: ops.traccar.failures > failures)
            assert "503" in ops.traccar.last_error
            traccar.mode = "nonsense"
            failures = ops.traccar.failures
            await wait_until(lambda: ops.traccar.failures > failures, 20)
            assert crew.position.lat == pytest.approx(47.33)  # the last good one is kept

            traccar.mode, traccar.latitude = "good", 47.34
            await wait_until(lambda: crew.position.lat == pytest.approx(47.34), 70)
