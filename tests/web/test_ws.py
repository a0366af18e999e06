"""The WebSocket: subscriptions, snapshots, batched changes, alarm events, slow clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest

from cityvisor.core.points import DataType, PointSpec
from cityvisor.testing import wait_for_point

from .conftest import Client, Env, small_receive_buffer

pytestmark = pytest.mark.anyio

LEVEL = "centre/demo/tank-a/level"


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Any, timeout: float = 10.0
) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            message = await receive(ws, timeout)
            if predicate(message):
                return message


async def connect(client: Client) -> aiohttp.ClientWebSocketResponse:
    ws = await client.http.ws_connect(client.base + "/api/v1/ws", headers={"Origin": client.base})
    hello = await receive(ws)
    assert hello["type"] == "hello"
    return ws


async def test_subscribe_snapshot_then_batched_changes(env: Env):
    client = await env.login("olivia")
    ws = await connect(client)
    await ws.send_json({"type": "subscribe", "points": ["centre/demo/tank-a/*"]})
    subscribed = await receive(ws)
    assert subscribed == {
        "type": "subscribed",
        "sub": 1,
        "points": ["centre/demo/tank-a/*"],
        "alarms": False,
    }
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot" and snapshot["sub"] == 1
    assert LEVEL in {p["id"] for p in snapshot["points"]}
    assert not any(p["id"].startswith("nord/") for p in snapshot["points"])
    await client.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 90}})
    seen: list[float] = []
    while not seen or seen[-1] < 90:
        message = await receive_until(ws, lambda m: m["type"] == "changes")
        assert all(p["id"].startswith("centre/demo/tank-a/") for p in message["points"])
        seen += [p["value"] for p in message["points"] if p["id"] == LEVEL]
    assert seen == sorted(seen) and seen[-1] == 90
    await ws.send_json({"type": "subscribe", "points": []})
    assert (await receive_until(ws, lambda m: m["type"] == "subscribed"))["points"] == []
    await ws.close()


async def test_alarm_events_arrive_with_who_did_what(env: Env):
    client = await env.login("olivia")
    ws = await connect(client)
    await ws.send_json({"type": "subscribe", "alarms": True})
    assert (await receive(ws))["alarms"] is True
    first = await receive(ws)
    assert first["type"] == "alarms" and first["lost"] == 0 and "counts" in first
    await client.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 99}})
    raised = await receive_until(
        ws, lambda m: m["type"] == "alarm" and m["event"]["alarm"] == "tank-a:high_water"
    )
    assert raised["event"]["kind"] == "raised" and raised["alarm"]["state"] == "unack_active"
    assert raised["counts"]["high"]["unacked"] >= 1
    await client.post("/api/v1/alarms/tank-a:high_water/ack", {"comment": "seen"})
    acked = await receive_until(
        ws, lambda m: m["type"] == "alarm" and m["event"]["kind"] == "acknowledged"
    )
    assert acked["event"]["user"] == "olivia" and acked["event"]["comment"] == "seen"
    await ws.close()


async def test_the_websocket_needs_a_session_and_our_origin(env: Env):
    anonymous = env.client()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await anonymous.http.ws_connect(env.url + "/api/v1/ws", headers={"Origin": env.url})
    assert refused.value.status == 401
    client = await env.login("victor")
    with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
        await client.http.ws_connect(
            env.url + "/api/v1/ws", headers={"Origin": "http://evil.example"}
        )
    assert foreign.value.status == 403


async def test_bad_messages_get_errors_and_ping_a_pong(env: Env):
    client = await env.login("victor")
    ws = await connect(client)
    await ws.send_str("not json")
    assert (await receive(ws))["error"] == "bad_json"
    await ws.send_json({"type": "dance"})
    assert (await receive(ws))["error"] == "unknown_type"
    await ws.send_json({"type": "subscribe", "points": "centre/**", "alarms": "yes"})
    error = await receive(ws)
    assert error["error"] == "invalid_request" and "alarms must be" in error["message"]
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    await ws.close()


async def test_the_websocket_closes_when_the_session_ends(env: Env):
    env.state.sessions.recheck = 0.2
    client = await env.login("victor")
    ws = await connect(client)
    await client.delete("/api/v1/session")
    ended = await receive(ws)
    assert ended["type"] == "session_ended"
    with anyio.fail_after(10):
        message = await ws.receive()
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401


@asynccontextmanager
async def heavy_traffic(env: Env, points: int = 200, size: int = 500) -> AsyncIterator[str]:
    """Register ``points`` text points and change them all every 20 ms (about 5 MB/s)."""
    hub = env.hub
    ids = [f"centre/bulk/box/p{i}" for i in range(points)]
    for point_id in ids:
        spec = PointSpec(name=point_id.rsplit("/", 1)[1], dtype=DataType.STR, history="none")
        hub.points.register(point_id, spec, device_id="box", zone="centre", family="bulk")

    async def produce() -> None:
        counter = 0
        while True:
            counter += 1
            filler = f"{counter:08d}" + "x" * size
            for point_id in ids:
                hub.points.update(point_id, filler)
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        try:
            yield "centre/bulk/**"
        finally:
            tg.cancel_scope.cancel()


async def slow_client(env: Env, name: str) -> Client:
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))
    env.sessions.append(session)
    client = Client(env.url, session)
    await client.login(name)
    return client


async def test_a_client_that_falls_behind_is_resynced(env: Env):
    env.state.ws_buffer = 1
    client = await slow_client(env, "victor")
    async with heavy_traffic(env) as pattern:
        ws = await connect(client)
        await ws.send_json({"type": "subscribe", "points": [pattern]})
        assert (await receive(ws))["type"] == "subscribed"
        assert (await receive(ws))["type"] == "snapshot"
        # Stop reading while the server keeps producing: its sends stall, batches pile up.
        await anyio.sleep(1.5)
        resync = await receive_until(ws, lambda m: m["type"] in ("resync",), timeout=20)
    assert resync["lost"] > 0 and len(resync["points"]) == 200
    assert env.state.counters["ws_resyncs"] >= 1
    await ws.close()


async def test_a_client_that_never_reads_is_dropped_and_the_hub_keeps_going(env: Env):
    env.state.send_timeout = 0.5
    reader = await env.login("olivia")
    sleeper = await slow_client(env, "victor")
    async with heavy_traffic(env, points=100) as pattern:
        ws_sleeper = await connect(sleeper)
        await ws_sleeper.send_json({"type": "subscribe", "points": [pattern]})
        ws_reader = await connect(reader)
        await ws_reader.send_json({"type": "subscribe", "points": [LEVEL]})
        assert len(env.state.clients) == 2
        # A server-side fact with no event to wait on: watch it, with a generous deadline.
        with anyio.fail_after(20):
            while env.state.counters["ws_dropped"] == 0:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        with anyio.fail_after(10):
            while len(env.state.clients) != 1:  # noqa: ASYNC110
                await anyio.sleep(0.1)
    # The other client and the hub never noticed.
    await reader.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 75}})
    await receive_until(
        ws_reader,
        lambda m: m["type"] == "changes" and any(p["value"] == 75 for p in m["points"]),
    )
    await wait_for_point(env.hub, LEVEL, lambda v: v.value == 75)
    await ws_reader.close()
    await ws_sleeper.close()
    _, metrics = await reader.get("/metrics")
    assert 'cityvisor_websocket_dropped_total{reason="send_queue_full"} 1' in metrics


async def test_a_large_snapshot_comes_in_parts_shared_by_screens_with_the_same_patterns(env: Env):
    from cityvisor.web.ws import SNAPSHOT_CHUNK

    count = SNAPSHOT_CHUNK * 2 + 500
    for i in range(count):
        spec = PointSpec(name=f"p{i}", dtype=DataType.FLOAT, history="none")
        env.hub.points.register(f"centre/bulk/box/p{i}", spec, device_id="box", zone="centre")
    screens = [await connect(await env.login("olivia")) for _ in range(2)]
    parts_of: list[list[dict[str, Any]]] = []
    for ws in screens:
        await ws.send_json({"type": "subscribe", "points": ["centre/bulk/**"]})
        assert (await receive(ws))["type"] == "subscribed"
        parts = [await receive(ws)]
        while parts[-1].get("more"):
            parts.append(await receive(ws))
        parts_of.append(parts)
    for parts in parts_of:
        assert [p["type"] for p in parts] == ["snapshot"] * 3
        assert [bool(p.get("continued")) for p in parts] == [False, True, True]
        assert [bool(p.get("more")) for p in parts] == [True, True, False]
        assert [len(p["points"]) for p in parts] == [SNAPSHOT_CHUNK, SNAPSHOT_CHUNK, 500]
        ids = [value["id"] for part in parts for value in part["points"]]
        assert sorted(ids) == sorted(f"centre/bulk/box/p{i}" for i in range(count))
    watches = {w for p in env.hub.points.points("centre/bulk/**") for w in p.subscribers}
    assert len(watches) == 1  # both screens share one watch
    env.hub.points.update("centre/bulk/box/p7", 7.0)
    for ws in screens:
        change = await receive_until(ws, lambda m: m["type"] == "changes")
        assert [(p["id"], p["value"]) for p in change["points"]] == [("centre/bulk/box/p7", 7.0)]
        await ws.close()


async def test_a_snapshots_texts_are_kept_only_while_a_screen_sends_it_and_the_rest_go_with_the_last(
    env: Env,
):
    from cityvisor.web import texts

    for i in range(2_500):
        spec = PointSpec(name=f"p{i}", dtype=DataType.FLOAT, history="none")
        env.hub.points.register(f"centre/bulk/box/p{i}", spec, device_id="box", zone="centre")
    ws = await connect(await env.login("olivia"))
    await ws.send_json({"type": "subscribe", "points": ["centre/bulk/**"]})
    assert (await receive(ws))["type"] == "subscribed"
    part = await receive(ws)
    while part.get("more"):
        part = await receive(ws)
    env.hub.points.update("centre/bulk/box/p3", 3.0)
    change = await receive_until(ws, lambda m: m["type"] == "changes")
    assert [(p["id"], p["value"]) for p in change["points"]] == [("centre/bulk/box/p3", 3.0)]
    assert len(texts._snapshot_texts) == 0  # sent: its 2,500 texts are not kept
    assert texts._point_texts._new[0]  # the change's text is shared while screens are there
    await ws.close()
    for _ in range(1000):  # until the server sees the screen go, 10 s at most
        if not env.server.state.clients:
            break
        await anyio.sleep(0.01)
    assert not env.server.state.clients
    assert not texts._point_texts._new[0] and not texts._changes_messages._items


def test_the_texts_of_changes_are_let_go_soon_after_their_delivery():
    from cityvisor.core.points import PointValue, Quality
    from cityvisor.web.texts import _PointTexts

    texts = _PointTexts(rotate=0.05)

    def value(n: int) -> PointValue:
        return PointValue(f"a/p{n}", float(n), Quality.good(), n, n)

    first = [value(1), value(2)]
    text = texts.joined(first)
    assert (
        text == '{"id":"a/p1","value":1.0,"quality":{"status":"good","reason":""},'
        '"source_ts":1,"received_ts":1},'
        '{"id":"a/p2","value":2.0,"quality":{"status":"good","reason":""},'
        '"source_ts":2,"received_ts":2}'
    )
    assert texts.joined(list(first)) is text  # the next screen's equal batch: shared
    texts._rotated -= 0.06  # as if 60 ms had passed since the last rotation
    texts.joined([value(3)])  # a later delivery: the first one's texts are the old generation
    assert id(first[0]) in texts._old[0]
    texts._rotated -= 0.06  # as if 60 ms had passed since the last rotation
    texts.joined([value(4)])
    held = {**texts._new[0], **texts._old[0]}
    assert id(first[0]) not in held and id(first[1]) not in held  # let go
