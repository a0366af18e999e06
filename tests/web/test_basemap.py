"""The map's offline background: the GeoJSON of ``[web] basemap``, served by the hub."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from cityvisor.core.config import ConfigError, load_config
from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import find_server

from .conftest import CONFIG, Env, add_users

pytestmark = pytest.mark.anyio

OUTLINES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "Centre-ville"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[5.03, 47.32], [5.05, 47.32], [5.05, 47.33], [5.03, 47.32]]],
            },
        }
    ],
}


async def test_without_a_basemap_the_site_says_so_and_the_route_is_404(env: Env):
    client = await env.login("victor")
    status, site = await client.get("/api/v1/site")
    assert status == 200 and site["basemap"] is False
    status, body = await client.get("/api/v1/basemap")
    assert status == 404 and body["error"] == "no_basemap"


async def test_the_basemap_is_served_to_a_session_only(tmp_path: Path):
    (tmp_path / "outlines.geojson").write_text(json.dumps(OUTLINES), encoding="utf-8")
    config = CONFIG.replace("[web]\n", '[web]\nbasemap = "outlines.geojson"\n', 1)
    assert 'basemap = "outlines.geojson"' in config
    async with running_hub(config, tmp_path, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        await add_users(hub)
        environment = Env(hub, server, server.url)
        try:
            anonymous = environment.client()
            status, _ = await anonymous.get("/api/v1/basemap")
            assert status == 401
            client = await environment.login("victor")
            status, site = await client.get("/api/v1/site")
            assert site["basemap"] is True
            status, body = await client.get("/api/v1/basemap")
            assert status == 200 and body == OUTLINES
        finally:
            for session in environment.sessions:
                await session.close()


def test_a_basemap_that_is_not_there_is_a_config_error_naming_the_key(tmp_path: Path):
    path = tmp_path / "city.toml"
    path.write_text('[site]\nname = "T"\n\n[web]\nbasemap = "missing.geojson"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem == f"{path}: web.basemap: no GeoJSON file at {tmp_path / 'missing.geojson'}"
