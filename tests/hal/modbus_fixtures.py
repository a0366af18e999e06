"""Fixtures for the Modbus tests: simulators on free loopback ports, a fast pool, a rogue server.

``tests/hal/conftest.py`` imports the fixtures (``__all__``); test modules
import the helpers (``HOST``, ``free_port``, ``rogue_server``) themselves.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from cityvisor.hal.modbus import ModbusPool, ModbusSettings, Profile, load_profile
from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.hal.sim.lighting import LightingSimulator

__all__ = [
    "bollard_profile",
    "bollard_sim",
    "lighting_profile",
    "lighting_sim",
    "pool",
    "pty_pair",
    "settings",
]

HOST = "127.0.0.1"

# Short timeouts and backoff keep failure tests fast; they are still real
# timeouts over real sockets.
FAST = ModbusSettings(
    timeout=0.3,
    connect_timeout=0.5,
    min_backoff=0.05,
    max_backoff=0.4,
    max_timeouts=3,
    unreachable_after=2,
)


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (to start and restart a simulator on it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def settings() -> ModbusSettings:
    """Endpoint settings with short timeouts and backoff."""
    return FAST


@pytest.fixture
def pool(settings: ModbusSettings) -> ModbusPool:
    """A fresh endpoint pool per test."""
    return ModbusPool(settings)


@pytest.fixture
def lighting_profile() -> Profile:
    """The bundled lighting-cabinet profile."""
    return load_profile("lighting_cabinet")


@pytest.fixture
def bollard_profile() -> Profile:
    """The bundled bollard-PLC profile."""
    return load_profile("bollard_plc")


@pytest.fixture
async def lighting_sim() -> AsyncIterator[LightingSimulator]:
    """A gateway with two 8-circuit cabinets (units 1 and 2) on a free port."""
    async with LightingSimulator(
        HOST, 0, cabinets=2, circuits=8, ramp_rate=100.0, tick=0.02, seed=7
    ) as sim:
        yield sim


@pytest.fixture
async def bollard_sim() -> AsyncIterator[BollardSimulator]:
    """A gateway with two bollards (units 1 and 2), 0.5 s strokes, on a free port."""
    async with BollardSimulator(HOST, 0, bollards=2, travel_time=0.5, tick=0.02, seed=7) as sim:
        yield sim


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two pseudo-terminals wired together by socat: a serial line without hardware."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run the apt-get line of .ci/run")
    ends = (str(tmp_path / "equipment"), str(tmp_path / "control-room"))
    process = await anyio.open_process([socat, *(f"pty,raw,echo=0,link={end}" for end in ends)])
    try:
        with anyio.fail_after(5):  # socat creates the links once both ptys are open
            for end in ends:
                while not await anyio.Path(end).exists():  # noqa: ASYNC110  (no event to wait on)
                    await anyio.sleep(0.02)
        yield ends
    finally:
        process.terminate()
        with anyio.move_on_after(5, shield=True):
            await process.wait()
        await process.aclose()


# --------------------------------------------------------------------------- a rogue server


def _mbap(tid: int, unit: int, pdu: bytes, *, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, 0, size, unit) + pdu


def rogue_reply(mode: str, tid: int, unit: int, function: int, count: int) -> bytes | None:
    """What the rogue server answers to a read request, by ``mode``.

    - ``silent``: nothing at all;
    - ``truncated``: an MBAP header announcing more bytes than ever come;
    - ``bad_byte_count``: a complete frame whose byte count exceeds its data;
    - ``short``: a well-formed reply with fewer registers than asked;
    - ``wrong_function``: a well-formed reply to another function;
    - ``garbage``: bytes that are not a Modbus/TCP frame at all;
    - ``exception``: a well-formed exception response, code 4 (server device
      failure), to every request.

    (The server itself also knows ``hangup``: close the connection on a
    request, and ``close``: close every connection as soon as it is accepted.)
    """
    data = b"".join(struct.pack(">H", i) for i in range(count))
    if mode == "silent":
        return None
    if mode == "truncated":
        pdu = bytes([function, 2 * count]) + data
        return _mbap(tid, unit, pdu)[: 7 + 2]
    if mode == "bad_byte_count":
        return _mbap(tid, unit, bytes([function, 2 * count + 10]) + data)
    if mode == "short":
        return _mbap(tid, unit, bytes([function, 2 * (count - 1)]) + data[2:])
    if mode == "wrong_function":
        other = 4 if function == 3 else 3
        return _mbap(tid, unit, bytes([other, 2 * count]) + data)
    if mode == "garbage":
        return b"\xde\xad\xbe\xef\x13\x37 not modbus at all"
    if mode == "exception":
        return _mbap(tid, unit, bytes([function | 0x80, 4]))
    raise ValueError(mode)


@contextlib.asynccontextmanager
async def rogue_server(mode: str, port: int = 0) -> AsyncIterator[int]:
    """A raw TCP server that answers Modbus requests wrongly; yields its port.

    Written with anyio sockets, not pymodbus, so it can send what pymodbus
    never would.
    """

    async def handle(stream: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            if mode == "close":
                return
            with contextlib.suppress(
                anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError
            ):
                while True:
                    header = await reader.receive_exactly(7)
                    tid, _pid, length, unit = struct.unpack(">HHHB", header)
                    pdu = await reader.receive_exactly(length - 1)
                    function, _address, count = struct.unpack(">BHH", pdu[:5])
                    if mode == "hangup":
                        return  # closes the connection with the request in flight
                    reply = rogue_reply(mode, tid, unit, function, count)
                    if reply is not None:
                        await stream.send(reply)

    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=port)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            group.cancel_scope.cancel()
