"""The HTTP server's connection guard: a cap per client address and a request-head deadline.

aiohttp's server has no header timeout: a client that opens connections and
drips a header line now and then (slow-loris) holds them for as long as it
likes. The guard sits between the listening socket and aiohttp's protocol
(a wrapping protocol factory, the asyncio way), and for every connection:

- refuses it with a ``429`` and closes it when its address already has
  ``max_per_address`` connections open;
- closes it when its first request head (request line and headers, up to
  the blank line) is not complete ``header_timeout`` seconds after it
  opened. Later requests on a kept-alive connection are held to the same
  deadline by aiohttp's ``keepalive_timeout``, which the server sets to
  the same value: it closes a connection that has not sent a complete
  request head that long after its previous answer.

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
    ``http_header_timeouts``. ``max_per_address = 0`` means no cap.
    """

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        header_timeout: float,
        max_per_address: int,
        counters: Counter[str],
    ) -> None:
        self.factory = factory
        self.header_timeout = header_timeout
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


class _GuardedProtocol(asyncio.Protocol):
    """One connection: counted per address, cut if its first request head is late."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.address = "?"
        self.refused = False
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self._head_done = False

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
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(guard.header_timeout, self._late)
        self.inner.connection_made(transport)

    def _late(self) -> None:
        self._deadline = None
        if self._head_done or self.transport is None or self.transport.is_closing():
            return
        self.guard.counters["http_header_timeouts"] += 1
        log.info(
            "connection from %s closed: no complete request head within %g s",
            self.address,
            self.guard.header_timeout,
        )
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # whatever it sends is ignored
        if not self._head_done:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._head_done = True
                self._tail = b""
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
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
