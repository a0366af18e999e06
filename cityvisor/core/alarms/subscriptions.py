"""Alarm subscriptions: the events and resyncs a subscriber receives, through a bounded stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .model import Transition

if TYPE_CHECKING:  # the manager creates subscriptions: the type is only needed for hints
    from .manager import AlarmManager

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# =========================================================================== subscriptions


class AlarmEvent(NamedTuple):
    """A transition, delivered once it is in the journal, with the alarm as it is now.

    ``alarm`` is None for events about no single alarm (floods, maintenance windows).
    """

    transition: Transition
    alarm: dict[str, Any] | None


class AlarmResync(NamedTuple):
    """Every annunciated alarm: the first message, and the one after lost events."""

    alarms: list[dict[str, Any]]
    lost: int


class AlarmSubscription:
    """A consumer's feed of alarm events (an HMI's alarm list, a notifier).

    Iterate it (``async for message in sub``) to receive :class:`AlarmResync`
    (first, and after falling behind) and :class:`AlarmEvent` messages. The
    buffer is bounded: a consumer that does not keep up is marked as having
    lost events and gets a fresh :class:`AlarmResync` as soon as it has room;
    it never slows the alarm manager down. Close it (or use ``async with``).
    """

    def __init__(self, manager: AlarmManager, max_buffer: int) -> None:
        self._manager = manager
        self.max_buffer = max_buffer
        send, receive = anyio.create_memory_object_stream[AlarmEvent | AlarmResync](max_buffer)
        self._send: MemoryObjectSendStream[AlarmEvent | AlarmResync] = send
        self._receive: MemoryObjectReceiveStream[AlarmEvent | AlarmResync] = receive
        self.lost = 0
        self.overflowed = False
        self.closed = False

    async def receive(self) -> AlarmEvent | AlarmResync:
        """The next message (waits for it)."""
        return await self._receive.receive()

    def __aiter__(self) -> AlarmSubscription:
        return self

    async def __anext__(self) -> AlarmEvent | AlarmResync:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; the manager forgets the subscription."""
        if not self.closed:
            self.closed = True
            self._manager._unsubscribe(self)
            self._send.close()
            self._receive.close()

    async def __aenter__(self) -> AlarmSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _offer(self, event: AlarmEvent | None) -> None:
        """Deliver ``event`` (None: only retry a pending re-sync); never blocks."""
        try:
            if self.overflowed:
                # The snapshot already contains the effect of ``event``.
                self._send.send_nowait(AlarmResync(self._manager._annunciated_json(), self.lost))
                self.overflowed = False
                self.lost = 0
            elif event is not None:
                self._send.send_nowait(event)
        except anyio.WouldBlock:
            if not self.overflowed:
                log.warning("alarm subscriber fell behind: it will be re-synced")
            self.overflowed = True
            self.lost += event is not None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.close()
