"""The WebSocket at ``/api/v1/ws``: live point changes and alarm events for one browser.

The protocol (JSON text messages; docs/api.md has the details)::

    client -> server
      {"type": "subscribe", "points": ["centre/**"], "alarms": true}
            replaces the point patterns (an empty list: none) and/or turns the
            alarm feed on or off; answered by "subscribed", then snapshots
      {"type": "ping"}                      -> {"type": "pong", "ts": ...}

    server -> client
      {"type": "hello", "user": {...}, "ts": ...}          once, first
      {"type": "subscribed", "sub": n, "points": [...], "alarms": bool}
      {"type": "snapshot", "sub": n, "points": [values]}   after each subscribe
            (in parts of SNAPSHOT_CHUNK values: "more": true on all but the
            last, "continued": true on all but the first; a resync likewise)
      {"type": "changes", "sub": n, "points": [values]}    batched changes, oldest first
      {"type": "resync", "sub": n, "points": [values], "lost": k}
            the client fell behind: k changes were dropped, here is everything now
      {"type": "alarms", "alarms": [...], "counts": {...}, "lost": k}
            every annunciated alarm: first, and again after lost events
      {"type": "alarm", "event": {...}, "alarm": {...} | null, "counts": {...}}
      {"type": "error", "error": code, "message": ...}     a bad client message
      {"type": "session_ended"}                            then the server closes (4401)

Nothing here can block the hub or grow without bound: the point database
and the alarm manager hand each client a bounded buffer and re-sync it when
it overflows; each send waits at most ``send_timeout`` seconds for a client
that does not read, after which the client is dropped (code 1013). Values
are encoded once and shared by every client that receives them.

Each screen's points feed (:meth:`Client._feed_points`) sends its snapshot,
then joins the sender of its watch (:mod:`cityvisor.web.fanout`): one task
per watch that writes each delivery to every screen of it whose connection
takes it at once. What that sender hands back (a screen whose buffer is
full, batches that piled up, a resync) the screen's own task sends, with
the lock and the deadline of :meth:`Client.send`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from aiohttp import WSCloseCode, WSMsgType, web

from ..core.alarms import AlarmEvent, AlarmResync
from ..core.patterns import PatternError, compile_pattern
from ..core.points import Batch, Resync, now_ms
from .routing import ApiError
from .state import STATE
from .texts import (
    SNAPSHOT_CHUNK,
    _alarm_texts,
    _changes_messages,
    _dumps,
    _point_texts,
    _snapshot_messages,
    encode_point,
)
from .visibility import Visibility

if TYPE_CHECKING:
    from ..core.hub import Hub
    from .auth import Session
    from .state import WebState

__all__ = ["SNAPSHOT_CHUNK", "Client", "encode_point", "websocket"]

log = logging.getLogger(__name__)

MAX_PATTERNS = 100
MAX_MESSAGE = 64 * 1024
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a reset
_FRAME_HEADER = 14  # the longest WebSocket frame header, in bytes
SESSION_ENDED = 4401
"""Close code (private range) when the session behind a WebSocket ends."""


TRANSPORT_BUFFER = 256 * 1024
"""Bytes a client's connection buffers before sends wait for it (its high-water mark)."""

MAX_COALESCED = 64
"""Waiting batches merged into one message, at most (bounds a message's size)."""


def _coalesce(
    message: Batch | Resync, subscription: Any, generation: int, counters: Any
) -> Generator[str | bytes, None, None]:
    """The messages for ``message`` and every batch already waiting behind it.

    A client that keeps up gets one batch per message (shared text between
    clients); one that is behind gets what piled up in one message, as a
    plain broadcast would, instead of one message per flush.
    """
    waiting: list[Batch | Resync] = [message]
    while len(waiting) < MAX_COALESCED and subscription.waiting:
        waiting.append(subscription.receive_nowait())
    resyncs = [i for i, m in enumerate(waiting) if isinstance(m, Resync)]
    if resyncs:
        resync = waiting[resyncs[-1]]
        assert isinstance(resync, Resync)
        counters["ws_resyncs"] += 1
        yield from _snapshot_messages("resync", generation, resync.snapshot, resync.lost)
        waiting = waiting[resyncs[-1] + 1 :]
    batches = [m.changes for m in waiting if isinstance(m, Batch)]
    if batches:
        counters["ws_batches"] += len(batches)
        changes = batches[0] if len(batches) == 1 else [c for b in batches for c in b]
        yield _changes_messages.get(generation, changes)


