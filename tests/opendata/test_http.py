"""``GET /opendata/...`` through the real web server, with real simulators behind the hub.

Lighting cabinets and bollards over Modbus/TCP, the example flood gauge
(``examples/flood-sensor``) over Modbus/TCP, and demo tanks: their exports
are validated against the Smart Data Models schemas (transcribed under
``schemas/``), read as GeoJSON, CSV and JSON-LD, and the routes' caching,
rate limit, errors and journal are checked from an HTTP client.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jsonschema
import pytest
import referencing
from pyld import jsonld

from cityvisor.core.hookspecs import PUBLIC_ROUTE
from cityvisor.core.points import PointValue, Quality, now_ms
from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.testing import free_tcp_port, running_hub, wait_for_point
from cityvisor.web import find_server
from cityvisor.web.openapi import document
from cityvisor.web.routing import PUBLIC

ROOT = Path(__file__).resolve().parents[2]


def _example_plugin() -> tuple[Any, Any]:
    """The example flood plugin and its simulator, imported from the source tree.

    Its directory is on ``sys.path`` only while importing: an installed copy's
    metadata there would otherwise show as an entry point to every other test.
    """
    source = str(ROOT / "examples" / "flood-sensor" / "src")
    sys.path.insert(0, source)
    try:
        plugin = importlib.import_module("cityvisor_flood")
        simulator = importlib.import_module("cityvisor_flood.simulator")
    finally:
        sys.path.remove(source)
    return plugin, simulator.FloodGaugeSimulator


cityvisor_flood, FloodGaugeSimulator = _example_plugin()

pytestmark = pytest.mark.anyio

SCHEMAS = Path(__file__).with_name("schemas")
TYPES = ("StreetLight", "StreetlightControlCabinet", "WaterObserved", "Device", "DeviceMeasurement")
HOUR = 3_600_000

CONFIG = """
[site]
name = "Opendataville"
latitude = 47.32
longitude = 5.04

[store]
path = "opendata.sqlite"
flush_interval = 0.05

[web]
host = "127.0.0.1"
port = 0

[[zones]]
id = "centre"
name = "Centre"

[[zones]]
id = "nord"
name = "Nord"

[[devices]]
id = "cab-1"
type = "lighting.cabinet"
zone = "centre"
name = "Armoire Darcy"
location = [47.3225, 5.0410]
config = {{ host = "127.0.0.1", port = {lighting}, unit = 1, circuits = 2, period = 0.1 }}

[[devices]]
id = "cab-2"
type = "lighting.cabinet"
zone = "nord"
location = [47.3400, 5.0300]
config = {{ host = "127.0.0.1", port = {lighting}, unit = 2, circuits = 2, period = 0.1 }}

{bollards}

[[devices]]
id = "underpass-1"
type = "flood.gauge"
zone = "nord"
location = [47.3390, 5.0350]
config = {{ host = "127.0.0.1", port = {gauge}, unit = 1, period = 0.1, vigilance_level = 1.0, danger_level = 1.5 }}

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
location = [47.3200, 5.0400]
config = {{ period = 0.05, fill_rate = 100, initial_level = 50 }}

[opendata]
enabled = true
licence = "odbl-1.0"
contact = "opendata@example.org"
minimum_group = 2
rate_limit = {rate_limit}
cache_seconds = 1

[opendata.families.lighting]
points = ["on", "level", "lamp_failures", "energy"]
title = {{ fr = "Éclairage public", en = "Street lighting" }}

[opendata.families.bollards.aggregate.vehicle_on_loop]
bucket = 3600
by = "zone"
minimum_group = 2

[opendata.families.flood]
update_frequency = "hourly"

