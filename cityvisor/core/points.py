"""Points: the live values of the city's equipment, and the database that holds them.

A *point* is one live value of one piece of equipment (a lamp's dimming level,
a port's link state). Its identity and meaning are declared once in a
:class:`PointSpec` by the device type; at run time the :class:`PointDB` keeps
its current :class:`PointValue` (value, :class:`Quality`, source and received
timestamps) and tells subscribers what changed.

Data flows one way through here: drivers call :meth:`PointDB.update`;
synchronous *listeners* (the alarm manager, the history recorder) see every
accepted change in the same call, and *subscribers* (browsers, rules) receive
batches through bounded anyio memory object streams.  A subscriber that falls
behind is never allowed to block a driver or to grow memory: it is marked as
having lost updates and, as soon as it has room again, receives a
:class:`Resync` carrying a fresh snapshot of everything it watches.

Timestamps are UTC epoch milliseconds (``int``) everywhere.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .patterns import compile_pattern

__all__ = [
    "Batch",
    "DataType",
    "Deadband",
    "PointDB",
    "PointSpec",
    "PointValue",
    "Quality",
    "QualityStatus",
    "Resync",
    "Scaling",
    "Subscription",
    "UnknownPointError",
    "now_ms",
]

log = logging.getLogger(__name__)


def now_ms() -> int:
    """The current UTC time as epoch milliseconds."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- quality


class QualityStatus(enum.IntEnum):
    """OPC UA's three quality classes, ordered from worst to best."""

    BAD = 0
    UNCERTAIN = 1
    GOOD = 2


@dataclass(frozen=True, slots=True)
class Quality:
    """How far a point's value can be trusted: good, uncertain(reason) or bad(reason).

    Reasons are short snake_case words an operator can read and a program can
    match: ``comm_failure``, ``not_connected``, ``device_failure``,
    ``out_of_service``, ``stale``, ``config_error``, ``sensor_failure``...

    >>> Quality.bad("comm_failure")
    Quality.bad('comm_failure')
    >>> Quality.good().is_good
    True
    """

    status: QualityStatus
    reason: str = ""

    GOOD: ClassVar[Quality]

    @classmethod
    def good(cls) -> Quality:
        """The one good quality (a shared instance: compare with ``is_good``)."""
        return cls.GOOD

    @classmethod
    def uncertain(cls, reason: str) -> Quality:
        """A value that is probably right but not verified (``stale``, ``last_known``...)."""
        return cls(QualityStatus.UNCERTAIN, reason)

    @classmethod
    def bad(cls, reason: str) -> Quality:
        """A value that must not be trusted, with the reason why."""
        return cls(QualityStatus.BAD, reason)

    @property
    def is_good(self) -> bool:
        """True for good quality."""
        return self.status is QualityStatus.GOOD

    @property
    def is_bad(self) -> bool:
        """True for bad quality."""
        return self.status is QualityStatus.BAD

    def __str__(self) -> str:
        name = self.status.name.lower()
        return f"{name}({self.reason})" if self.reason else name

    def __repr__(self) -> str:
        name = self.status.name.lower()
        return f"Quality.{name}({self.reason!r})" if self.reason else f"Quality.{name}()"

    def as_json(self) -> dict[str, str]:
        """``{"status": "bad", "reason": "comm_failure"}``, for the API."""
        return {"status": self.status.name.lower(), "reason": self.reason}

    @classmethod
    def parse(cls, text: str) -> Quality:
        """The inverse of ``str(quality)``: ``"bad(comm_failure)"`` -> ``Quality.bad(...)``."""
        match = re.fullmatch(r"(good|uncertain|bad)(?:\((.*)\))?", text.strip())
        if not match:
            raise ValueError(f"not a quality: {text!r}")
        status = QualityStatus[match.group(1).upper()]
        if status is QualityStatus.GOOD:
            return cls.GOOD
        return cls(status, match.group(2) or "")


Quality.GOOD = Quality(QualityStatus.GOOD)


# --------------------------------------------------------------------------- declarations


