"""Nothing personal or secret in any export: the demo city, with its cameras and badge readers.

The small demo city runs in this process (real simulators: Modbus lighting
and bollards, ONVIF cameras, SNMP switches, OSDP readers on ptys) with the
deployment file the demo writes, which publishes open data. Badges are
presented at its doors and its cameras come online, so the hub holds badge
numbers, stream addresses and hosts; then every file of ``/opendata/`` and
of ``cityvisor export`` is searched for them.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import anyio
import pytest

from cityvisor.cli import main
from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.demo import tomlfile
from cityvisor.demo.city import (
    BADGES,
    CAMERA_PASSWORD,
    CAMERA_USER,
    DOORS,
    SMALL,
    SWITCH_WRITE_COMMUNITY,
    UNKNOWN_BADGES,
    SimulatedCity,
)
from cityvisor.testing import wait_for_point
from cityvisor.web import find_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _get_everything(url: str, datasets: list[str]) -> dict[str, str]:
    bodies: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        paths = ["/opendata/", "/opendata/catalog.jsonld"]
        for name in datasets:
            for file in (
                "entities.jsonld",
                "entities.jsonld?options=keyValues",
                "features.geojson",
                "entities.csv",
                "history.csv",
                "aggregates.csv",
            ):
                paths.append(f"/opendata/{name}/{file}")
        for path in paths:
            async with http.get(url + path) as response:
                assert response.status == 200, (path, await response.text())
                bodies[path] = await response.text()
    return bodies


async def test_no_export_holds_a_badge_a_name_a_camera_a_host_or_a_password(tmp_path: Path):
    city = SimulatedCity(size=SMALL, seed=3, web_port=0)
    async with AsyncExitStack() as simulators:
        await city.start(simulators)
        config_path = tmp_path / "demo-city.toml"
        config_path.write_text(tomlfile.dumps(city.config("demo.sqlite")), encoding="utf-8")
        config = load_config(config_path)
        assert config.opendata.enabled
        hub = Hub(config, make_plugin_manager(entry_points=False))
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            try:
                server = find_server(hub)
                assert server is not None
                await server.ready.wait()
                # The hub now holds what must never be published: badges presented...
                presented = [BADGES[0].number, UNKNOWN_BADGES[0]]
                badge_points = [p for p in hub.points.points("**") if p.spec.name == "last_badge"]
                assert badge_points, "the demo city has badge readers"
                for reader, number in zip(city.readers, presented, strict=False):
                    door = hub.devices[reader.device_id].point("door_open")
                    await wait_for_point(hub, door.id, lambda v: v.quality.is_good, 40)
                    reader.reader.present_card(number)
                for point in badge_points:
                    await wait_for_point(hub, point.id, lambda v: bool(v.value), 20)
                pseudonyms = [str(p.current.value) for p in badge_points]
                # ... and camera stream addresses (with the cameras' host and port).
                streams = [p for p in hub.points.points("**") if p.spec.name == "stream_uri"]
                for point in streams:
                    await wait_for_point(hub, point.id, lambda v: bool(v.value), 40)
                bodies = await _get_everything(server.url, list(hub.config.opendata.families))
                await hub.store.flush_history()
                out = tmp_path / "export"
                status = await anyio.to_thread.run_sync(
                    main, ["export", "-c", str(config_path), "-o", str(out)]
                )
                assert status == 0
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        bodies[f"export:{path.relative_to(out)}"] = path.read_text("utf-8")
                stream_addresses = [str(p.current.value) for p in streams]
            finally:
                tg.cancel_scope.cancel()

    # What was published is there: lamps and bollards, with values.
    everything = "\n".join(bodies.values())
    assert "urn:ngsi-ld:StreetLight:" in bodies["/opendata/lighting/entities.jsonld"]
    assert "urn:ngsi-ld:Device:borne-" in bodies["/opendata/bollards/entities.jsonld"]
    assert "export:lighting/entities.jsonld" in bodies
    assert "export:catalog.jsonld" in bodies
    # What must never be: anything personal, any camera, any host or secret.
    forbidden = {
        *(badge.number for badge in BADGES),
        *UNKNOWN_BADGES,
        *(badge.holder.split(" (")[0] for badge in BADGES),
        *city.cameras,
        *(camera.name for camera in city.cameras.values()),
        *(f"porte-{door.building}" for door in DOORS),
        *city.switches,
        *stream_addresses,
        *pseudonyms,
        CAMERA_USER,
        CAMERA_PASSWORD,
        SWITCH_WRITE_COMMUNITY,
        "127.0.0.1",
        "localhost",
        "rtsp://",
        '"host"',
        "password",
        "last_badge",
        "stream_uri",
    }
    found = {text: [name for name, body in bodies.items() if text in body] for text in forbidden}
    leaks = {text: where for text, where in found.items() if where}
    assert not leaks, f"published what must not be: {leaks}"
    assert "badge" not in everything.lower()
    assert "camera" not in everything.lower()