[opendata.families.demo]
points = ["level", "valve"]
"""

BOLLARD = """
[[devices]]
id = "borne-{unit}"
type = "bollards.bollard"
zone = "{zone}"
location = [47.321, 5.04{unit}]
config = {{ host = "127.0.0.1", port = {port}, unit = {unit}, period = 0.1 }}
"""


@asynccontextmanager
async def city(tmp_path: Path, *, rate_limit: int = 10_000) -> AsyncIterator[tuple[Any, str]]:
    """A running hub serving open data, its simulators, and its web server's URL."""
    async with AsyncExitStack() as stack:
        lighting = await stack.enter_async_context(LightingSimulator(cabinets=2, circuits=2))
        bollards = await stack.enter_async_context(BollardSimulator(bollards=3, initial="up"))
        gauge = await stack.enter_async_context(FloodGaugeSimulator(level=0.42))
        zones = {1: "centre", 2: "centre", 3: "nord"}
        config = CONFIG.format(
            lighting=lighting.port,
            gauge=gauge.port,
            rate_limit=rate_limit,
            bollards="".join(
                BOLLARD.format(unit=unit, zone=zone, port=bollards.port)
                for unit, zone in zones.items()
            ),
        )
        hub = await stack.enter_async_context(
            running_hub(config, tmp_path, plugins=[cityvisor_flood], builtins=True)
        )
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        for point in (
            "centre/lighting/cab-1/c1/lamp_failures",
            "nord/lighting/cab-2/c2/lamp_failures",
            "centre/bollards/borne-1/position",
            "nord/flood/underpass-1/level",
            "centre/demo/tank-a/level",
        ):
            await wait_for_point(hub, point, lambda v: v.quality.is_good, 20)
        yield hub, server.url


def validator_for(entity_type: str) -> jsonschema.protocols.Validator:
    """A validator of one Smart Data Model, with the common definitions resolvable offline."""
    documents = {path.stem: json.loads(path.read_text("utf-8")) for path in SCHEMAS.glob("*.json")}
    registry = referencing.Registry().with_resources(
        (doc["$id"], referencing.Resource.from_contents(doc, referencing.jsonschema.DRAFT7))
        for doc in documents.values()
    )
    schema = documents[entity_type]
    return jsonschema.Draft7Validator(
        schema, registry=registry, format_checker=jsonschema.FormatChecker()
    )


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    async with http.get(url, **kwargs) as response:
        body = await response.read()
        return response.status, response.headers, body


async def test_the_ngsi_ld_export_follows_the_smart_data_models(tmp_path: Path):
    async with city(tmp_path) as (hub, url), aiohttp.ClientSession() as http:
        seen: dict[str, list[dict[str, Any]]] = {}
        for dataset in ("lighting", "bollards", "flood", "demo"):
            status, headers, body = await get(
                http, f"{url}/opendata/{dataset}/entities.jsonld?options=keyValues"
            )
            assert status == 200, body
            assert headers["Content-Type"].startswith("application/ld+json")
            for entity in json.loads(body):
                seen.setdefault(entity["type"], []).append(entity)
        assert set(seen) == set(TYPES)
        for entity_type, entities in seen.items():
            validator = validator_for(entity_type)
            for entity in entities:
                errors = [e.message for e in validator.iter_errors(entity)]
                assert not errors, (entity, errors)
        lamps = {e["id"]: e for e in seen["StreetLight"]}
        assert set(lamps) == {
            f"urn:ngsi-ld:StreetLight:cab-{n}:c{c}" for n in (1, 2) for c in (1, 2)
        }
        lamp = lamps["urn:ngsi-ld:StreetLight:cab-1:c1"]
        assert lamp["refStreetlightControlCabinet"] == "urn:ngsi-ld:StreetlightControlCabinet:cab-1"
        assert lamp["status"] == "ok" and lamp["circuit"] == "c1"
        assert lamp["location"] == {"type": "Point", "coordinates": [5.041, 47.3225]}
        level = hub.points.value("centre/lighting/cab-1/c1/level").value
        assert lamp["illuminanceLevel"] == pytest.approx(level / 100)
        (water,) = seen["WaterObserved"]
        assert water["height"] == pytest.approx(0.42) and "dateObserved" in water
        bollards = {e["id"]: e for e in seen["Device"]}
        assert bollards["urn:ngsi-ld:Device:borne-1"]["deviceState"] == "up"
        assert all("vehicle" not in json.dumps(e) for e in bollards.values())
        measurements = {e["controlledProperty"]: e for e in seen["DeviceMeasurement"]}
        assert {"energy", "level", "valve"} <= set(measurements)
        assert measurements["valve"]["textValue"] in ("closed", "filling", "draining")

        # The normalized form: every attribute a Property, GeoProperty or Relationship.
        status, _, body = await get(http, f"{url}/opendata/lighting/entities.jsonld")
        for entity in json.loads(body):
            assert entity["@context"][-1] == (
                "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
            )
            for name, attribute in entity.items():
                if name in ("id", "type", "@context"):
                    continue
                assert attribute["type"] in ("Property", "GeoProperty", "Relationship"), name
                if attribute["type"] == "Relationship":
                    assert attribute["object"].startswith("urn:ngsi-ld:")
            if entity["type"] == "StreetLight":
                assert entity["powerState"]["observedAt"].endswith("Z")
                assert entity["illuminanceLevel"]["unitCode"] == "C62"


