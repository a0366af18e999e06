"""Clients that try to stall the hub: hostile patterns, WebSockets that never read, slow-loris."""

from __future__ import annotations

import time

import anyio
import pytest

from cityvisor.core.patterns import MAX_LENGTH, MAX_WILDCARDS
from cityvisor.core.points import DataType, PointSpec

from .conftest import Env
from .test_ws import connect, receive

pytestmark = pytest.mark.anyio

# Built to make a backtracking matcher try everything: one such id cost seconds.
HOSTILE = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"


def many_hostile_ids(env: Env, count: int = 5_000) -> None:
    for i in range(count):
        env.hub.points.register(f"{'a' * 60}{i}", PointSpec("value", DataType.INT))


async def timed_get(client, path: str) -> tuple[float, int]:
    started = time.monotonic()
    status, _ = await client.get(path)
    return time.monotonic() - started, status


async def test_a_hostile_pattern_does_not_stall_a_concurrent_request(env: Env):
    many_hostile_ids(env)
    attacker = await env.login("victor")
    operator = await env.login("olivia")
    results: dict[str, tuple[float, int]] = {}

    async def attack() -> None:
        results["attack"] = await timed_get(attacker, f"/api/v1/points?pattern={HOSTILE}")

    async def work() -> None:
        await anyio.sleep(0.05)
        results["work"] = await timed_get(operator, "/api/v1/points?pattern=centre/demo/*/level")

    async with anyio.create_task_group() as tg:
        tg.start_soon(attack)
        tg.start_soon(work)
    assert results["attack"][1] == 200 and results["work"][1] == 200
    # A backtracking matcher held the loop for hours here; generous for a loaded machine.
    assert results["work"][0] < 5.0, results


async def test_a_pattern_over_the_limits_is_a_422_naming_the_limit(env: Env):
    client = await env.login("victor")
    status, body = await client.get("/api/v1/points?pattern=" + "*a" * (MAX_WILDCARDS + 1))
    assert status == 422 and f"at most {MAX_WILDCARDS}" in body["message"]
    assert body["message"].startswith("pattern")
    status, body = await client.get("/api/v1/points?pattern=" + "a" * (MAX_LENGTH + 1))
    assert status == 422 and f"at most {MAX_LENGTH} characters" in body["message"]


async def test_a_websocket_subscribe_with_a_refused_pattern_gets_an_error(env: Env):
    many_hostile_ids(env, 1_000)
    client = await env.login("victor")
    ws = await connect(client)
    await ws.send_json({"type": "subscribe", "points": ["centre/**", "*?" * 20]})
    error = await receive(ws)
    assert error["type"] == "error" and error["error"] == "invalid_request"
    assert f"at most {MAX_WILDCARDS}" in error["message"]
    started = time.monotonic()
    await ws.send_json({"type": "subscribe", "points": [HOSTILE]})
    assert (await receive(ws))["type"] == "subscribed"
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot" and snapshot["points"] == []
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    assert time.monotonic() - started < 5.0
    await ws.close()