class _SlowClientError(Exception):
    pass


class Client:
    """One connected WebSocket: its subscriptions and its bounded sending."""

    def __init__(
        self, state: WebState, ws: web.WebSocketResponse, session: Session, transport: Any
    ) -> None:
        self.state = state
        self.hub: Hub = state.hub
        self.ws = ws
        self.session = session
        self.visibility = Visibility(state.hub, session.user)
        """What this client may read (``[security] zone_reading``)."""
        self.transport = transport
        self.generation = 0
        self.patterns: tuple[str, ...] = ()
        self.alarms = False
        # Uncontended (the usual case), taking it costs no turn of the loop.
        self._lock = anyio.Lock(fast_acquire=True)
        self._points_scope: anyio.CancelScope | None = None
        self._alarms_scope: anyio.CancelScope | None = None
        self._tg: Any = None
        self._budget = 20.0
        self._budget_at = time.monotonic()
        self.closing = False

    # -- sending -------------------------------------------------------------

    def can_write_now(self, size: int) -> bool:
        """True if a message of ``size`` bytes can be written at once, without a lock or a deadline.

        A write that leaves the transport's buffer under its low and high
        marks can neither pause the connection nor wait for it, so nothing
        else can interleave and no deadline is needed; none may while a
        send that waits holds the lock.
        """
        transport = self.transport
        if transport is None or self._lock.locked():
            return False
        low, high = transport.get_write_buffer_limits()
        buffered = transport.get_write_buffer_size()
        return bool(buffered <= low and buffered + size + _FRAME_HEADER <= high)

    async def write_now(self, data: bytes) -> None:
        """Write one text message (UTF-8) that :meth:`can_write_now` accepted: it does not wait."""
        await self.ws.send_frame(data, WSMsgType.TEXT)

    async def send(self, text: str | bytes) -> None:
        """Send one text message (bytes: already UTF-8); drop the client if it has not taken it
        within ``send_timeout``."""
        data = text if isinstance(text, bytes) else text.encode()
        if self.can_write_now(len(data)):  # the usual case
            await self.ws.send_frame(data, WSMsgType.TEXT)
            return
        async with self._lock:
            with anyio.move_on_after(self.state.send_timeout) as scope:
                await self.ws.send_frame(data, WSMsgType.TEXT)
        if scope.cancelled_caught:
            raise _SlowClientError

    async def drop(self, why: str, reason: str = "send_queue_full") -> None:
        """Cut a client that does not read: close with a reason, abort, stop its tasks.

        The close frame (code 1013, "try again later", with ``why``) waits
        behind what the client has not read: it gets ``close_grace`` seconds
        to go out (a client that reads again sees it), then the connection is
        aborted. Counted in ``cityvisor_websocket_dropped_total`` by ``reason``.
        """
        if self.closing:
            return
        self.closing = True
        self.state.counters[f"ws_dropped:{reason}"] += 1
        self.state.counters["ws_dropped"] += 1
        log.warning("WebSocket client of %s dropped: %s", self.session.account.name, why)
        with anyio.move_on_after(self.state.close_grace, shield=True) as closing:
            await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=why.encode()[:120])
        if self.transport is not None:
            if closing.cancelled_caught:
                # Unread data would keep the kernel sending to a peer that never
                # reads: reset the connection instead of closing it gracefully.
                sock = self.transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.transport.abort()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def gone(self) -> None:
        """The client went away while we were sending: stop its tasks."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def close_going_away(self) -> None:
        """Close at server shutdown (code 1001)."""
        self.closing = True
        with anyio.move_on_after(1.0):
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

    # -- feeds ---------------------------------------------------------------

    async def _feed_points(
        self, patterns: tuple[str, ...], generation: int, scope: anyio.CancelScope
    ) -> None:
        counters = self.state.counters
        with scope:
            try:
                async with self.hub.points.subscribe(
                    *patterns,
                    max_buffer=self.state.ws_buffer,
                    only=self.visibility.point_filter,
                    only_key=self.visibility.point_filter_key,
                ) as subscription:
                    first = await subscription.receive()
                    assert isinstance(first, Resync)
                    parts = _snapshot_messages("snapshot", generation, first.snapshot)
                    with contextlib.closing(parts):  # its texts are let go even if cancelled
                        for text in parts:
                            await self.send(text)
                            await anyio.lowlevel.checkpoint()
                    del first, parts
                    # From here the watch's sender writes the batches this
                    # screen can take at once; the loop below receives the
                    # rest (a slow screen's, a resync, what piled up).
                    fanout = self.state.fanout
                    with fanout.serving(subscription, self, generation, scope):
                        async for message in subscription:
                            texts = _coalesce(message, subscription, generation, counters)
                            with contextlib.closing(texts):
                                for out in texts:
                                    await self.send(out)
                                    if not isinstance(out, bytes):  # parts of a resync
                                        await anyio.lowlevel.checkpoint()
            except _SlowClientError:
                await self.drop(f"send queue full for {self.state.send_timeout:g} s: not reading")
            except ConnectionResetError:
                self.gone()

    async def _feed_alarms(self, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                async with self.hub.alarms.subscribe() as subscription:
                    async for message in subscription:
                        text = self._alarm_text(message)
                        if text is not None:
                            await self.send(text)
            except _SlowClientError:
                await self.drop(f"send queue full for {self.state.send_timeout:g} s: not reading")
            except ConnectionResetError:
                self.gone()

    def _alarm_text(self, message: AlarmResync | AlarmEvent) -> str | None:
        """The message's JSON text for this client; None if it may not read it.

        A client that reads everything shares the text with every other such
        client; one limited to its zones gets its own (filtered, with its counts).
        """
        seen = self.visibility
        if isinstance(message, AlarmResync) and message.lost:
            self.state.counters["ws_alarm_resyncs"] += 1
        if isinstance(message, AlarmEvent) and not self._sees_event(message):
            return None

        def build(m: AlarmResync | AlarmEvent = message) -> str:
            counts = self.hub.alarms.counts_by_priority(seen.zone_filter)
            if isinstance(m, AlarmResync):
                shown = m.alarms if seen.everything else [a for a in m.alarms if seen.sees_alarm(a)]
                return _dumps({"type": "alarms", "alarms": shown, "counts": counts, "lost": m.lost})
            return _dumps(
                {
                    "type": "alarm",
                    "event": m.transition.as_json(),
                    "alarm": m.alarm,
                    "counts": counts,
                }
            )

        return _alarm_texts.get(message, build) if seen.everything else build()

    def _sees_event(self, event: AlarmEvent) -> bool:
        seen = self.visibility
        if seen.everything:
            return True
        if event.alarm is not None:
            return seen.sees_alarm(event.alarm)
        data = event.transition.data
        if data.get("device_id"):
            return seen.sees_device(data["device_id"])
        return seen.sees_zone(data.get("zone"))

    async def _watch_session(self) -> None:
        """End the connection when the session ends (logout, expiry, password change)."""
        sessions = self.state.sessions
        while True:
            await anyio.sleep(max(1.0, sessions.recheck))
            if not await sessions.still_valid(self.session):
                with contextlib.suppress(_SlowClientError, ConnectionResetError):
                    await self.send(_dumps({"type": "session_ended"}))
                with anyio.move_on_after(1.0):
                    await self.ws.close(code=SESSION_ENDED, message=b"session ended")
                if self._tg is not None:
                    self._tg.cancel_scope.cancel()
                return

    # -- client messages -----------------------------------------------------

    def _spend(self) -> bool:
        """A token bucket: 10 messages a second, bursts of 20."""
        now = time.monotonic()
        self._budget = min(20.0, self._budget + (now - self._budget_at) * 10.0)
        self._budget_at = now
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True

    async def _error(self, code: str, message: str) -> None:
        await self.send(_dumps({"type": "error", "error": code, "message": message}))

    async def handle(self, text: str) -> None:
        """Act on one message from the client."""
        if not self._spend():
            await self._error("too_many_messages", "slow down: at most 10 messages a second")
            return
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            await self._error("bad_json", "messages must be JSON objects")
            return
        if not isinstance(message, dict):
            await self._error("bad_message", "messages must be JSON objects")
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send(_dumps({"type": "pong", "ts": now_ms()}))
        elif kind == "subscribe":
            await self._subscribe(message)
        else:
            await self._error("unknown_type", 'type must be "subscribe" or "ping"')

    async def _subscribe(self, message: dict[str, Any]) -> None:
        problems = []
        points = message.get("points")
        if points is not None:
            if not isinstance(points, list) or len(points) > MAX_PATTERNS:
                problems.append(f"points must be a list of at most {MAX_PATTERNS} glob patterns")
            else:
                for pattern in points:
                    try:
                        compile_pattern(pattern)
                    except PatternError as error:
                        problems.append(f"points: {error}")
                        break
        alarms = message.get("alarms")
        if alarms is not None and not isinstance(alarms, bool):
            problems.append("alarms must be true or false")
        if points is None and alarms is None:
            problems.append("give points (a list of patterns) and/or alarms (true or false)")
        if problems:
            await self._error("invalid_request", "; ".join(problems))
            return
        if points is not None:
            self.generation += 1
            self.patterns = tuple(dict.fromkeys(points))
            if self._points_scope is not None:
                self._points_scope.cancel()
                self._points_scope = None
        if alarms is not None and alarms != self.alarms:
            self.alarms = alarms
            if self._alarms_scope is not None:
                self._alarms_scope.cancel()
                self._alarms_scope = None
        await self.send(
            _dumps(
                {
                    "type": "subscribed",
                    "sub": self.generation,
                    "points": list(self.patterns),
                    "alarms": self.alarms,
                }
            )
        )
        if points is not None and self.patterns:
            self._points_scope = anyio.CancelScope()
            self._tg.start_soon(
                self._feed_points, self.patterns, self.generation, self._points_scope
            )
        if alarms and self._alarms_scope is None:
            self._alarms_scope = anyio.CancelScope()
            self._tg.start_soon(self._feed_alarms, self._alarms_scope)

    # -- the connection ------------------------------------------------------

    async def serve(self) -> None:
        """Run the connection until the client leaves, is dropped or its session ends."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            user = self.session.user
            try:
                await self.send(
                    _dumps(
                        {
                            "type": "hello",
                            "ts": now_ms(),
                            "user": {
                                "name": user.name,
                                "role": str(user.role),
                                "zones": sorted(user.zones),
                            },
                        }
                    )
                )
                tg.start_soon(self._watch_session)
                async for message in self.ws:
                    if message.type == WSMsgType.TEXT:
                        await self.handle(message.data)
                    elif message.type == WSMsgType.BINARY:
                        await self._error("bad_message", "send JSON text messages")
            except _SlowClientError:
                await self.drop(f"send queue full for {self.state.send_timeout:g} s: not reading")
            except ConnectionResetError:
                pass
            if isinstance(self.ws.exception(), TimeoutError) and not self.closing:
                # The heartbeat's ping went unanswered: a client that reads nothing at all.
                await self.drop(
                    f"no answer to a ping within {self.state.heartbeat / 2:g} s", "no_pong"
                )
            tg.cancel_scope.cancel()


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade to the WebSocket protocol (live point changes and alarm events; see docs/api.md)."""
    state = request.app[STATE]
    session = request["session"]
    if len(state.clients) >= state.max_clients:
        raise ApiError(503, "too_many_clients", "too many WebSocket clients; try again later")
    mine = sum(1 for c in state.clients if c.session.digest == session.digest)
    if mine >= state.max_clients_per_session:
        raise ApiError(
            429, "too_many_clients", "this session has too many WebSocket connections open"
        )
    ws = web.WebSocketResponse(
        heartbeat=state.heartbeat,
        compress=False,
        max_msg_size=MAX_MESSAGE,
        writer_limit=64 * 1024,
        timeout=2.0,
    )
    await ws.prepare(request)
    if request.transport is not None:
        # Room for a few batches of a busy screen in the transport's buffer, so
        # that most sends need no lock and no deadline (see Client.send); what
        # a client may hold up stays bounded.
        request.transport.set_write_buffer_limits(high=TRANSPORT_BUFFER)
    client = Client(state, ws, session, request.transport)
    state.clients.add(client)
    try:
        await client.serve()
    except Exception:  # a bug: log it; the upgraded connection cannot carry a 500
        log.exception("WebSocket client of %s failed", session.account.name)
    finally:
        state.clients.discard(client)
        if not state.clients:
            # The last screen left: the shared texts go with it, not with the next one.
            _point_texts.clear()
            _changes_messages.clear()
        if not ws.closed and not client.closing:
            with anyio.move_on_after(1.0, shield=True):
                await ws.close()
    return ws