async def test_geojson_and_csv_hold_the_same_entities(tmp_path: Path):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        _, _, body = await get(http, f"{url}/opendata/lighting/entities.jsonld?options=keyValues")
        entities = {e["id"]: e for e in json.loads(body)}
        status, headers, body = await get(http, f"{url}/opendata/lighting/features.geojson")
        assert status == 200 and headers["Content-Type"].startswith("application/geo+json")
        collection = json.loads(body)
        assert collection["type"] == "FeatureCollection"
        assert {f["id"] for f in collection["features"]} == set(entities)
        for feature in collection["features"]:
            assert feature["geometry"]["type"] == "Point"
            lon, lat = feature["geometry"]["coordinates"]
            assert 47 < lat < 48 and 5 < lon < 6
        status, headers, body = await get(http, f"{url}/opendata/lighting/entities.csv")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
        assert rows and {r["entity_id"] for r in rows} <= set(entities)
        by_attribute = {(r["entity_id"], r["attribute"]): r for r in rows}
        lamp = by_attribute[("urn:ngsi-ld:StreetLight:cab-1:c1", "powerState")]
        assert lamp["value"] in ("on", "off") and lamp["latitude"] == "47.3225"


async def test_answers_are_cacheable_and_conditional_requests_get_304(tmp_path: Path):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        status, headers, _body = await get(http, f"{url}/opendata/flood/entities.csv")
        assert status == 200
        etag, modified = headers["ETag"], headers["Last-Modified"]
        assert headers["Cache-Control"] == "public, max-age=1"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert etag.startswith('"') and modified.endswith("GMT")
        status, again, empty = await get(
            http, f"{url}/opendata/flood/entities.csv", headers={"If-None-Match": etag}
        )
        assert status == 304 and empty == b"" and again["ETag"] == etag
        status, _, _ = await get(
            http, f"{url}/opendata/flood/entities.csv", headers={"If-Modified-Since": modified}
        )
        assert status == 304
        status, _, _ = await get(
            http, f"{url}/opendata/flood/entities.csv", headers={"If-None-Match": '"other"'}
        )
        assert status == 200


async def test_open_data_needs_no_session_and_the_operator_api_still_does(tmp_path: Path):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        status, _, body = await get(http, f"{url}/opendata/")
        assert status == 200
        index = json.loads(body)
        assert set(index["datasets"]) == {"lighting", "bollards", "flood", "demo"}
        assert not http.cookie_jar.filter_cookies(url)
        status, _, _ = await get(http, f"{url}/api/v1/devices")
        assert status == 401
        # Read-only: the web server refuses any other method without a session before routing.
        async with http.post(f"{url}/opendata/lighting/entities.csv") as response:
            assert response.status == 401


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/opendata/cameras/entities.csv", 404, "unknown_dataset"),
        ("/opendata/access/entities.jsonld", 404, "unknown_dataset"),
        ("/opendata/lighting/secrets.txt", 404, "unknown_file"),
        ("/opendata/lighting/entities.csv?limit=3", 400, "unknown_parameter"),
        ("/opendata/lighting/entities.jsonld?options=sysAttrs", 400, "bad_parameter"),
        ("/opendata/lighting/history.csv?start=yesterday", 400, "bad_parameter"),
        ("/opendata/lighting/history.csv?start=2000&end=1000", 400, "bad_range"),
        ("/opendata/lighting/history.csv?start=0", 400, "range_too_long"),
        ("/opendata/lighting/history.csv?bucket=abc", 400, "bad_parameter"),
        ("/opendata/lighting/history.csv?bucket=1", 400, "bad_parameter"),
        ("/opendata/bollards/aggregates.csv?bucket=60", 400, "unknown_parameter"),
    ],
)
async def test_a_bad_request_gets_a_4xx_that_says_why(
    tmp_path: Path, path: str, status: int, code: str
):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        answer, _, body = await get(http, url + path)
        assert answer == status, body
        error = json.loads(body)
        assert error["error"] == code and error["message"]


