"""The point database: live points in memory, updates with deadbands, listeners and subscribers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio

from ..patterns import compile_pattern
from .quality import Quality
from .specs import DataType, PointSpec
from .subscriptions import Batch, Resync, Subscription, _Waiter
from .values import PointValue, now_ms


class Point:
    """A point's entry in the database: its declaration, its owner and its current value."""

    __slots__ = (
        "current",
        "device_id",
        "family",
        "id",
        "member",
        "spec",
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
        self.current = PointValue(point_id, None, Quality.bad("not_connected"), 0, 0)
        self.subscribers: tuple[Subscription, ...] = ()
        self.waiters: list[_Waiter] | None = None

    def __repr__(self) -> str:
        return f"<Point {self.id} = {self.current.value!r} {self.current.quality}>"


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
        self._listeners: list[Listener] = []
        self._subscriptions: list[Subscription] = []
        self._dirty = False
        self.batch_interval = batch_interval
        self.changes = 0
        """Accepted changes since start (for metrics)."""
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
        point.subscribers = tuple(s for s in self._subscriptions if s.watches(point))
        self._points[point_id] = point
        return point

    def unregister(self, point_id: str) -> None:
        """Forget a point."""
        self._points.pop(point_id, None)

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
        points = self._points
        for point_id in compiled.filter(points):
            yield points[point_id]

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
        count = 0
        for point in points:
            current = point.current
            if current.quality == quality:
                continue
            self._accept(point, PointValue(point.id, current.value, quality, ts, ts))
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
        current = point.current
        # Identity first: nearly every update carries the shared Quality.GOOD.
        same_quality = current.quality is quality or current.quality == quality
        if same_quality and not spec.passes_deadband(current.value, value):
            return False
        if received_ts is None:
            received_ts = now_ms()
        # tuple.__new__ directly: the same PointValue without the Python-level
        # __new__ that NamedTuple generates (this runs for every accepted change).
        new = _new_tuple(
            PointValue,
            (
                point.id,
                value,
                quality,
                received_ts if source_ts is None else source_ts,
                received_ts,
            ),
        )
        self._accept(point, new)
        return True

    def _accept(self, point: Point, new: PointValue) -> None:
        point.current = new
        self.changes += 1
        for listener in self._listeners:
            listener(point, new)
        if point.subscribers:
            for sub in point.subscribers:
                sub.pending.append(new)
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
    ) -> Subscription:
        """Subscribe to the points matching any of ``patterns`` (and ``only``, if given).

        ``only`` is a further condition on each point, checked once when the
        point is matched (now, or when it is registered later): the web server
        uses it to limit a reader to the points of their zones.

        :raises PatternError: a pattern is refused (:mod:`cityvisor.core.patterns`).

        ``max_buffer`` bounds the number of undelivered batches; past it the
        subscriber is re-synced instead of buffered. The first message is a
        :class:`Resync` with the current snapshot (``lost=0``), so a consumer
        always starts from a complete picture.
        """
        if not patterns:
            raise ValueError("subscribe needs at least one pattern")
        compiled = [compile_pattern(p) for p in patterns]  # a refused pattern raises here
        send, receive = anyio.create_memory_object_stream[Batch | Resync](max_buffer)
        sub = Subscription(self, patterns, max_buffer, send, receive, only)
        self._subscriptions.append(sub)
        watched: set[str] = set()
        for pattern in compiled:
            if pattern.exact is not None:
                watched.add(pattern.exact)
            else:
                watched.update(pattern.filter(self._points))
        for point_id in watched:
            point = self._points.get(point_id)
            if point is not None and (only is None or only(point)):
                point.subscribers = (*point.subscribers, sub)
        send.send_nowait(Resync(sub.snapshot(), 0))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
            for point in self._points.values():
                if sub in point.subscribers:
                    point.subscribers = tuple(s for s in point.subscribers if s is not sub)

    def flush(self) -> None:
        """Deliver every pending change to its subscribers now (never blocks)."""
        self._dirty = False
        for sub in list(self._subscriptions):
            if sub.pending or sub.overflowed:
                sub._deliver()

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
        if predicate(point.current):
            return point.current
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


_PYTHON_TYPES: dict[DataType, type] = {
    DataType.BOOL: bool,
    DataType.INT: int,
    DataType.FLOAT: float,
    DataType.STR: str,
    DataType.ENUM: int,
}
