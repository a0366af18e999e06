"""HTTP peers that misbehave: broken camera answers, and a server whose answers never end.

The broken answers plug into :meth:`SimulatedCamera.misbehave`; the endless
server runs in a process of its own, so that a test measures only the client.
``python -m tests.hal.http_peers endless`` serves, on a free port of
127.0.0.1 that it prints, a body that never ends at every path (chunked,
no length, ``image/jpeg``; ``application/soap+xml`` for a POST).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from aiohttp import web

from cityvisor.hal.sim.camera import ENVELOPE_START, Handler, envelope

CHUNK = bytes(64 * 1024)

TRUNCATED_PRESETS = ENVELOPE_START + '<tptz:GetPresetsResponse><tptz:Preset token="p1"><tt:Name>Ent'
"""A reply cut off in the middle of a preset's name."""

GENERIC_FAULT = envelope(
    "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
    '<s:Reason><s:Text xml:lang="en">Unauthorized</s:Text></s:Reason></s:Fault>'
)
"""What some cameras send with a 401 for a wrong password: no ``ter:NotAuthorized`` subcode."""


def soap_reply(text: str, status: int = 200, content_type: str = "application/soap+xml") -> Handler:
    """A handler that answers ``text`` as is."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=text.encode(), status=status, content_type=content_type)

    return handler


async def endless_soap(request: web.Request) -> web.StreamResponse:
    """A SOAP answer that never ends (in the camera simulator's process)."""
    response = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
    await response.prepare(request)
    while True:
        await response.write(CHUNK)


async def _endless(request: web.Request) -> web.StreamResponse:
    kind = "application/soap+xml" if request.method == "POST" else "image/jpeg"
    if request.method == "POST":
        await request.read()
    response = web.StreamResponse(headers={"Content-Type": kind})
    await response.prepare(request)
    while True:
        await response.write(CHUNK)


async def _serve() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _endless)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await anyio.sleep_forever()


@asynccontextmanager
async def endless_server() -> AsyncIterator[str]:
    """``http://127.0.0.1:PORT``: a server process whose every answer never ends."""
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.hal.http_peers", "endless"], stderr=None
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(16)
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.terminate()
        with anyio.move_on_after(5, shield=True):
            await process.wait()
        await process.aclose()


if __name__ == "__main__":
    if sys.argv[1:] != ["endless"]:
        sys.exit("usage: python -m tests.hal.http_peers endless")
    with suppress(KeyboardInterrupt):
        anyio.run(_serve)
