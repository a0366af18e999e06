"""Subscriptions: batched changes by pattern through a bounded stream, resync for a slow consumer."""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import anyio
import anyio.lowlevel

from ..patterns import compile_pattern
from .values import PointValue, State, json_of, value_of

if TYPE_CHECKING:  # the database creates subscriptions: the types are only needed for hints
    from .database import Point, PointDB

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- subscriptions


class Batch(NamedTuple):
    """Changes delivered to a subscriber in one go, oldest first."""

    changes: list[PointValue]


class Snapshot(Sequence[PointValue]):
    """The values of a watch's points at one moment: a read-only sequence of :class:`PointValue`.

    Every subscriber that joins before the next delivery receives the same
    snapshot. It holds the database's own states of the points (no new
    object per point, none the garbage collector walks; decision 0022) and
    gives each as a :class:`PointValue` when it is read.
    """

    __slots__ = ("states",)

    def __init__(self, states: list[State]) -> None:
        self.states = states
        """The points' states, in the watch's order (:data:`~.values.State`)."""

    def __len__(self) -> int:
        return len(self.states)

    @overload
    def __getitem__(self, index: int) -> PointValue: ...

    @overload
    def __getitem__(self, index: slice) -> list[PointValue]: ...

    def __getitem__(self, index: int | slice) -> PointValue | list[PointValue]:
        if isinstance(index, slice):
            return list(map(value_of, self.states[index]))
        return value_of(self.states[index])

    def __iter__(self) -> Iterator[PointValue]:
        return map(value_of, self.states)

    def as_json(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """:meth:`PointValue.as_json` of the values from ``start`` to ``stop``, read straight
        from the states (what the WebSocket sends)."""
        return list(map(json_of, self.states[start:stop]))

    def __repr__(self) -> str:
        return f"<Snapshot of {len(self.states)} points>"


class Resync(NamedTuple):
    """Sent after a subscriber lost updates: everything it watches, as it is now.

    ``lost`` counts the changes that could not be delivered.
    """

    snapshot: Snapshot
    lost: int


class Watch:
    """The points that match one pattern set (and one ``only`` condition), shared.

    Every subscription to the same patterns (and the same ``only_key``) joins
    one watch: the points hold the watch, not each subscriber, so a change is
    appended once whatever the number of screens showing it, a new screen
    joins in constant time, and the snapshot is built once and handed to
    every subscriber that joins before the next delivery.
    """

    __slots__ = (
        "_partial",
        "_snapshot",
        "_snapshot_at",
        "building",
        "compiled",
        "joining",
        "key",
        "members",
        "only",
        "patterns",
        "pending",
        "points",
    )

    def __init__(
        self,
        key: tuple[object, ...],
        patterns: tuple[str, ...],
        only: Callable[[Point], bool] | None,
    ) -> None:
        self.key = key
        self.patterns = patterns
        self.compiled = [compile_pattern(p) for p in patterns]
        self.only = only
        self.points: dict[str, Point] = {}
        """The points watched, by id."""
        self.members: list[Subscription] = []
        self.pending: list[PointValue] = []
        """Changes since the last delivery, oldest first."""
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0
        self.building: Iterator[Point] | None = None
        """The points still to attach while the watch is being built, in slices; None once built."""
        self.joining = 0
        """Subscribers waiting for the watch (or its snapshot) to be ready."""
        self._partial: tuple[list[Point], list[State]] | None = None

    def matches(self, point_id: str) -> bool:
        """True if one of the patterns matches ``point_id``."""
        return any(pattern.matches(point_id) for pattern in self.compiled)

    def watches(self, point: Point) -> bool:
        """True if ``point`` matches a pattern and the ``only`` condition."""
        return self.matches(point.id) and (self.only is None or self.only(point))

    def snapshot(self) -> Snapshot:
        """The current values of the points watched: one snapshot shared until the next delivery."""
        if self._snapshot is None:
            if self._partial is not None:  # being read in slices: finish it now
                self.snapshot_step(len(self._partial[0]))
            else:
                self._snapshot = Snapshot(list(map(_state, self.points.values())))
                self._snapshot_at = len(self.pending)
        assert self._snapshot is not None
        return self._snapshot

    def snapshot_step(self, count: int) -> bool:
        """Read up to ``count`` more values of the snapshot; True once it is complete.

        A snapshot of many points is read a slice at a time with turns of
        the loop in between. Its changes are held meanwhile (:meth:`deliver`
        waits), so that a subscriber that joins receives every change made
        since the first slice: some of them a value the snapshot already
        shows, none lost.
        """
        if self._snapshot is not None:
            return True
        if self._partial is None:
            self._partial = (list(self.points.values()), [])
            self._snapshot_at = len(self.pending)
        points, values = self._partial
        start = len(values)
        values.extend(map(_state, points[start : start + count]))
        if len(values) < len(points):
            return False
        self._snapshot = Snapshot(values)
        self._partial = None
        return True

    @property
    def held(self) -> bool:
        """True while the snapshot is read in slices (deliveries wait)."""
        return self._partial is not None

    def join(self, sub: Subscription) -> Snapshot:
        """Add ``sub`` and return its first snapshot.

        It skips the pending changes that the snapshot already shows, and
        receives the ones made since the snapshot was taken.
        """
        snapshot = self.snapshot()
        sub._skip = self._snapshot_at
        self.members.append(sub)
        return snapshot

    def deliver(self) -> None:
        """Hand the pending changes to every member (never blocks)."""
        if self._partial is not None:
            return  # a snapshot is being read: its changes wait for it
        changes = self.pending
        if changes:
            self.pending = []
            self._snapshot = None
        for sub in list(self.members):
            if changes or sub.overflowed:
                sub._deliver(changes)

    def __repr__(self) -> str:
        return f"<Watch {self.patterns} {len(self.points)} points, {len(self.members)} subscribers>"


_state = operator.attrgetter("state")


class Subscribing:
    """A subscription on its way: await it, or use it as an async context manager.

    :meth:`PointDB.subscribe` checks the patterns at once (a refused one
    raises there) and returns this. Awaiting it builds the shared watch if
    no other subscriber holds it yet, a slice of points at a time with a
    turn of the loop between slices, so that subscribing to the whole city
    never holds everything else up; ``async with`` does the same and closes
    the subscription on the way out.
    """

    __slots__ = ("_db", "_key", "_max_buffer", "_only", "_patterns", "_subscription")

    def __init__(
        self,
        db: PointDB,
        key: tuple[Hashable, ...],
        patterns: tuple[str, ...],
        only: Callable[[Point], bool] | None,
        max_buffer: int,
    ) -> None:
        self._db = db
        self._key = key
        self._patterns = patterns
        self._only = only
        self._max_buffer = max_buffer
        self._subscription: Subscription | None = None

    async def _open(self) -> Subscription:
        if self._subscription is not None:
            raise RuntimeError("this subscription was opened already")
        self._subscription = await self._db._open(
            self._key, self._patterns, self._only, self._max_buffer
        )
        return self._subscription

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._open().__await__()

    async def __aenter__(self) -> Subscription:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        if self._subscription is not None:
            self._subscription.close()


class Subscription:
    """A consumer's view of the points that match its patterns.

    Iterate it (``async for message in sub``) to receive :class:`Batch` and
    :class:`Resync` messages. Use it as an async context manager, or call
    :meth:`close`, so the database forgets it. ``await db.subscribe(...)``
    (or ``async with db.subscribe(...) as sub``) gives one.
    """

    def __init__(self, db: PointDB, watch: Watch, max_buffer: int) -> None:
        self._db = db
        self.watch = watch
        """The shared set of points this subscription receives."""
        self.patterns = watch.patterns
        self.only = watch.only
        """A further condition on the points watched (a reader's zones), or None."""
        self.max_buffer = max_buffer
        # A bounded queue and one event while the consumer waits: what a
        # memory object stream does, without its turn of the loop and its
        # exception for every message (this runs per screen, per delivery).
        self._queue: deque[Batch | Resync] = deque()
        self._wakeup: anyio.Event | None = None
        self._notify: Callable[[Subscription], None] | None = None
        self._skip = 0
        self.lost = 0
        self.overflowed = False
        self.closed = False

    def matches(self, point_id: str) -> bool:
        """True if one of the patterns matches ``point_id``."""
        return self.watch.matches(point_id)

    def watches(self, point: Point) -> bool:
        """True if ``point`` matches a pattern and the ``only`` condition."""
        return self.watch.watches(point)

    def snapshot(self) -> Snapshot:
        """The current values of every point this subscription watches (shared, read-only)."""
        return self.watch.snapshot()

    async def receive(self) -> Batch | Resync:
        """The next message (waits for it).

        :raises anyio.ClosedResourceError: the subscription is closed.
        """
        queue = self._queue
        while not queue:
            if self.closed:
                raise anyio.ClosedResourceError
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        if self.closed:
            raise anyio.ClosedResourceError
        await anyio.lowlevel.checkpoint_if_cancelled()
        return queue.popleft()

    def receive_nowait(self) -> Batch | Resync:
        """The next message if one is waiting; raise ``anyio.WouldBlock`` if none is.

        Lets a consumer that fell behind take every waiting batch at once
        (:attr:`waiting` says how many there are).
        """
        if self.closed:
            raise anyio.ClosedResourceError
        if not self._queue:
            raise anyio.WouldBlock
        return self._queue.popleft()

    @property
    def waiting(self) -> int:
        """Messages delivered and not received yet."""
        return len(self._queue)

    # -- serving a waiting consumer from elsewhere (one sender for many) -----

    def defer(self, notify: Callable[[Subscription], None] | None) -> None:
        """Let another task serve the batches this subscription's consumer waits for.

        While ``notify`` is set, a :class:`Batch` delivered while the consumer
        waits in :meth:`receive` does not wake it: ``notify(self)`` is called
        instead, from the delivery (it must not block). The notified party
        then takes the batch (:meth:`deferred`, then :meth:`receive_nowait`),
        or hands it back with :meth:`wake`. A resync, a batch delivered while
        the consumer is busy, and :meth:`close` reach the consumer as before.
        ``defer(None)`` ends it, and wakes the consumer if a batch waits.

        The web server uses it to write one delivery to every screen of a
        watch from one task, instead of each screen's task waking for it.
        """
        self._notify = notify
        if notify is None:
            self.wake()

    def deferred(self) -> Batch | None:
        """The batch the consumer was not woken for, if it is all that is queued; else None.

        It stays queued: :meth:`receive_nowait` takes it.
        """
        queue = self._queue
        if self._wakeup is None or self.closed or len(queue) != 1:
            return None
        message = queue[0]
        return message if isinstance(message, Batch) else None

    def wake(self) -> None:
        """Wake the consumer if it waits in :meth:`receive` and a message is queued for it."""
        if self._queue and self._wakeup is not None:
            self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Batch | Resync:
        try:
            return await self.receive()
        except anyio.ClosedResourceError:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; the database drops the subscription."""
        if not self.closed:
            self.closed = True
            self._db._unsubscribe(self)
            self._queue.clear()
            self._wake()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def _put(self, message: Batch | Resync) -> bool:
        """Queue ``message`` for the consumer; False if its buffer is full."""
        if len(self._queue) >= self.max_buffer:
            return False
        self._queue.append(message)
        if self._wakeup is not None:
            if self._notify is not None and type(message) is Batch:
                self._notify(self)  # served by another task, or handed back (see defer)
            else:
                self._wake()
        return True

    def _deliver(self, changes: list[PointValue]) -> None:
        """Push ``changes`` (shared with the watch's other members), or a resync (never blocks)."""
        if self.closed:
            return
        if self._skip:
            changes = changes[self._skip :]
            self._skip = 0
        if self.overflowed:
            if not self._put(Resync(self.watch.snapshot(), self.lost)):
                self.lost += len(changes)
                return
            self.overflowed = False
            self.lost = 0
            return
        if not changes:
            return
        if not self._put(Batch(changes)):
            self.overflowed = True
            self.lost += len(changes)
            log.warning(
                "subscriber %s fell behind: %d updates lost, it will be re-synced",
                self.patterns,
                self.lost,
            )


class _Waiter:
    __slots__ = ("event", "predicate", "result")

    def __init__(self, predicate: Callable[[PointValue], bool]) -> None:
        self.predicate = predicate
        self.event = anyio.Event()
        self.result: PointValue | None = None