async def test_a_client_past_its_rate_gets_429_with_retry_after(tmp_path: Path):
    async with city(tmp_path, rate_limit=5) as (_hub, url), aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(8):
            status, headers, body = await get(http, f"{url}/opendata/lighting/entities.csv")
            statuses.append(status)
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429] * 3
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["error"] == "too_many_requests"
        # Bad requests count too: the limit is per address, not per answer.
        status, _, _ = await get(http, f"{url}/opendata/nothing/entities.csv")
        assert status == 429


def _offline_loader(url: str, options: Any = None) -> Any:
    raise jsonld.JsonLdError(
        f"refused to fetch {url}: the test runs offline", "loading document failed"
    )


async def test_the_dcat_ap_catalogue_is_json_ld_with_licence_frequency_and_coverage(
    tmp_path: Path,
):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        status, headers, body = await get(http, f"{url}/opendata/catalog.jsonld")
        assert status == 200 and headers["Content-Type"].startswith("application/ld+json")
    document = json.loads(body)
    expanded = jsonld.expand(
        document, {"base": f"{url}/opendata/catalog.jsonld", "documentLoader": _offline_loader}
    )
    dcat, dct = "http://www.w3.org/ns/dcat#", "http://purl.org/dc/terms/"
    (catalog,) = [n for n in expanded if f"{dcat}Catalog" in n["@type"]]
    datasets = catalog[f"{dcat}dataset"]
    assert {d[f"{dct}identifier"][0]["@value"] for d in datasets} == {
        "lighting",
        "bollards",
        "flood",
        "demo",
    }
    licence = "https://opendatacommons.org/licenses/odbl/1-0/"
    assert catalog[f"{dct}license"][0]["@id"] == licence
    by_name = {d[f"{dct}identifier"][0]["@value"]: d for d in datasets}
    flood = by_name["flood"]
    assert flood[f"{dct}license"][0]["@id"] == licence
    assert flood[f"{dct}accrualPeriodicity"][0]["@id"].endswith("/frequency/HOURLY")
    assert by_name["lighting"][f"{dct}accrualPeriodicity"][0]["@id"].endswith("/frequency/CONT")
    (bbox,) = flood[f"{dct}spatial"][0][f"{dcat}bbox"]
    assert bbox["@value"].startswith("POLYGON((5.035 47.339")
    titles = {t["@language"]: t["@value"] for t in by_name["lighting"][f"{dct}title"]}
    assert titles == {"fr": "Éclairage public", "en": "Street lighting"}
    contact = flood[f"{dcat}contactPoint"][0]
    assert contact["http://www.w3.org/2006/vcard/ns#hasEmail"][0]["@id"] == (
        "mailto:opendata@example.org"
    )
    distributions = {
        d[f"{dcat}accessURL"][0]["@id"] for d in by_name["bollards"][f"{dcat}distribution"]
    }
    assert f"{url}/opendata/bollards/aggregates.csv" in distributions
    assert f"{url}/opendata/flood/aggregates.csv" not in {
        d[f"{dcat}accessURL"][0]["@id"] for d in flood[f"{dcat}distribution"]
    }


