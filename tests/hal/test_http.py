"""The HAL's HTTP helpers against small aiohttp servers of our own, over loopback.

The servers misbehave the way embedded web servers do: a body that never
ends, a length over any limit, a challenge for Basic over plain HTTP, a
Digest challenge with SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from cityvisor.hal.http import (
    ChallengeAuth,
    InsecureChallengeError,
    ResponseTooLargeError,
    challenge_schemes,
    read_body,
)
from tests.hal.http_peers import endless_server

pytestmark = pytest.mark.anyio

CHUNK = bytes(64 * 1024)  # sent again and again: the server allocates nothing per chunk
LIMIT = 2 * 2**20


class Server:
    """One aiohttp server on loopback serving ``handler`` at ``/``; ``seen`` has the requests' auth."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.seen: list[str | None] = []
        self.url = ""

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.headers.get("Authorization"))
        return await self.handler(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Server:
        server = Server(handler)
        app = web.Application()
        app.router.add_get("/", server._serve)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


OVERHEAD = 768 * 1024
"""What reading may cost beyond the body, whatever the limit (measured: 400-480 KiB).

asyncio receives into a 256 KiB buffer, aiohttp holds up to 128 KiB before it
pauses the socket, and the chunk in hand is 64 KiB.
"""


@pytest.mark.parametrize("limit", [2**20, 8 * 2**20])
async def test_an_endless_body_stops_at_the_limit_in_bounded_memory(limit: int) -> None:
    async with endless_server() as url, aiohttp.ClientSession() as session:
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            async with session.get(url) as response:
                with pytest.raises(ResponseTooLargeError, match=f"ran past the limit of {limit}"):
                    await read_body(response, limit)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
    print(f"endless body, limit {limit} B: peak {peak} B ({peak - limit} B over the limit)")
    assert peak < limit + OVERHEAD


async def test_a_length_over_the_limit_is_refused_before_the_body_is_read(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(50 * 2**20)})
        await response.prepare(request)
        for _ in range(800):
            await response.write(CHUNK)
        return response

    server = await serve(huge)
    async with aiohttp.ClientSession() as session, session.get(server.url) as response:
        with pytest.raises(ResponseTooLargeError, match="announces 52428800 bytes") as error:
            await read_body(response, LIMIT)
        assert error.value.declared == 50 * 2**20
        assert response.closed


async def test_a_body_within_the_limit_is_read_whole(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def picture(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\xff\xd8" + bytes(300_000) + b"\xff\xd9")

    server = await serve(picture)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # and the connection goes back to the pool for the next one
            async with session.get(server.url) as response:
                body = await read_body(response, LIMIT)
            assert len(body) == 300_004 and body[-2:] == b"\xff\xd9"


def test_the_schemes_of_a_challenge_are_read_whatever_the_quoting() -> None:
    assert challenge_schemes(['Digest realm="a, Basic b", nonce="n", algorithm=SHA-256']) == [
        "digest"
    ]
    assert challenge_schemes(['Digest realm="a", nonce="b", Basic realm="c"']) == [
        "digest",
        "basic",
    ]
    assert challenge_schemes(["Basic", 'Bearer realm="x"']) == ["basic", "bearer"]
    assert challenge_schemes(["realm = x"]) == []


def basic_only(username: str, password: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="cam"'})
        return web.Response(body=b"picture")

    return handler


async def test_basic_over_plain_http_is_refused_unless_allowed_and_never_sent_unasked(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve(basic_only("op", "pw"))
    refusing = ChallengeAuth("op", "pw")
    async with aiohttp.ClientSession(middlewares=(refusing,)) as session:
        with pytest.raises(InsecureChallengeError, match="allow_basic_over_http"):
            await session.get(server.url)
    assert server.seen == [None]  # the password never left

    allowing = ChallengeAuth("op", "pw", allow_basic_over_http=True)
    async with aiohttp.ClientSession(middlewares=(allowing,)) as session:
        for _ in range(3):
            async with session.get(server.url) as response:
                assert response.status == 200 and await response.read() == b"picture"
    assert allowing.scheme == "basic"
    # Asked once, then sent with every request: one challenge for three pictures.
    assert server.seen[1:] == [None, *[server.seen[-1]] * 3] and server.seen[-1]


async def test_digest_sha256_is_answered_with_sha256(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    async def handler(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        if header.startswith("Digest ") and fields.get("algorithm") == "SHA-256":
            ha1, ha2 = h("op:cam:pw"), h(f"GET:{fields['uri']}")
            expected = h(f"{ha1}:n1:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
            if fields["response"] == expected:
                return web.Response(body=b"picture")
        challenge = 'Digest realm="cam", qop="auth", nonce="n1", algorithm=SHA-256'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    server = await serve(handler)
    auth = ChallengeAuth("op", "pw")
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        for _ in range(2):
            async with session.get(server.url) as response:
                assert response.status == 200
    assert auth.scheme == "digest"
    # First picture: the challenge, then the answer; the second is authenticated at once.
    assert [seen is None for seen in server.seen] == [True, False, False]
