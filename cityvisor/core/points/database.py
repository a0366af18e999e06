"""The point database: live points in memory, updates with deadbands, listeners and subscribers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from ..patterns import Pattern, compile_pattern
from .index import PointIndex
from .quality import Quality
from .specs import DataType, PointSpec
from .subscriptions import Resync, Subscribing, Subscription, Watch, _Waiter
from .values import PointValue, State, now_ms, quality_code, quality_of, value_of


class Point:
    """A point's entry in the database: its declaration, its owner and its current value."""

    __slots__ = (
        "device_id",
        "family",
        "id",
        "member",
        "spec",
        "state",
        "subscribers",
        "waiters",
        "zone",
    )

    def __init__(
        self,
        point_id: str,
        spec: PointSpec,
        *,
        device_id: str = "",
        zone: str = "",
        family: str = "",
        member: str | None = None,
    ) -> None:
        self.id = point_id
        self.spec = spec
        self.device_id = device_id
        self.zone = zone
        self.family = family
        self.member = member
        self.state: State = (point_id, None, quality_code(_NOT_CONNECTED), 0, 0)
        """The current value as the database keeps it (read :attr:`current` instead)."""
        self.subscribers: tuple[Watch, ...] = ()
        """The watches (shared pattern sets) that include this point."""
        self.waiters: list[_Waiter] | None = None

    @property
    def current(self) -> PointValue:
        """The current value, quality and timestamps (a new :class:`PointValue` at each read)."""
        return value_of(self.state)

    def __repr__(self) -> str:
        return f"<Point {self.id} = {self.state[1]!r} {quality_of(self.state[2])}>"


class UnknownPointError(KeyError):
    """Raised when a point id is not in the database."""

    def __str__(self) -> str:
        return f"unknown point {self.args[0]!r}"


# --------------------------------------------------------------------------- the database

Listener = Callable[[Point, PointValue], None]


