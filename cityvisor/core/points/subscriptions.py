"""Subscriptions: batched changes by pattern through a bounded stream, resync for a slow consumer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..patterns import compile_pattern
from .values import PointValue

if TYPE_CHECKING:  # the database creates subscriptions: the types are only needed for hints
    from .database import Point, PointDB

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- subscriptions


class Batch(NamedTuple):
    """Changes delivered to a subscriber in one go, oldest first."""

    changes: list[PointValue]


class Resync(NamedTuple):
    """Sent after a subscriber lost updates: everything it watches, as it is now.

    ``lost`` counts the changes that could not be delivered.
    """

    snapshot: list[PointValue]
    lost: int


class Subscription:
    """A consumer's view of the points that match its patterns.

    Iterate it (``async for message in sub``) to receive :class:`Batch` and
    :class:`Resync` messages. Use it as an async context manager, or call
    :meth:`close`, so the database forgets it.
    """

    def __init__(
        self,
        db: PointDB,
        patterns: Sequence[str],
        max_buffer: int,
        send: MemoryObjectSendStream[Batch | Resync],
        receive: MemoryObjectReceiveStream[Batch | Resync],
        only: Callable[[Point], bool] | None = None,
    ) -> None:
        self._db = db
        self.patterns = tuple(patterns)
        self.only = only
        """A further condition on the points watched (a reader's zones), or None."""
        self._compiled = [compile_pattern(p) for p in self.patterns]
        self.max_buffer = max_buffer
        self._send = send
        self._receive = receive
        self.pending: list[PointValue] = []
        self.lost = 0
        self.overflowed = False
        self.closed = False

    def matches(self, point_id: str) -> bool:
        """True if one of the patterns matches ``point_id``."""
        return any(pattern.matches(point_id) for pattern in self._compiled)

    def watches(self, point: Point) -> bool:
        """True if ``point`` matches a pattern and the ``only`` condition."""
        return self.matches(point.id) and (self.only is None or self.only(point))

    def snapshot(self) -> list[PointValue]:
        """The current values of every point this subscription watches."""
        return [p.current for p in self._db.points() if self in p.subscribers]

    async def receive(self) -> Batch | Resync:
        """The next message (waits for it)."""
        return await self._receive.receive()

    def receive_nowait(self) -> Batch | Resync:
        """The next message if one is waiting; raise ``anyio.WouldBlock`` if none is.

        Lets a consumer that fell behind take every waiting batch at once.
        """
        return self._receive.receive_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Batch | Resync:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; the database drops the subscription."""
        if not self.closed:
            self.closed = True
            self._db._unsubscribe(self)
            self._send.close()
            self._receive.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self) -> None:
        """Push pending changes, or a resync once there is room again (never blocks)."""
        if self.overflowed:
            try:
                self._send.send_nowait(Resync(self.snapshot(), self.lost))
            except anyio.WouldBlock:
                self.lost += len(self.pending)
                self.pending = []
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.close()
                return
            self.overflowed = False
            self.lost = 0
            self.pending = []
            return
        if not self.pending:
            return
        batch = Batch(self.pending)
        try:
            self._send.send_nowait(batch)
        except anyio.WouldBlock:
            self.overflowed = True
            self.lost += len(self.pending)
            log.warning(
                "subscriber %s fell behind: %d updates lost, it will be re-synced",
                self.patterns,
                self.lost,
            )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.close()
            return
        self.pending = []


class _Waiter:
    __slots__ = ("event", "predicate", "result")

    def __init__(self, predicate: Callable[[PointValue], bool]) -> None:
        self.predicate = predicate
        self.event = anyio.Event()
        self.result: PointValue | None = None
