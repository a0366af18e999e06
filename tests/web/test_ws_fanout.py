"""The WebSocket's shared senders: one task writes each delivery to every screen of a watch."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest

from cityvisor.core.points import DataType, PointSpec

from .conftest import Env
from .test_ws import connect, heavy_traffic, receive, receive_until, slow_client

pytestmark = pytest.mark.anyio


async def subscribed(ws: aiohttp.ClientWebSocketResponse, pattern: str) -> None:
    """Subscribe ``ws`` to ``pattern`` and read its snapshot."""
    await ws.send_json({"type": "subscribe", "points": [pattern]})
    assert (await receive(ws))["type"] == "subscribed"
    part = await receive(ws)
    assert part["type"] == "snapshot"
    while part.get("more"):
        part = await receive(ws)


async def members_are(env: Env, count: int) -> None:
    """Wait until the one sender serves ``count`` screens (they join after their snapshot)."""
    with anyio.fail_after(10):
        while sum(len(s.members) for s in env.state.fanout.senders.values()) != count:  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_the_screens_of_one_watch_are_written_by_one_sender(env: Env):
    point = "centre/bulk/box/n"
    env.hub.points.register(point, PointSpec("n", DataType.FLOAT, history="none"), zone="centre")
    screens = [await connect(await env.login("victor")) for _ in range(4)]
    for ws in screens:
        await subscribed(ws, "centre/bulk/**")
    await members_are(env, 4)
    assert len(env.state.fanout.senders) == 1
    (sender,) = env.state.fanout.senders.values()
    turns = sender.turns
    for n in range(1, 21):
        env.hub.points.update(point, float(n))
        await anyio.sleep(0.03)
    for ws in screens:
        seen: list[float] = []
        while not seen or seen[-1] < 20:
            message = await receive_until(ws, lambda m: m["type"] == "changes")
            assert message["sub"] == 1
            seen += [p["value"] for p in message["points"]]
        assert seen == [float(n) for n in range(1, 21)]
    counters = env.state.counters
    # Every batch of every screen went out from the sender's loop, which woke
    # once per delivery, not once per screen.
    assert counters["ws_shared_batches"] == counters["ws_batches"] > 0
    assert counters["ws_shared_batches"] == 4 * (sender.turns - turns)
    status, metrics = await (await env.login("victor")).get("/metrics")
    assert status == 200
    assert f'cityvisor_websocket_batches_total{{path="shared"}} {counters["ws_batches"]}' in metrics
    assert 'cityvisor_websocket_batches_total{path="own"} 0' in metrics
    for ws in screens:
        await ws.close()
    with anyio.fail_after(10):
        while env.state.fanout.senders:  # noqa: ASYNC110
            await anyio.sleep(0.01)  # the last screen gone, its sender stops


async def test_a_resubscribed_screen_gets_its_new_number_and_its_own_sender(env: Env):
    env.hub.points.register("centre/bulk/box/a", PointSpec("a", DataType.FLOAT), zone="centre")
    env.hub.points.register("nord/bulk/box/b", PointSpec("b", DataType.FLOAT), zone="nord")
    first, second = [await connect(await env.login("victor")) for _ in range(2)]
    await subscribed(first, "centre/bulk/**")
    await subscribed(second, "centre/bulk/**")
    await subscribed(second, "nord/bulk/**")  # sub 2, another watch
    await members_are(env, 2)
    assert len(env.state.fanout.senders) == 2
    env.hub.points.update("centre/bulk/box/a", 1.0)
    env.hub.points.update("nord/bulk/box/b", 2.0)
    one = await receive_until(first, lambda m: m["type"] == "changes")
    two = await receive_until(second, lambda m: m["type"] == "changes")
    assert (one["sub"], [p["value"] for p in one["points"]]) == (1, [1.0])
    assert (two["sub"], [p["value"] for p in two["points"]]) == (2, [2.0])
    assert env.state.counters["ws_shared_batches"] == 2
    await first.close()
    await second.close()


async def test_a_slow_screen_among_fast_ones_is_dropped_while_they_get_every_change_in_order(
    env: Env,
):
    env.state.send_timeout = 0.5
    readers = [await connect(await env.login("victor")) for _ in range(2)]
    sleeper = await connect(await slow_client(env, "victor"))
    seen: list[list[int]] = [[], []]
    resyncs: list[dict[str, Any]] = []

    async def read(n: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            data = message.json()
            if data["type"] == "resync":
                resyncs.append(data)
            for value in data.get("points", ()) if data["type"] == "changes" else ():
                if value["id"] == "centre/bulk/box/p0":
                    seen[n].append(int(value["value"][:8]))

    async with heavy_traffic(env, points=100) as pattern:
        for ws in (*readers, sleeper):
            await subscribed(ws, pattern)
        await members_are(env, 3)
        async with anyio.create_task_group() as tg:
            for n, ws in enumerate(readers):
                tg.start_soon(read, n, ws)
            # The sleeper reads nothing: its connection fills, it is handed back
            # to its own task, which waits, then drops it.
            with anyio.fail_after(20):
                while env.state.counters["ws_dropped"] == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            await members_are(env, 2)
            dropped_at = [len(s) for s in seen]
            await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
    assert env.state.counters["ws_dropped:send_queue_full"] == 1
    assert not resyncs  # the fast screens never fell behind
    for values, before in zip(seen, dropped_at, strict=True):
        assert len(values) > before + 10  # they kept receiving after the drop
        assert values == list(range(values[0], values[0] + len(values)))  # every change, in order
    assert env.state.counters["ws_shared_batches"] > 0
    for ws in (*readers, sleeper):
        await ws.close()
