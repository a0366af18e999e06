"""The HTTP server's connection guard: a cap per client address and a request deadline.

aiohttp's server has no header or body read timeout: a client that opens
connections and drips a header line (slow-loris) or a body byte (slow POST)
now and then holds them for as long as it likes. The guard sits between the
listening socket and aiohttp's protocol (a wrapping protocol factory, the
asyncio way), and for every connection:

- refuses it with a ``429`` and closes it when its address already has
  ``max_per_address`` connections open;
- closes it when a request (its head up to the blank line, then its
  ``Content-Length`` body) has not fully arrived ``read_timeout`` seconds
  after the connection opened (the first request) or after the request's
  first byte (later ones). A connection that sends nothing is closed by the
  first deadline; one that idles between requests by aiohttp's
  ``keepalive_timeout``, which the server sets to the same value. After a
  WebSocket upgrade (or a chunked body) the guard stops following.

Everything else passes straight to aiohttp's protocol. Counters (connections
open, refused, timed out) are in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionGuard"]

log = logging.getLogger(__name__)

_HEAD_END = b"\r\n\r\n"


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": "too_many_connections", "message": message}).encode()
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 5\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """A protocol factory for ``loop.create_server`` that guards aiohttp's one.

    ``factory`` is aiohttp's protocol factory (``runner.server``);
    ``counters`` receives ``http_connections_refused`` and
    ``http_read_timeouts``. ``max_per_address = 0`` means no cap.
    """

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        read_timeout: float,
        max_per_address: int,
        counters: Counter[str],
    ) -> None:
        self.factory = factory
        self.read_timeout = read_timeout
        self.max_per_address = max_per_address
        self.counters = counters
        self.open: Counter[str] = Counter()
        """Open connections per client address."""

    @property
    def connections(self) -> int:
        """Connections open now."""
        return sum(self.open.values())

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self, self.factory())


_HEAD, _BODY, _IDLE, _PASS = range(4)
"""Where a connection is: in a request's head, in its body, between requests,
or past an upgrade (or a chunked body) that the guard no longer follows."""

_MAX_HEAD = 64 * 1024  # past it aiohttp refuses the request itself


def _body_length(head: bytes) -> int | None:
    """The body length a request head announces (0 if none); None if the guard cannot
    follow what comes next (an upgrade, a chunked body, a bad length: aiohttp decides)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade" or (name == b"transfer-encoding" and value.strip()):
            return None
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
            if length < 0:
                return None
    return length


class _GuardedProtocol(asyncio.Protocol):
    """One connection: counted per address, cut if a request does not arrive in time.

    The deadline starts with the connection (for the first request) or with
    the first byte of each later one, and ends with the request's last byte:
    the end of its head, plus its ``Content-Length`` body. Pipelined
    requests are followed one after the other.
    """

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.address = "?"
        self.refused = False
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._state = _HEAD
        self._head = bytearray()
        self._remaining = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        address = self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        guard = self.guard
        if guard.max_per_address and guard.open[address] >= guard.max_per_address:
            guard.counters["http_connections_refused"] += 1
            log.warning("connection from %s refused: %d already open", address, guard.open[address])
            transport.write(
                _refusal(f"at most {guard.max_per_address} connections from one address")
            )
            transport.close()
            self.refused = True
            return
        guard.open[address] += 1
        self._arm()
        self.inner.connection_made(transport)

    # -- the deadline ------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.read_timeout, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self._state not in (_HEAD, _BODY) or self.transport is None:
            return
        if self.transport.is_closing():
            return
        self.guard.counters["http_read_timeouts"] += 1
        log.info(
            "connection from %s closed: request not received within %g s (%s)",
            self.address,
            self.guard.read_timeout,
            "head" if self._state == _HEAD else "body",
        )
        self.transport.abort()

    # -- following the requests ------------------------------------------------------

    def _follow(self, data: bytes) -> None:
        at, size = 0, len(data)
        while at < size and self._state != _PASS:
            if self._state == _IDLE:
                self._state = _HEAD
                self._arm()
            if self._state == _HEAD:
                searched = max(0, len(self._head) - 3)
                self._head += data[at:]
                end = self._head.find(_HEAD_END, searched)
                if end < 0:
                    if len(self._head) > _MAX_HEAD:
                        self._pass()
                    return
                # Bytes of ``data`` up to the end of the head; the rest is body or more.
                at = size - (len(self._head) - (end + len(_HEAD_END)))
                length = _body_length(bytes(self._head[:end]))
                self._head.clear()
                if length is None:
                    self._pass()
                    return
                self._remaining = length
                self._state = _BODY
            if self._state == _BODY:
                taken = min(self._remaining, size - at)
                self._remaining -= taken
                at += taken
                if self._remaining == 0:
                    self._state = _IDLE
                    self._disarm()

    def _pass(self) -> None:
        self._state = _PASS
        self._head.clear()
        self._disarm()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # whatever it sends is ignored
        if self._state != _PASS:
            self._follow(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.refused:
            return
        open_ = self.guard.open
        open_[self.address] -= 1
        if open_[self.address] <= 0:
            del open_[self.address]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
