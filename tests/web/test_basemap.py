"""The map's offline background: the GeoJSON of ``[web] basemap``, served by the hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityvisor.core.config import ConfigError, load_config

from .conftest import CONFIG, Env, running_env

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
    async with running_env(config, tmp_path) as environment:
        anonymous = environment.client()
        status, _ = await anonymous.get("/api/v1/basemap")
        assert status == 401
        client = await environment.login("victor")
        status, site = await client.get("/api/v1/site")
        assert site["basemap"] is True
        status, body = await client.get("/api/v1/basemap")
        assert status == 200 and body == OUTLINES


def test_a_basemap_that_is_not_there_is_a_config_error_naming_the_key(tmp_path: Path):
    path = tmp_path / "city.toml"
    path.write_text('[site]\nname = "T"\n\n[web]\nbasemap = "missing.geojson"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem == f"{path}: web.basemap: no GeoJSON file at {tmp_path / 'missing.geojson'}"