def _record(hub: Any, point_id: str, values: list[tuple[int, Any]]) -> None:
    spec = hub.points.get(point_id).spec
    for ts, value in values:
        hub.store.record(PointValue(point_id, value, Quality.GOOD, ts, ts), spec)


async def test_aggregates_publish_whole_past_buckets_of_large_groups_only(tmp_path: Path):
    async with city(tmp_path) as (hub, url), aiohttp.ClientSession() as http:
        start = now_ms() - now_ms() % HOUR - 3 * HOUR
        minute = 60_000
        # Two bollards in the centre: three vehicles in the first hour, one in the second.
        _record(
            hub,
            "centre/bollards/borne-1/vehicle_on_loop",
            [(start + minute, True), (start + 2 * minute, False), (start + 9 * minute, True)],
        )
        _record(
            hub,
            "centre/bollards/borne-2/vehicle_on_loop",
            [
                (start + 5 * minute, False),
                (start + 6 * minute, True),
                (start + 30 * minute, False),
                (start + HOUR + 1, True),
            ],
        )
        # The only bollard of the north: alone in its group, never published.
        _record(hub, "nord/bollards/borne-3/vehicle_on_loop", [(start + minute, True)])
        # And one in the hour still running: not complete, not published.
        _record(hub, "centre/bollards/borne-1/vehicle_on_loop", [(now_ms() - 1, False)])
        await hub.store.flush_history()
        status, _, body = await get(
            http, f"{url}/opendata/bollards/aggregates.csv?start={start}&end={now_ms()}"
        )
        assert status == 200, body
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
    assert {r["group"] for r in rows} == {"centre"}
    assert all(r["devices"] == "2" and r["statistic"] == "count" for r in rows)
    counts = [(r["start"], float(r["value"])) for r in rows]
    assert [count for _, count in counts] == [3.0, 1.0, 0.0]
    assert len(counts) == 3, "the hour still running is left out"


async def test_history_gives_each_published_point_per_bucket(tmp_path: Path):
    async with city(tmp_path) as (hub, url), aiohttp.ClientSession() as http:
        start = now_ms() - now_ms() % HOUR - 2 * HOUR
        _record(
            hub,
            "centre/lighting/cab-1/c2/energy",
            [(start + 1000, 10.0), (start + 2000, 12.0), (start + HOUR + 5, 20.0)],
        )
        await hub.store.flush_history()
        status, _, body = await get(
            http,
            f"{url}/opendata/lighting/history.csv?start={start}&end={start + 2 * HOUR}&bucket=3600",
        )
        assert status == 200, body
    rows = [
        r
        for r in csv.DictReader(io.StringIO(body.decode("utf-8")))
        if r["entity_id"] == "urn:ngsi-ld:DeviceMeasurement:cab-1:c2:energy"
    ]
    assert [(r["count"], r["minimum"], r["maximum"], r["last"]) for r in rows] == [
        ("2", "10.0", "12.0", "12.0"),
        ("1", "20.0", "20.0", "20.0"),
    ]


async def test_what_is_published_is_journaled_once_per_shape(tmp_path: Path):
    async with city(tmp_path) as (hub, url), aiohttp.ClientSession() as http:
        for _ in range(3):
            status, _, _ = await get(http, f"{url}/opendata/demo/entities.csv")
            assert status == 200
        entries = await hub.store.query_journal(kinds=["opendata"])
    startup = [e for e in entries if e.data.get("via") == "startup"]
    assert len(startup) == 1
    assert set(startup[0].data["datasets"]) == {"lighting", "bollards", "flood", "demo"}
    assert startup[0].data["datasets"]["bollards"]["aggregates"] == ["vehicle_on_loop"]
    assert "vehicle_on_loop" not in startup[0].data["datasets"]["bollards"]["points"]
    served = [e for e in entries if e.data.get("via") == "http"]
    assert len(served) == 1, "the same entities and attributes are journaled once"
    assert served[0].data["dataset"] == "demo" and served[0].data["file"] == "entities.csv"
    published = {entity for entity, _ in served[0].data["published"]["entities"]}
    assert "urn:ngsi-ld:DeviceMeasurement:tank-a:level" in published