class PointDB:
    """Current values of every point, change listeners and glob subscriptions.

    Writes are synchronous and cheap so that drivers and benchmarks can push
    hundreds of thousands of changes per second; delivery to subscribers is
    batched by :meth:`run` (every ``batch_interval`` seconds) or by an explicit
    :meth:`flush`.

    Listeners (``add_listener``) are called synchronously with every accepted
    change: they must be fast and must not block (the alarm manager and the
    history recorder are listeners; they defer their I/O to their own tasks).
    """

    def __init__(self, *, batch_interval: float = 0.05) -> None:
        self._points: dict[str, Point] = {}
        self._index: PointIndex[Point] = PointIndex()
        self._listeners: list[Listener] = []
        self._watches: dict[tuple[object, ...], Watch] = {}
        self._idle: list[Watch] = []
        self._dirty = False
        self.batch_interval = batch_interval
        self.changes = 0
        """Accepted changes since start (for metrics)."""
        self.registered = 0
        """Points registered since start (removed ones included)."""
        self._wake: anyio.Event | None = None

    # -- registry ---------------------------------------------------------

    def register(
        self,
        point_id: str,
        spec: PointSpec,
        *,
        device_id: str = "",
        zone: str = "",
        family: str = "",
        member: str | None = None,
    ) -> Point:
        """Add a point (initially ``bad(not_connected)``) and return its entry."""
        if point_id in self._points:
            raise ValueError(f"point {point_id!r} is already registered")
        point = Point(point_id, spec, device_id=device_id, zone=zone, family=family, member=member)
        watches = tuple(w for w in self._watches.values() if w.watches(point))
        point.subscribers = watches
        for watch in watches:
            watch.points[point_id] = point
        self._points[point_id] = point
        self._index.add(point)
        self.registered += 1
        return point

    def unregister(self, point_id: str) -> None:
        """Forget a point."""
        point = self._points.pop(point_id, None)
        if point is not None:
            self._index.remove(point_id)
            for watch in point.subscribers:
                watch.points.pop(point_id, None)
            point.subscribers = ()

    def get(self, point_id: str) -> Point:
        """The entry of a point; raise :class:`UnknownPointError` if there is none."""
        try:
            return self._points[point_id]
        except KeyError:
            raise UnknownPointError(point_id) from None

    def value(self, point_id: str) -> PointValue:
        """The current value of a point."""
        return self.get(point_id).current

    def __contains__(self, point_id: object) -> bool:
        return point_id in self._points

    def __len__(self) -> int:
        return len(self._points)

    def points(self, pattern: str | None = None) -> Iterator[Point]:
        """Every point, or those matching a pattern (:mod:`cityvisor.core.patterns`).

        Every point comes in the order registered; those of a pattern come
        branch by branch from the index (a point before the points under it).

        :raises PatternError: the pattern is refused (too long, too many wildcards).
        """
        if pattern is None:
            yield from self._points.values()
            return
        compiled = compile_pattern(pattern)
        if compiled.exact is not None:
            point = self._points.get(compiled.exact)
            if point is not None:
                yield point
            return
        yield from self._index.match(compiled)

    def iterate(self, pattern: str | Pattern, after: str | None = None) -> Iterator[Point]:
        """The points of ``pattern`` one at a time, in :meth:`points`' order; with
        ``after`` (an id given before), only those after it (a listing's cursor).

        Lazy: a caller may give the loop a turn between points, so that even
        the whole city is listed without holding everything else up.

        :raises PatternError: the pattern is refused.
        """
        compiled = compile_pattern(pattern) if isinstance(pattern, str) else pattern
        return self._index.iterate(compiled, after)

    def of_device(self, device_id: str) -> list[Point]:
        """The points of one device."""
        return [p for p in self._points.values() if p.device_id == device_id]

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(point, new_value)`` synchronously for every accepted change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # -- writes -----------------------------------------------------------

    def update(
        self,
        point_id: str,
        value: Any,
        quality: Quality = Quality.GOOD,
        source_ts: int | None = None,
        *,
        received_ts: int | None = None,
    ) -> bool:
        """Set a point's value; return True if the change was accepted.

        A change is accepted when the quality changes, or the value passes the
        point's deadband (any change for non-numeric types). Rejected changes
        still refresh nothing: the point keeps its last reported value, which
        is what subscribers and history saw.
        """
        point = self._points.get(point_id)
        if point is None:
            raise UnknownPointError(point_id)
        return self._apply(point, value, quality, source_ts, received_ts)

    def update_point(
        self,
        point: Point,
        value: Any,
        quality: Quality = Quality.GOOD,
        source_ts: int | None = None,
    ) -> bool:
        """Like :meth:`update` for a point entry already in hand (the fast path)."""
        return self._apply(point, value, quality, source_ts, None)

    def update_many(
        self, changes: Iterable[tuple[str, Any]], quality: Quality = Quality.GOOD
    ) -> int:
        """Set many values with one timestamp; return how many were accepted."""
        ts = now_ms()
        accepted = 0
        points = self._points
        for point_id, value in changes:
            point = points.get(point_id)
            if point is None:
                raise UnknownPointError(point_id)
            if self._apply(point, value, quality, ts, ts):
                accepted += 1
        return accepted

    def set_quality(self, points: Iterable[Point], quality: Quality) -> int:
        """Change the quality of many points at once, keeping their last values.

        Used when a device is lost: every point goes ``bad(comm_failure)`` in
        one step, so nothing shows a stale value as good.
        """
        ts = now_ms()
        code = quality_code(quality)
        count = 0
        for point in points:
            state = point.state
            if state[2] == code:
                continue
            point.state = (point.id, state[1], code, ts, ts)
            self._accept(point, _new_tuple(PointValue, (point.id, state[1], quality, ts, ts)))
            count += 1
        return count

    def _apply(
        self,
        point: Point,
        value: Any,
        quality: Quality,
        source_ts: int | None,
        received_ts: int | None,
    ) -> bool:
        spec = point.spec
        if value is not None and type(value) is not _PYTHON_TYPES.get(spec.dtype):
            value = spec.coerce(value)
        state = point.state
        # Nearly every update carries the shared Quality.GOOD, whose code is 0.
        code = 0 if quality is _GOOD else quality_code(quality)
        if state[2] == code and not spec.passes_deadband(state[1], value):
            return False
        if received_ts is None:
            received_ts = now_ms()
        if source_ts is None:
            source_ts = received_ts
        point_id = point.id
        # The state: a plain tuple the collector stops tracking (decision 0022).
        point.state = (point_id, value, code, source_ts, received_ts)
        # tuple.__new__ directly: the same PointValue without the Python-level
        # __new__ that NamedTuple generates (this runs for every accepted change).
        self._accept(
            point, _new_tuple(PointValue, (point_id, value, quality, source_ts, received_ts))
        )
        return True

    def _accept(self, point: Point, new: PointValue) -> None:
        """Tell listeners, watches and waiters of ``new`` (the point's state already holds it)."""
        self.changes += 1
        for listener in self._listeners:
            listener(point, new)
        if point.subscribers:
            for watch in point.subscribers:
                watch.pending.append(new)
            if not self._dirty:
                self._dirty = True
                if self._wake is not None:
                    self._wake.set()
        if point.waiters:
            for waiter in list(point.waiters):
                if waiter.predicate(new):
                    waiter.result = new
                    waiter.event.set()
                    point.waiters.remove(waiter)

    # -- subscriptions ----------------------------------------------------

    def subscribe(
        self,
        *patterns: str,
        max_buffer: int = 16,
        only: Callable[[Point], bool] | None = None,
        only_key: Hashable | None = None,
    ) -> Subscribing:
        """Subscribe to the points matching any of ``patterns`` (and ``only``, if given).

        Await the result (``sub = await db.subscribe("centre/**")``) or use it
        as an async context manager (``async with db.subscribe(...) as sub``).
        The patterns are checked here, before anything is awaited.

        ``only`` is a further condition on each point, checked once when the
        point is matched (now, or when it is registered later): the web server
        uses it to limit a reader to the points of their zones. Subscriptions
        with the same patterns share one :class:`Watch` (its points, its
        pending changes, its snapshot); with ``only``, they share it when they
        give the same ``only_key`` (a reader's zones), and never without one.
        The first subscription of a pattern set builds its watch and its
        snapshot a slice at a time (a few milliseconds each, with a turn of
        the loop in between): whole-city screens never hold the loop long.

        :raises PatternError: a pattern is refused (:mod:`cityvisor.core.patterns`).

        ``max_buffer`` bounds the number of undelivered batches; past it the
        subscriber is re-synced instead of buffered. The first message is a
        :class:`Resync` with the current snapshot (``lost=0``), so a consumer
        always starts from a complete picture.
        """
        if not patterns:
            raise ValueError("subscribe needs at least one pattern")
        for pattern in patterns:
            compile_pattern(pattern)  # a refused pattern raises here
        unique = tuple(dict.fromkeys(patterns))
        if only is None:
            key: tuple[object, ...] = (unique, None)
        else:
            key = (unique, object() if only_key is None else ("only", only_key))
        return Subscribing(self, key, unique, only, max_buffer)

    async def _open(
        self,
        key: tuple[object, ...],
        patterns: tuple[str, ...],
        only: Callable[[Point], bool] | None,
        max_buffer: int,
    ) -> Subscription:
        """A subscription to the watch of ``key``, built (and its snapshot read) in slices."""
        watch = self._watches.get(key)
        if watch is None:
            watch = Watch(key, patterns, only)
            index = self._index
            watch.building = itertools.chain.from_iterable(
                index.iterate(pattern) for pattern in watch.compiled
            )
            self._watches[key] = watch
        if watch.building is not None or (watch._snapshot is None and len(watch.points) > _SLICE):
            watch.joining += 1
            ready = False
            try:
                while watch.building is not None:
                    if self._attach_slice(watch):
                        break
                    await anyio.lowlevel.checkpoint()
                if len(watch.points) > _SLICE:
                    await anyio.lowlevel.checkpoint()  # the snapshot in slices of its own
                while not watch.snapshot_step(_SLICE):
                    await anyio.lowlevel.checkpoint()
                ready = True
            finally:
                watch.joining -= 1
                if not ready and not watch.joining:
                    self._abandoned(watch)
        sub = Subscription(self, watch, max_buffer)
        sub._put(Resync(watch.join(sub), 0))
        if watch.pending:
            self._changed()  # changes held while the snapshot was read go out now
        return sub

    def _attach_slice(self, watch: Watch) -> bool:
        """Attach the watch to its next points for a few milliseconds; True once it is built.

        The index is walked lazily: a point registered meanwhile is attached
        by :meth:`register` (the watch is already listed), one removed
        meanwhile is skipped here.
        """
        building = watch.building
        assert building is not None
        deadline = time.perf_counter() + _SLICE_SECONDS
        points = watch.points
        live = self._points
        only = watch.only
        # Points that had the same watches share one tuple of them: no tuple
        # per point (memory, and work for the garbage collector).
        alone = (watch,)
        extended: dict[tuple[Watch, ...], tuple[Watch, ...]] = {}
        while True:
            batch = list(itertools.islice(building, _ATTACH_BATCH))
            for point in batch:
                point_id = point.id
                if point_id in points or live.get(point_id) is not point:
                    continue  # found twice (two patterns), or removed meanwhile
                if only is not None and not only(point):
                    continue
                points[point_id] = point
                before = point.subscribers
                if not before:
                    point.subscribers = alone
                    continue
                after = extended.get(before)
                if after is None:
                    after = extended[before] = (*before, watch)
                point.subscribers = after
            if len(batch) < _ATTACH_BATCH:
                break
            if time.perf_counter() > deadline:
                return False
        watch.building = None
        return True

    def _abandoned(self, watch: Watch) -> None:
        """Every subscriber waiting for ``watch`` was cancelled: release what they left."""
        watch._partial = None  # a snapshot nobody will finish; deliveries resume
        if watch.pending:
            self._changed()
        if not watch.members:
            if len(watch.points) <= _DETACH_AT_ONCE:
                watch.building = None
                self._detach(watch)
                watch.pending = []
            else:  # detached by the run task, in slices
                self._idle.append(watch)

    def _changed(self) -> None:
        """Something waits to be delivered: wake the run task."""
        if not self._dirty:
            self._dirty = True
            if self._wake is not None:
                self._wake.set()

    def _unsubscribe(self, sub: Subscription) -> None:
        watch = sub.watch
        if sub not in watch.members:
            return
        watch.members.remove(sub)
        if watch.members or watch.joining:
            return
        if len(watch.points) <= _DETACH_AT_ONCE:
            self._detach(watch)
        else:
            # A watch of many points is let go by the run task, a slice at a
            # time, so that the last screen to leave does not stall the loop;
            # a screen that comes back meanwhile finds it still there.
            self._idle.append(watch)

    def _detach(self, watch: Watch, points: Iterable[Point] | None = None) -> None:
        if self._watches.get(watch.key) is watch:
            del self._watches[watch.key]
        without: dict[tuple[Watch, ...], tuple[Watch, ...]] = {}
        for point in watch.points.values() if points is None else points:
            subscribers = point.subscribers
            if len(subscribers) == 1:
                if subscribers[0] is watch:
                    point.subscribers = ()
            else:
                after = without.get(subscribers)
                if after is None:
                    after = without[subscribers] = tuple(w for w in subscribers if w is not watch)
                point.subscribers = after

    async def _reap(self) -> None:
        """Detach the watches nobody subscribes to any more, a slice at a time."""
        idle, self._idle = self._idle, []
        for watch in idle:
            if watch.members or watch.joining:
                continue  # someone came back
            if self._watches.get(watch.key) is watch:
                del self._watches[watch.key]
            watch.building = None
            points = list(watch.points.values())
            for start in range(0, len(points), _DETACH_AT_ONCE):
                self._detach(watch, points[start : start + _DETACH_AT_ONCE])
                await anyio.lowlevel.checkpoint()
            watch.pending = []

    def release_idle(self) -> None:
        """Detach every watch nobody subscribes to, now (the run task does it in slices)."""
        idle, self._idle = self._idle, []
        for watch in idle:
            if not watch.members and not watch.joining:
                watch.building = None
                self._detach(watch)
                watch.pending = []

    def flush(self) -> None:
        """Deliver every pending change to its subscribers now (never blocks)."""
        self._dirty = False
        for watch in list(self._watches.values()):
            if watch.members:
                watch.deliver()
            elif not watch.held:
                watch.pending = []

    async def run(self) -> None:
        """Deliver batches every ``batch_interval`` seconds while there are changes.

        Run it in the hub's task group; it returns only when cancelled.
        """
        while True:
            self._wake = anyio.Event()
            if not self._dirty:
                # Wake up for new changes, and now and then to re-sync a lagging subscriber.
                with anyio.move_on_after(1.0):
                    await self._wake.wait()
            await anyio.sleep(self.batch_interval)
            self.flush()
            if self._idle:
                await self._reap()

    # -- waiting ----------------------------------------------------------

    async def wait_for(
        self,
        point_id: str,
        predicate: Callable[[PointValue], bool],
        timeout: float,
    ) -> PointValue | None:
        """Wait until the point's value satisfies ``predicate``; None on timeout.

        The current value is checked first. This is how command feedback is
        verified ("the level point reaches 40 within 10 s").
        """
        point = self.get(point_id)
        current = point.current
        if predicate(current):
            return current
        waiter = _Waiter(predicate)
        if point.waiters is None:
            point.waiters = []
        point.waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter.event.wait()
        finally:
            if point.waiters and waiter in point.waiters:
                point.waiters.remove(waiter)
        return waiter.result


_new_tuple = tuple.__new__
_GOOD = Quality.GOOD
_NOT_CONNECTED = Quality.bad("not_connected")

_DETACH_AT_ONCE = 10_000
"""Points a watch is detached from in one go (about 2 ms); more wait for the run task."""

_ATTACH_BATCH = 512
"""Points taken from the index at a time while a watch is built (the clock is read between)."""

_SLICE_SECONDS = 0.004
"""How long one slice of building a watch holds the loop, about."""

_SLICE = 10_000
"""Values of a snapshot read in one slice (a few milliseconds); a smaller one is read at once."""


_PYTHON_TYPES: dict[DataType, type] = {
    DataType.BOOL: bool,
    DataType.INT: int,
    DataType.FLOAT: float,
    DataType.STR: str,
    DataType.ENUM: int,
}
