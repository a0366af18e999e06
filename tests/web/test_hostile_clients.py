"""Clients that try to stall the hub: hostile patterns, WebSockets that never read, slow-loris."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import time

import aiohttp
import anyio
import pytest
import yarl

from cityvisor.core.patterns import MAX_LENGTH, MAX_WILDCARDS
from cityvisor.core.points import DataType, PointSpec

from .conftest import Env
from .test_ws import connect, heavy_traffic, receive, slow_client

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


# --------------------------------------------------------------------------- WebSockets that never read


def _frame(text: str) -> bytes:
    """A masked WebSocket text frame, as a client must send it."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_websocket(env: Env, client, subscribe: list[str]) -> socket.socket:
    """A WebSocket over a plain socket with a tiny receive window, that never reads."""
    cookies = client.http.cookie_jar.filter_cookies(yarl.URL(env.url))
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
    host, port = env.server.addresses[0][:2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await anyio.to_thread.run_sync(sock.connect, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {env.url}\r\nCookie: {cookie}\r\n\r\n"
    )
    sock.sendall(request.encode() + _frame(json.dumps({"type": "subscribe", "points": subscribe})))
    return sock


async def wait_until(predicate, timeout: float) -> float:
    """Seconds until a server-side fact holds (no event to wait on: watched, generously)."""
    started = time.monotonic()
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return time.monotonic() - started


async def connection_ended(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed or reset the connection (reads what is left)."""
    sock.setblocking(False)
    with anyio.move_on_after(timeout):
        while True:
            try:
                if not sock.recv(1 << 20):
                    return True
            except BlockingIOError:
                await anyio.sleep(0.05)
            except ConnectionResetError:
                return True
    return False


async def test_a_raw_client_that_never_reads_is_closed_once_its_queue_stays_full(env: Env):
    env.state.send_timeout = 1.0
    victor = await env.login("victor")
    async with heavy_traffic(env, points=200) as pattern:
        sock = await raw_websocket(env, victor, [pattern])
        with sock:
            await wait_until(lambda: len(env.state.clients) == 1, 10)
            took = await wait_until(lambda: env.state.counters["ws_dropped:send_queue_full"], 30)
            await wait_until(lambda: not env.state.clients, 10)
            assert await connection_ended(sock)
    assert took < 30
    _, metrics = await victor.get("/metrics")
    assert 'cityvisor_websocket_dropped_total{reason="send_queue_full"} 1' in metrics


async def test_a_raw_client_that_never_reads_a_quiet_feed_is_dropped_for_no_pong(env: Env):
    env.state.heartbeat = 1.0
    victor = await env.login("victor")
    sock = await raw_websocket(env, victor, ["centre/demo/tank-a/maintenance"])
    with sock:
        await wait_until(lambda: len(env.state.clients) == 1, 10)
        await wait_until(lambda: env.state.counters["ws_dropped:no_pong"], 15)
        await wait_until(lambda: not env.state.clients, 10)
        assert await connection_ended(sock)
    _, metrics = await victor.get("/metrics")
    assert 'cityvisor_websocket_dropped_total{reason="no_pong"} 1' in metrics


async def test_a_dropped_client_that_reads_again_is_told_why(env: Env):
    env.state.send_timeout = 1.0
    env.state.close_grace = 10.0
    victor = await slow_client(env, "victor")
    async with heavy_traffic(env, points=200) as pattern:
        ws = await connect(victor)
        await ws.send_json({"type": "subscribe", "points": [pattern]})
        # Stop reading until the server gives up on this client, then read everything.
        await wait_until(lambda: env.state.counters["ws_dropped:send_queue_full"], 30)
        with anyio.fail_after(20):
            while True:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
    assert ws.close_code == 1013
    assert message.extra and "send queue full" in message.extra


# --------------------------------------------------------------------------- slow-loris


async def drip(host: str, port: int, closed: list[float], every: float = 0.2) -> None:
    """A half-open request whose headers never end; records when the server cut it."""
    stream = await anyio.connect_tcp(host, port)
    async with stream:
        try:
            await stream.send(b"GET /api/v1/site HTTP/1.1\r\nHost: x\r\n")
            for i in range(10_000):
                await stream.send(f"X-Drip-{i}: a\r\n".encode())
                with anyio.move_on_after(every):
                    if not await stream.receive():
                        break
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            pass
        closed.append(time.monotonic())


async def test_slow_loris_connections_are_closed_at_the_header_deadline(env: Env):
    assert env.server.guard is not None
    env.server.guard.read_timeout = 8.0
    env.server.guard.max_per_address = 0
    host, port = env.server.addresses[0][:2]
    closed: list[float] = []
    client = await env.login("victor")
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(drip, host, port, closed)
        await wait_until(lambda: env.server.guard.connections >= 200, 7.5)
        # The hub keeps answering while 200 connections drip headers.
        took, status = await timed_get(client, "/api/v1/site")
        assert status == 200 and took < 5.0
    assert len(closed) == 200
    assert max(closed) - started < 30.0  # each was cut about 8 s after it opened
    assert env.state.counters["http_read_timeouts"] >= 200
    _, metrics = await client.get("/metrics")
    counted = re.search(r"^cityvisor_http_read_timeouts_total (\d+)$", metrics, re.MULTILINE)
    assert counted and int(counted.group(1)) >= 200


async def test_connections_from_one_address_are_capped_with_a_429(env: Env):
    guard = env.server.guard
    assert guard is not None
    client = await env.login("victor")
    host, port = env.server.addresses[0][:2]
    guard.max_per_address = guard.open[host] + 3
    held = [await anyio.connect_tcp(host, port) for _ in range(3)]
    await wait_until(lambda: guard.open[host] == guard.max_per_address, 10)
    refused = await anyio.connect_tcp(host, port)
    async with refused:
        answer = b""
        with anyio.fail_after(10):
            try:
                while chunk := await refused.receive():
                    answer += chunk
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "too_many_connections"
    for stream in held:
        await stream.aclose()
    await wait_until(lambda: guard.open[host] < guard.max_per_address, 10)
    status, _ = await client.get("/api/v1/site")
    assert status == 200
    _, metrics = await client.get("/metrics")
    assert "cityvisor_http_connections_refused_total 1" in metrics


async def read_until_closed(stream, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed."""
    received = b""
    with anyio.fail_after(timeout):
        try:
            while chunk := await stream.receive():
                received += chunk
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            pass
    return received, time.monotonic()


async def test_a_dripped_body_is_cut_at_the_deadline_too(env: Env):
    assert env.server.guard is not None
    env.server.guard.read_timeout = 1.0
    host, port = env.server.addresses[0][:2]
    async with await anyio.connect_tcp(host, port) as stream:
        started = time.monotonic()
        await stream.send(
            b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )

        async def drip_body() -> None:
            try:
                for _ in range(100):
                    await anyio.sleep(0.1)
                    await stream.send(b" ")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(drip_body)
            _, closed = await read_until_closed(stream, 10)
            tg.cancel_scope.cancel()
    assert closed - started < 8.0
    assert env.state.counters["http_read_timeouts"] == 1


async def test_pipelined_and_kept_alive_requests_are_followed_one_by_one(env: Env):
    assert env.server.guard is not None
    env.server.guard.read_timeout = 1.5
    host, port = env.server.addresses[0][:2]
    login = json.dumps({"username": "victor", "password": "wrong password!"}).encode()
    async with await anyio.connect_tcp(host, port) as stream:
        # Two whole requests in one write, a body included: two answers, no cut.
        await stream.send(
            b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(login)}\r\n\r\n".encode()
            + login
            + b"GET /api/v1/site HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = b""
        with anyio.fail_after(10):
            while answers.count(b"HTTP/1.1 ") < 2:
                answers += await stream.receive()
        assert answers.startswith(b"HTTP/1.1 401 ") and b"HTTP/1.1 401 " in answers[12:]
        # Well after the first deadline, a third request starts and never ends.
        await anyio.sleep(1.0)
        await stream.send(b"GET /api/v1/site HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        _, closed = await read_until_closed(stream, 10)
    assert 1.0 < closed - started < 8.0
    assert env.state.counters["http_read_timeouts"] == 1