async def test_the_openapi_document_says_open_data_needs_no_session(tmp_path: Path):
    assert PUBLIC_ROUTE == PUBLIC, "hookspecs.public must mark what the web server calls public"
    async with city(tmp_path) as (hub, url), aiohttp.ClientSession() as http:
        status, _, _ = await get(http, f"{url}/opendata/")
        assert status == 200
        server = find_server(hub)
        assert server is not None and server.app is not None
        paths = document(server.app, [])["paths"]
    operation = paths["/opendata/{dataset}/{file}"]["get"]
    assert operation["security"] == [] and "401" not in operation["responses"]
    assert operation["summary"] == "One file of one dataset."


async def test_a_history_request_may_not_span_too_many_buckets(tmp_path: Path):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        end = now_ms()
        query = f"start={end - 30 * 86_400_000}&end={end}&bucket=60"
        status, _, body = await get(http, f"{url}/opendata/lighting/history.csv?{query}")
        assert status == 400 and json.loads(body)["error"] == "too_many_buckets"
        query = f"start={end - 30 * 86_400_000}&end={end}&bucket=86400"
        status, _, body = await get(http, f"{url}/opendata/lighting/history.csv?{query}")
        assert status == 200, body


async def test_the_catalogue_keeps_its_etag_from_one_rendering_to_the_next(tmp_path: Path):
    async with city(tmp_path) as (_hub, url), aiohttp.ClientSession() as http:
        _, first, _ = await get(http, f"{url}/opendata/catalog.jsonld")
        await anyio.sleep(1.1)  # cache_seconds = 1: the next answer is a new rendering
        status, _, _ = await get(
            http, f"{url}/opendata/catalog.jsonld", headers={"If-None-Match": first["ETag"]}
        )
        assert status == 304


async def test_without_enabled_nothing_is_served_nor_journaled(tmp_path: Path):
    config = """
[site]
name = "Closedville"

[store]
path = "closed.sqlite"

[web]
port = 0

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"

[opendata.families.demo]
points = ["level"]
"""
    async with running_hub(config, tmp_path, builtins=True) as hub:
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        async with aiohttp.ClientSession() as http:
            for path in ("/opendata/", "/opendata/demo/entities.csv", "/opendata/catalog.jsonld"):
                status, _, _ = await get(http, server.url + path)
                assert status == 401, path  # no such public route: an anonymous request
        assert await hub.store.query_journal(kinds=["opendata"]) == []


async def test_a_cabinet_that_stops_answering_is_never_published_stale(tmp_path: Path):
    config = """
[site]
name = "Darkville"

[store]
path = "dark.sqlite"

[web]
port = 0

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "cab-1"
type = "lighting.cabinet"
zone = "centre"
location = [47.32, 5.04]
config = {{ host = "127.0.0.1", port = {port}, unit = 1, circuits = 1, period = 0.2 }}

[opendata]
enabled = true
cache_seconds = 0
"""
    port = free_tcp_port()
    point = "centre/lighting/cab-1/c1/lamp_failures"
    async with (
        running_hub(config.format(port=port), tmp_path, builtins=True) as hub,
        aiohttp.ClientSession() as http,
    ):
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        address = f"{server.url}/opendata/lighting/entities.jsonld?options=keyValues"
        async with LightingSimulator(port=port, cabinets=1, circuits=1):
            await wait_for_point(hub, point, lambda v: v.quality.is_good, 20)
            _, _, body = await get(http, address)
            assert "urn:ngsi-ld:StreetLight:cab-1:c1" in {e["id"] for e in json.loads(body)}
        # The cabinet went away.
        await wait_for_point(hub, point, lambda v: v.quality.is_bad, 20)
        status, _, body = await get(http, address)
    assert status == 200
    entities = json.loads(body)
    # The cabinet is still there (its place and name); its circuit, without a status, is not.
    assert [e["id"] for e in entities] == ["urn:ngsi-ld:StreetlightControlCabinet:cab-1"]