class DataType(enum.Enum):
    """The data types a point can hold."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    ENUM = "enum"

    # Members are singletons compared by identity: hash them by identity too.
    # Enum's own __hash__ is Python code, and every point update looks its type up.
    __hash__ = object.__hash__

    @classmethod
    def of(cls, python_type: Any) -> DataType:
        """Map ``bool``/``int``/``float``/``str`` (or a DataType or its name) to a DataType."""
        if isinstance(python_type, DataType):
            return python_type
        if isinstance(python_type, str):
            return cls(python_type)
        mapping = {bool: cls.BOOL, int: cls.INT, float: cls.FLOAT, str: cls.STR}
        try:
            return mapping[python_type]
        except KeyError:
            raise TypeError(f"unsupported point type {python_type!r}") from None

    @property
    def numeric(self) -> bool:
        """True for types whose history can be aggregated (min/max/avg)."""
        return self in (DataType.INT, DataType.FLOAT, DataType.BOOL, DataType.ENUM)


@dataclass(frozen=True, slots=True)
class Scaling:
    """A declared linear conversion from the equipment's raw value to engineering units.

    ``engineering = raw * factor + offset``. Build it from two known pairs with
    :meth:`linear` (``Scaling.linear(raw=(0, 1000), eng=(0.0, 100.0))``).
    """

    factor: float = 1.0
    offset: float = 0.0

    @classmethod
    def linear(cls, raw: tuple[float, float], eng: tuple[float, float]) -> Scaling:
        """The scaling that maps ``raw[0] -> eng[0]`` and ``raw[1] -> eng[1]``."""
        if raw[1] == raw[0]:
            raise ValueError("scaling needs two different raw values")
        factor = (eng[1] - eng[0]) / (raw[1] - raw[0])
        return cls(factor, eng[0] - raw[0] * factor)

    def to_engineering(self, raw: float) -> float:
        """Raw equipment value -> engineering value."""
        return raw * self.factor + self.offset

    def to_raw(self, engineering: float) -> float:
        """Engineering value -> raw equipment value (for writes)."""
        return (engineering - self.offset) / self.factor


@dataclass(frozen=True, slots=True)
class Deadband:
    """How much a numeric value must move before the change is reported.

    ``kind`` is ``"absolute"`` (in the point's unit) or ``"percent"`` (of the
    point's declared range ``maximum - minimum``, as OPC UA's percent deadband;
    of the previous value's magnitude when no range is declared).
    """

    amount: float
    kind: str = "absolute"

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "percent"):
            raise ValueError(f"deadband kind must be 'absolute' or 'percent', not {self.kind!r}")
        if self.amount < 0:
            raise ValueError("deadband must not be negative")

    @classmethod
    def percent(cls, amount: float) -> Deadband:
        """A deadband of ``amount`` % of the point's range."""
        return cls(amount, "percent")


@dataclass(frozen=True, slots=True)
class PointSpec:
    """The declaration of one point: what it is, not what it currently holds.

    Device types declare these with :func:`cityvisor.point`; the HMI, the API
    schema, ``cityvisor plugins`` and the history recorder are generated from
    them.
    """

    name: str
    dtype: DataType = DataType.FLOAT
    unit: str = ""
    writable: bool = False
    doc: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[int, str] | None = None
    deadband: Deadband | None = None
    scaling: Scaling | None = None
    minimum: float | None = None
    maximum: float | None = None
    per: str | None = None
    history: str = "default"

    def label(self, value: Any) -> str | None:
        """The label of an enum value (``None`` if the point is not an enum)."""
        if self.labels is None or value is None:
            return None
        return self.labels.get(value, str(value))

    def coerce(self, value: Any) -> Any:
        """Convert a driver's value to the point's type; raise ValueError if impossible."""
        if value is None:
            return None
        dtype = self.dtype
        if dtype is DataType.FLOAT:
            return float(value)
        if dtype is DataType.INT:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{self.name}: {value!r} is not an integer")
            return int(value)
        if dtype is DataType.BOOL:
            return bool(value)
        if dtype is DataType.ENUM:
            if isinstance(value, str) and self.labels:
                for raw, text in self.labels.items():
                    if text == value:
                        return raw
                raise ValueError(
                    f"{self.name}: {value!r} is not one of {list(self.labels.values())}"
                )
            return int(value)
        return str(value)

    def passes_deadband(self, old: Any, new: Any) -> bool:
        """True when ``new`` differs enough from ``old`` to be reported."""
        if old is None or new is None:
            return old is not new
        deadband = self.deadband
        if deadband is None or self.dtype not in (DataType.FLOAT, DataType.INT):
            return old != new
        delta = abs(new - old)
        if deadband.kind == "absolute":
            return delta > deadband.amount or (delta > 0 and deadband.amount == 0)
        if self.minimum is not None and self.maximum is not None:
            span = abs(self.maximum - self.minimum)
        else:
            span = abs(old)
        if span == 0:
            return delta > 0
        return delta * 100.0 > deadband.amount * span


# --------------------------------------------------------------------------- values


class PointValue(NamedTuple):
    """An immutable snapshot of a point: what subscribers and history receive."""

    id: str
    value: Any
    quality: Quality
    source_ts: int
    received_ts: int

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps in epoch milliseconds)."""
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        return {
            "id": self.id,
            "value": value,
            "quality": self.quality.as_json(),
            "source_ts": self.source_ts,
            "received_ts": self.received_ts,
        }


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
