"""The push to an NGSI-LD context broker, against a small NGSI-LD endpoint over a real socket.

The endpoint (an aiohttp server written here) answers
``POST /ngsi-ld/v1/entityOperations/upsert`` as a broker does: 201 with the
ids it created, 204 when it only updated, 415 without
``application/ld+json``, 400 for a body that is not an entity array; it can
be told to fail its next requests with 503 or to refuse them with 400.
The client side is cityvisor's own, run by the hub as a service.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from cityvisor.core.config import OpenDataBroker
from cityvisor.opendata.broker import BrokerClient
from cityvisor.opendata.values import LiveValues
from cityvisor.plugins.opendata import publication
from cityvisor.testing import running_hub, wait_for_point

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Brokerville"

[store]
path = "broker.sqlite"

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
location = [47.32, 5.04]
config = {{ period = 0.05, fill_rate = 100, initial_level = 50 }}

[[devices]]
id = "tank-b"
type = "demo.tank"
zone = "centre"
config = {{ period = 0.05, initial_level = 30 }}

[opendata]
enabled = true

[opendata.families.demo]
points = ["level", "valve"]

[opendata.broker]
url = "{broker}"
tenant = "city"
interval = 1
retries = 2
"""


class Endpoint:
    """A small NGSI-LD endpoint: the upsert batch operation, entities kept in memory."""

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.refuse = False
        self.received = anyio.Event()

    async def upsert(self, request: web.Request) -> web.Response:
        self.requests.append({"headers": dict(request.headers), "time": anyio.current_time()})
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"type": "InternalError", "title": "busy"}, status=503)
        if request.content_type != "application/ld+json":
            return web.json_response({"type": "UnsupportedMediaType"}, status=415)
        body = await request.json()
        if self.refuse or not isinstance(body, list):
            problem = {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"}
            return web.json_response(problem, status=400)
        created = []
        for entity in body:
            if not {"id", "type", "@context"} <= set(entity):
                return web.json_response({"type": "BadRequestData"}, status=400)
            if entity["id"] not in self.entities:
                created.append(entity["id"])
            self.entities[entity["id"]] = entity
        self.received.set()
        if created:
            return web.json_response(created, status=201)
        return web.Response(status=204)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self.upsert)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()


async def _tanks_online(hub: Any) -> None:
    for tank in ("tank-a", "tank-b"):
        await wait_for_point(hub, f"centre/demo/{tank}/level", lambda v: v.quality.is_good)


async def test_the_hub_pushes_its_entities_and_retries_a_busy_broker(tmp_path: Path):
    endpoint = Endpoint()
    endpoint.fail_next = 1
    async with (
        endpoint.serve() as url,
        running_hub(CONFIG.format(broker=url), tmp_path, builtins=True) as hub,
    ):
        with anyio.fail_after(20):
            await endpoint.received.wait()
            # The next push, a second later, comes after the first one's journal entry.
            endpoint.received = anyio.Event()
            await endpoint.received.wait()
        entries = await hub.store.query_journal(kinds=["opendata"])
    assert len(endpoint.requests) >= 2, "the 503 was retried"
    assert endpoint.requests[0]["headers"]["NGSILD-Tenant"] == "city"
    assert endpoint.requests[1]["time"] - endpoint.requests[0]["time"] >= 0.9
    level = endpoint.entities["urn:ngsi-ld:DeviceMeasurement:tank-a:level"]
    assert level["type"] == "DeviceMeasurement"
    assert level["numValue"]["type"] == "Property"
    assert level["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:tank-a"}
    assert level["location"]["type"] == "GeoProperty"
    assert "ngsi-ld-core-context" in level["@context"][-1]
    pushed = [e for e in entries if e.data.get("via") == "broker"]
    assert pushed and "urn:ngsi-ld:DeviceMeasurement:tank-a:level" in pushed[0].data["entities"]


async def test_retries_are_bounded_and_a_refusal_is_not_retried(tmp_path: Path):
    endpoint = Endpoint()
    async with endpoint.serve() as url:
        # The hub without its own push (no broker in its config): this test drives the client.
        config = CONFIG.format(broker=url).split("[opendata.broker]")[0]
        async with running_hub(config, tmp_path, builtins=True) as hub:
            await _tanks_online(hub)
            settings = OpenDataBroker(url=url, retries=2, timeout=2)
            published = publication(hub)
            client = BrokerClient(settings, published, LiveValues(hub), hub.store, first_delay=0.01)

            async with aiohttp.ClientSession() as session:
                endpoint.fail_next = 100
                result = await client.push(session)
                assert not result.ok and result.attempts == 3
                assert len(endpoint.requests) == 3 and result.failed[0].startswith("HTTP 503")
                again = await client.push(session)
                assert not again.ok and len(endpoint.requests) == 6
                endpoint.fail_next, endpoint.refuse = 0, True
                refused = await client.push(session)
                assert refused.attempts == 1 and refused.failed[0].startswith("HTTP 400")
                endpoint.refuse = False
                recovered = await client.push(session)
                assert recovered.ok and recovered.sent == len(endpoint.entities) == 4
                assert (await client.push(session)).ok  # the same entities: not journaled again
            entries = await hub.store.query_journal(kinds=["opendata"])
    broker = [e for e in entries if e.data.get("via") == "broker"]
    # Newest first: the push that worked, then one failure (not one per failed push).
    assert [("errors" in e.data) for e in broker] == [False, True]
    assert json.dumps(broker[1].data).count("503") >= 1


async def test_a_broker_nobody_listens_on_fails_without_stopping_anything(tmp_path: Path):

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = CONFIG.format(broker=url).split("[opendata.broker]")[0]
    async with running_hub(config, tmp_path, builtins=True) as hub:
        await _tanks_online(hub)
        client = BrokerClient(
            OpenDataBroker(url=url, retries=1, timeout=1),
            publication(hub),
            LiveValues(hub),
            hub.store,
            first_delay=0.01,
        )

        async with aiohttp.ClientSession() as session:
            result = await client.push(session)
        assert result.attempts == 2 and "ClientConnectorError" in result.failed[0]
        await wait_for_point(hub, "centre/demo/tank-a/level", lambda v: v.quality.is_good)
