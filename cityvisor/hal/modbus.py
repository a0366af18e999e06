"""Modbus HAL: shared connections, paced requests, coalesced reads, typed failures.

The layers, from the wire up:

- :class:`ModbusEndpoint`: one connection (Modbus/TCP, or RTU over a serial
  line) shared by every unit behind it. One request in flight at a time,
  a minimum interval between requests, a timeout per request, reconnection
  with capped exponential backoff. A unit's poll sends its blocks in one
  turn on the wire; a write waits for that turn only, not for every unit
  queued behind it. Failures are typed
  (:class:`ModbusExceptionError`, :class:`ModbusTimeoutError`,
  :class:`ModbusMalformedReplyError`, :class:`ModbusConnectionError`) and each
  carries the :class:`~cityvisor.core.points.Quality` it means.
- :class:`ModbusPool`: hands out endpoints by address with reference counting,
  so two cabinets behind one gateway share one TCP connection.
- :class:`ReadPlan`: the block reads that cover a set of points, merging
  neighbours of the same table within the 125-register (2000-bit) limit and a
  maximum gap. Computed once per profile and member count, never per poll.
- :class:`ModbusDevice`: one unit read through a :class:`Profile`; ``poll()``
  returns ``{relative_id: value | Quality}`` and never raises for a failed
  block, only :class:`ModbusConnectionError` when the endpoint itself is lost
  (the supervisor then restarts the driver).

A driver's ``run()`` reads::

    async with pool.tcp(config.host, config.port) as endpoint:
        cabinet = endpoint.device(config.unit, load_profile("lighting_cabinet"),
                                  members={"circuit": self.members("circuit")})
        await cabinet.poll()                 # raises ModbusConnectionError if unreachable
        task_status.started()
        async for result in cabinet.poll_every(config.period):
            self.publish(result.good)
            for quality, ids in result.by_quality().items():
                self.mark(quality, ids)

pymodbus runs on asyncio; everything here uses anyio primitives and starts no
task of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from cityvisor.core.devices import DeviceError
from cityvisor.core.points import Quality

from .modbus_profile import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    Decoder,
    Profile,
    ProfileError,
    RegisterSpec,
    Table,
    ValueType,
    bundled_profiles,
    load_profile,
)

__all__ = [
    "Block",
    "ModbusConnectionError",
    "ModbusDevice",
    "ModbusEndpoint",
    "ModbusError",
    "ModbusExceptionError",
    "ModbusMalformedReplyError",
    "ModbusPool",
    "ModbusSettings",
    "ModbusTimeoutError",
    "PollResult",
    "Profile",
    "ProfileError",
    "ReadPlan",
    "RegisterSpec",
    "SerialAddress",
    "Table",
    "TcpAddress",
    "ValueType",
    "bundled_profiles",
    "exception_quality",
    "load_profile",
]

log = logging.getLogger(__name__)


class _TimeoutsAreQualities(logging.Filter):
    """Drop pymodbus's ERROR line for each request it timed out, and each failed connection.

    The endpoint leaves the per-request timeout to pymodbus, which logs every
    one; here a timeout is a point quality (``comm_failure:timeout``), and the
    endpoint itself warns when timeouts in a row make it reopen the
    connection. A dead unit must not fill the operator's log. pymodbus logs
    an identical message again as ``Repeating....``: dropped too when what it
    repeats was.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dropping = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith("Repeating...."):
            self._dropping = message.startswith(self.DROPPED)
        return not self._dropping

    DROPPED = ("No response received after", "Failed to connect")
    """Messages the endpoint reports itself, once per outage rather than once per attempt."""


logging.getLogger("pymodbus.logging").addFilter(_TimeoutsAreQualities())


# --------------------------------------------------------------------------- errors

# Modbus exception codes: (name, quality class). Addressing and function errors
# are configuration mistakes (the profile does not match the device); gateway
# errors mean the unit behind the gateway cannot be reached, a communication
# failure; everything else is the device saying it cannot do it.
_EXCEPTION_CODES: dict[int, tuple[str, str]] = {
    1: ("illegal_function", "config_error"),
    2: ("illegal_data_address", "config_error"),
    3: ("illegal_data_value", "config_error"),
    4: ("server_device_failure", "device_failure"),
    5: ("acknowledge", "device_failure"),
    6: ("device_busy", "device_failure"),
    7: ("negative_acknowledge", "device_failure"),
    8: ("memory_parity_error", "device_failure"),
    10: ("gateway_path_unavailable", "comm_failure"),
    11: ("gateway_target_no_response", "comm_failure"),
}


def exception_quality(code: int) -> Quality:
    """The quality a Modbus exception code gives the points it concerns.

    The reason is ``<class>:<exception name>``, for example
    ``config_error:illegal_data_address`` or ``device_failure:device_busy``;
    ``reason.partition(":")[0]`` is the class.
    """
    name, kind = _EXCEPTION_CODES.get(code, (f"exception_{code}", "device_failure"))
    return Quality.bad(f"{kind}:{name}")


class ModbusError(Exception):
    """A Modbus request failed; ``quality`` is what that means for the points it read."""

    quality: Quality = Quality.bad("comm_failure")


class ModbusExceptionError(ModbusError):
    """The device answered with a Modbus exception (illegal address, busy...)."""

    def __init__(self, code: int, function_code: int, unit: int, address: int) -> None:
        self.code = code
        self.function_code = function_code
        self.unit = unit
        self.address = address
        self.quality = exception_quality(code)
        name = _EXCEPTION_CODES.get(code, (f"exception_{code}", ""))[0]
        self.name = name
        super().__init__(
            f"unit {unit} answered exception {code} ({name}) to function {function_code} "
            f"at address {address}"
        )


class ModbusTimeoutError(ModbusError):
    """No answer within the request timeout."""

    quality = Quality.bad("comm_failure:timeout")


class ModbusMalformedReplyError(ModbusError):
    """An answer that cannot be decoded, or that does not match the request."""

    quality = Quality.bad("comm_failure:malformed_reply")


class ModbusConnectionError(ModbusError, DeviceError):
    """The endpoint's connection is lost or cannot be opened.

    A :class:`~cityvisor.core.devices.DeviceError` with reason
    ``comm_failure``: raised out of a driver's ``run()``, it makes the
    supervisor mark the device's points bad and restart it. ``retry_after``
    is the time left before the endpoint (or the unit) is worth trying
    again: the supervisor waits that, not a backoff of its own.
    """

    quality = Quality.bad("comm_failure")

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        DeviceError.__init__(self, message, reason="comm_failure", retry_after=retry_after)


class _MalformedFrameError(Exception):
    """Set on pymodbus's pending response when the reply cannot be decoded."""


class _ConnectionLostError(Exception):
    """Set on pymodbus's pending response when the link drops while it waits."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A Modbus/TCP endpoint (a device or a gateway)."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialAddress:
    """A Modbus RTU line on a serial port (an RS-485 bus with its units)."""

    device: str
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.device}@{self.baudrate}{self.parity}{self.bytesize}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """How an endpoint talks to its equipment."""

    timeout: float = 1.0
    """Seconds to wait for the answer to one request."""
    connect_timeout: float = 3.0
    """Seconds to wait for a connection to open."""
    min_interval: float = 0.0
    """Seconds between the end of one request and the start of the next
    (slow gateways and RS-485 lines need a pause)."""
    min_backoff: float = 0.2
    """Seconds before the first retry after a failure: a connection refused,
    lost or closed, or a poll of a unit without a single valid answer."""
    max_backoff: float = 30.0
    """The cap of that backoff, which doubles at each failure in a row and
    starts over only when the equipment answers."""
    max_timeouts: int = 3
    """Consecutive timeouts after which the connection is closed and reopened
    (a half-open TCP connection answers nothing, ever)."""
    unreachable_after: int = 3
    """Consecutive polls of a unit without any answer after which
    :meth:`ModbusDevice.poll_every` gives up with :class:`ModbusConnectionError`."""


class _Backoff:
    """Capped exponential backoff that only a success resets.

    An endpoint keeps one for its connection and one per unit, and the pool
    keeps the endpoint between its users: a driver restarted after a failure
    finds the count where it left it, so retries slow down instead of
    starting over at the minimum after every restart.
    """

    __slots__ = ("failures", "max_delay", "min_delay", "next_at")

    def __init__(self, min_delay: float, max_delay: float) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.failures = 0
        self.next_at = -float("inf")

    def failed(self) -> float:
        """Count a failure; the delay before the next attempt."""
        self.failures += 1
        delay = min(self.max_delay, self.min_delay * 2.0 ** min(self.failures - 1, 60))
        self.next_at = anyio.current_time() + delay
        return delay

    def remaining(self) -> float:
        """Seconds left before the next attempt (0 when it may happen now)."""
        return max(0.0, self.next_at - anyio.current_time())

    def succeeded(self) -> int:
        """Start over from the minimum; how many failures there had been."""
        failures, self.failures, self.next_at = self.failures, 0, -float("inf")
        return failures


# --------------------------------------------------------------------------- read plans


# A read of each table: its function code, pymodbus's client method, bits or registers.
_READS: dict[Table, tuple[int, str, bool]] = {
    Table.COIL: (1, "read_coils", True),
    Table.DISCRETE_INPUT: (2, "read_discrete_inputs", True),
    Table.HOLDING: (3, "read_holding_registers", False),
    Table.INPUT: (4, "read_input_registers", False),
}


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` items of one table from ``address``, and the points in it."""

    table: Table
    address: int
    count: int
    points: tuple[tuple[str, RegisterSpec], ...]
    _decoders: tuple[tuple[str, int, Decoder], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _by_item: tuple[tuple[tuple[str, int, Decoder], ...], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    request: tuple[int, str, bool] = field(init=False, repr=False, compare=False)
    """The read's function code, pymodbus's client method for it, and whether it reads bits."""

    def __post_init__(self) -> None:
        # Resolved once per plan, never per poll: see RegisterSpec.decoder().
        decoders = tuple(
            (point_id, spec.address - self.address, spec.decoder())
            for point_id, spec in self.points
        )
        object.__setattr__(self, "_decoders", decoders)
        # For each item of the block, the points that use it (none in a gap).
        by_item: list[list[tuple[str, int, Decoder]]] = [[] for _ in range(self.count)]
        for (_point_id, spec), decoder in zip(self.points, decoders, strict=True):
            start = spec.address - self.address
            for item in range(start, start + spec.width):
                by_item[item].append(decoder)
        object.__setattr__(self, "_by_item", tuple(tuple(users) for users in by_item))
        object.__setattr__(self, "request", _READS[self.table])

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> dict[str, Any]:
        """The value of every point of the block, from the block's raw items."""
        return {point_id: decode(raw, start) for point_id, start, decode in self._decoders}

    def decode_changes(
        self, before: Sequence[int] | Sequence[bool], raw: Sequence[int] | Sequence[bool]
    ) -> dict[str, Any]:
        """The value of the points whose items differ between two reads of the block.

        Decoding is a pure function of a point's items: the others would
        decode as they did from ``before``. Comparing items costs less than
        decoding them, and what is not decoded is not offered either.
        """
        by_item = self._by_item
        # The changed items' indexes, found without a Python step per item.
        changed = itertools.compress(range(self.count), map(operator.ne, before, raw))
        return {
            point_id: decode(raw, start)
            for item in changed
            for point_id, start, decode in by_item[item]
        }


class ReadPlan:
    """The block reads that cover a set of points, neighbours merged.

    Points of one table are sorted by address and joined into one block while
    the hole between them is at most ``max_gap`` items (registers read for
    nothing, a good trade against a round trip) and the block stays within
    ``max_registers`` registers (``max_bits`` bits for coils and discrete
    inputs). Points that share a register (bits of a status word) share it.
    Build a plan once per profile and member count; reuse it for every poll
    and every unit of that model.
    """

    def __init__(
        self,
        specs: Mapping[str, RegisterSpec],
        *,
        max_gap: int = 8,
        max_registers: int = MAX_READ_REGISTERS,
        max_bits: int = MAX_READ_BITS,
    ) -> None:
        if not 1 <= max_registers <= MAX_READ_REGISTERS:
            raise ValueError(f"max_registers must be within 1..{MAX_READ_REGISTERS}")
        if not 1 <= max_bits <= MAX_READ_BITS:
            raise ValueError(f"max_bits must be within 1..{MAX_READ_BITS}")
        self.max_gap = max_gap
        self.max_registers = max_registers
        self.max_bits = max_bits
        blocks: list[Block] = []
        for table in Table:
            entries = sorted(
                ((pid, spec) for pid, spec in specs.items() if spec.table is table),
                key=lambda item: (item[1].address, item[1].end),
            )
            blocks.extend(self._coalesce(table, entries))
        self.blocks: tuple[Block, ...] = tuple(blocks)

    @classmethod
    def for_profile(
        cls,
        profile: Profile,
        members: Mapping[str, int | Sequence[str]] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> ReadPlan:
        """The plan of a profile, with the profile's gap and size limits.

        Plans are kept on the profile: every unit of one model with the same
        members shares one plan, computed once.
        """
        wanted = None if only is None else tuple(only)
        key = (
            tuple(
                (kind, count if isinstance(count, int) else tuple(count))
                for kind, count in sorted((members or {}).items())
            ),
            wanted,
        )
        cached = profile.cache.get(key)
        if isinstance(cached, ReadPlan):
            return cached
        specs = profile.resolve(members)
        if wanted is not None:
            missing = [p for p in wanted if p not in specs]
            if missing:
                raise KeyError(f"profile {profile.name} has no points {missing}")
            specs = {p: specs[p] for p in wanted}
        info = profile.info
        plan = cls(
            specs,
            max_gap=info.max_gap,
            max_registers=info.max_registers,
            max_bits=info.max_bits,
        )
        profile.cache[key] = plan
        return plan

    def _coalesce(self, table: Table, entries: list[tuple[str, RegisterSpec]]) -> list[Block]:
        limit = self.max_bits if table.is_bit else self.max_registers
        blocks: list[Block] = []
        start = end = 0
        members: list[tuple[str, RegisterSpec]] = []
        for point_id, spec in entries:
            if spec.width > limit:
                raise ValueError(f"{point_id} is wider than one read ({spec.width} > {limit})")
            if (
                members
                and spec.address - end <= self.max_gap
                and max(end, spec.end) - start <= limit
            ):
                end = max(end, spec.end)
                members.append((point_id, spec))
                continue
            if members:
                blocks.append(Block(table, start, end - start, tuple(members)))
            start, end, members = spec.address, spec.end, [(point_id, spec)]
        if members:
            blocks.append(Block(table, start, end - start, tuple(members)))
        return blocks

    @property
    def points(self) -> int:
        """How many points the plan reads."""
        return sum(len(b.points) for b in self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return f"<ReadPlan {self.points} points in {len(self.blocks)} requests>"


# --------------------------------------------------------------------------- poll results


class PollResult(dict[str, Any]):
    """``{relative_id: value}``, where a point that could not be read holds its bad Quality.

    ``good`` and ``bad`` split it; :meth:`by_quality` groups the failed ids
    for ``DeviceType.mark``. ``requests`` counts the requests the poll sent.

    ``changed`` holds the good values whose registers changed since the
    device's previous poll (every good value on the first poll, after its
    block failed, and for a poll of a plan other than the device's own): a
    value not in it read exactly as it did last time. ``failed``
    is :meth:`by_quality`, filled as the poll went.
    """

    requests: int = 0
    errors: list[ModbusError]
    changed: dict[str, Any]
    failed: dict[Quality, list[str]]

    def __init__(self) -> None:
        super().__init__()
        self.errors = []
        self.changed = {}
        self.failed = {}

    @property
    def good(self) -> dict[str, Any]:
        """The points that were read, with their values."""
        return {k: v for k, v in self.items() if not isinstance(v, Quality)}

    @property
    def bad(self) -> dict[str, Quality]:
        """The points that were not read, with the reason."""
        return {k: v for k, v in self.items() if isinstance(v, Quality)}

    def by_quality(self) -> dict[Quality, list[str]]:
        """The failed points grouped by quality (``{Quality.bad("comm_failure:timeout"): [...]}``)."""
        groups: dict[Quality, list[str]] = {}
        for point_id, value in self.items():
            if isinstance(value, Quality):
                groups.setdefault(value, []).append(point_id)
        return groups

    @property
    def answered(self) -> bool:
        """True if the unit answered at least one request validly (even with an exception).

        Timeouts and replies that are not Modbus (garbage, truncated frames,
        a reply to another request) are not answers: a unit that gives only
        those is as good as gone.
        """
        failed = self.failed
        if not failed:
            return True
        if sum(map(len, failed.values())) < len(self):
            return True
        return any(not q.reason.startswith("comm_failure") for q in failed)

    @property
    def device_fault(self) -> ModbusExceptionError | None:
        """The exception the unit answered when it refused every point of the poll, else None.

        A unit that answers every request with an exception (server device
        failure, busy...) is reachable but useless: its driver raises the
        device's fault alarm instead of its communication alarm.
        """
        failed, errors = self.failed, self.errors
        if not failed or not errors or sum(map(len, failed.values())) < len(self):
            return None
        if not all(isinstance(error, ModbusExceptionError) for error in errors):
            return None  # a timeout or a garbled reply among them: not the device's answer
        first = errors[0]
        assert isinstance(first, ModbusExceptionError)
        return first


# --------------------------------------------------------------------------- endpoint

# A retry this close to its time is made (after the wait), not refused: the
# supervisor sleeps exactly the retry_after it was given, give or take the clock.
_ON_TIME = 0.05

# What a request can raise besides a ModbusError: pymodbus's errors and our guards'.
_PYMODBUS_FAILURES = (
    ModbusIOException,
    ConnectionException,
    _ConnectionLostError,
    _MalformedFrameError,
)


class ModbusEndpoint:
    """One connection to a Modbus/TCP device or gateway (or a serial RTU line).

    Every unit behind it shares the connection. Requests are serialised (one
    in flight: many gateways cannot take more), spaced by
    ``settings.min_interval``, and each bounded by ``settings.timeout``. The
    connection opens on the first request; when it drops or cannot be
    opened, requests raise :class:`ModbusConnectionError` and the next
    attempt waits ``min_backoff * 2**n`` seconds (at most ``max_backoff``):
    the same endpoint recovers by itself when the equipment comes back.
    Each unit has such a backoff too, for the polls it does not answer. The
    counts survive the endpoint's users (the pool keeps the endpoint), so a
    restarted driver does not start over at the minimum; only an answer
    resets them, never a connection that opens and then says nothing.

    Who gets the wire, and for how long:

    - a **unit poll** (:meth:`read_blocks`, what :meth:`ModbusDevice.poll`
      sends) holds the wire for all the blocks of that unit, sent back to
      back (still paced), and only then lets the next unit in: taking the
      turn and the safety-net deadline are paid once per unit, not per
      request;
    - polls queue for their turn behind one another, in order, but a
      **write** (and a single :meth:`read`) queues only behind the turn on
      the wire, never behind the other polls waiting: a command waits at
      most one unit poll, however many units share the gateway.

    Timeouts: each request's answer is awaited by pymodbus itself, with
    ``settings.timeout`` (its ``asyncio.wait_for`` after sending, the
    same span this class would time: the wire is ours, pymodbus's own
    lock never waits). Around each turn an anyio deadline covering every
    request's pause and timeout (and one connection attempt) is the safety
    net: should pymodbus ever not time out, the turn still ends, as
    timeouts.

    Get one from :class:`ModbusPool`; the pool closes it when its last user
    leaves.
    """

    def __init__(
        self, address: TcpAddress | SerialAddress, settings: ModbusSettings | None = None
    ) -> None:
        self.address = address
        self.settings = settings or ModbusSettings()
        self.requests_sent = 0
        """Requests sent since creation (for tests and benchmarks)."""
        self.requests_by_function: Counter[int] = Counter()
        """Requests sent, by function code."""
        self.connections = 0
        """Connections opened since creation."""
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # The wire: whoever has the turn sends (see _take_turn). Commands and
        # polls wait in separate queues so that a command passes the polls.
        self._busy = False
        self._waiting_commands: deque[anyio.Event] = deque()
        self._waiting_polls: deque[anyio.Event] = deque()
        self._in_flight = False
        # Pacing needs the clock around every request; without it, skip the clock.
        self._paced = self.settings.min_interval > 0
        self._last_end = -float("inf")
        # The connection's backoff, and each unit's (see _Backoff): only an
        # answer resets them, not a connection that opens and then says nothing.
        self._link = _Backoff(self.settings.min_backoff, self.settings.max_backoff)
        self._units: dict[int, _Backoff] = {}
        self._timeouts = 0
        self._reopened = False
        self._refs = 0

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<ModbusEndpoint {self.address} {state}, {self.requests_sent} requests>"

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._client is not None and self._client.connected

    # -- connection -------------------------------------------------------

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # pymodbus's own reconnection (reconnect_delay) runs in a task nobody
        # owns and its retries hide timeouts: both are off, this class does them.
        # Its timeout is the connection's until connected, then each request's
        # (see _wire_timeout).
        address = self.address
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(address, TcpAddress):
            client = AsyncModbusTcpClient(
                address.host,
                port=address.port,
                reconnect_delay=0,
                timeout=self.settings.connect_timeout,
                retries=0,
                trace_connect=self._on_connection_change,
            )
        else:
            client = AsyncModbusSerialClient(
                address.device,
                framer=FramerType.RTU,
                baudrate=address.baudrate,
                parity=address.parity,
                stopbits=address.stopbits,
                bytesize=address.bytesize,
                reconnect_delay=0,
                timeout=self.settings.connect_timeout,
                retries=0,
                trace_connect=self._on_connection_change,
            )
        # A dead unit behind a live gateway must not close the connection the
        # other units share: this class decides when to drop it (max_timeouts).
        client.set_max_no_responses(1_000_000)
        self._guard_decoding(client, tcp=isinstance(address, TcpAddress))
        return client

    @staticmethod
    def _wire_timeout(
        client: AsyncModbusTcpClient | AsyncModbusSerialClient, seconds: float
    ) -> None:
        """Set the one timeout pymodbus has, read at each use.

        pymodbus 3.x waits ``comm_params.timeout_connect`` of its transaction
        manager both for a connection to open and for each answer: this
        endpoint sets it to ``connect_timeout`` before connecting and to
        ``timeout`` once connected, so each keeps its own meaning.
        """
        client.ctx.comm_params.timeout_connect = seconds

    @staticmethod
    def _guard_decoding(
        client: AsyncModbusTcpClient | AsyncModbusSerialClient, *, tcp: bool
    ) -> None:
        """Turn an undecodable reply into an error for the pending request.

        pymodbus raises out of the protocol's ``data_received`` when a reply
        cannot be decoded (asyncio then kills the connection), and silently
        waits for more when the bytes are not a Modbus/TCP frame at all: both
        would leave the request to its timeout. Failing it at once, with a
        precise reason, is better for the operator.
        """
        manager = client.ctx
        original = manager.callback_data

        def fail(reason: str) -> None:
            future = manager.response_future
            if not future.done():
                future.set_exception(_MalformedFrameError(reason))

        def callback_data(data: bytes, addr: tuple[Any, ...] | None = None) -> int:
            if tcp and len(data) >= 4 and (data[2] or data[3]):
                # The MBAP protocol id is always 0: these bytes are not Modbus/TCP.
                fail(f"not a Modbus/TCP frame: {data[:8].hex(' ')}...")
                return len(data)
            try:
                return original(data, addr)
            except ModbusIOException as exc:
                fail(str(exc))
                return len(data)

        manager.callback_data = callback_data  # type: ignore[method-assign]

    def _on_connection_change(self, connected: bool) -> None:
        """pymodbus's trace_connect: runs in the event loop when the link goes up or down."""
        client = self._client
        if connected or not self._in_flight or client is None:
            return
        # Fail the request in flight now rather than at its timeout. pymodbus
        # made this future for it (synchronously, when it was sent); a reply that
        # arrived before the link dropped has completed it and is kept.
        future = client.ctx.response_future
        if not future.done():
            future.set_exception(_ConnectionLostError())

    async def connect(self) -> None:
        """Open the connection now (requests also open it when needed).

        Raises :class:`ModbusConnectionError` if it cannot be opened, or if
        the backoff after the last failure has not elapsed yet.
        """
        async with self._command_turn():
            await self._ensure_connected()

    # -- turns on the wire ------------------------------------------------

    async def _take_turn(self, queue: deque[anyio.Event]) -> None:
        """Wait in ``queue`` until the wire is handed over to this task.

        Only called while the wire is busy (a free wire is taken by setting
        ``_busy``, without waiting: no trip through the event loop).
        """
        handed = anyio.Event()
        queue.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self._end_turn()  # handed over as we were cancelled: pass it on
            else:
                queue.remove(handed)
            raise

    def _end_turn(self) -> None:
        """Hand the wire to the first command waiting, else to the first poll, else free it.

        The wire stays busy while it is handed over, so that nobody slips in
        between; it is free only when nobody waits.
        """
        if self._waiting_commands:
            self._waiting_commands.popleft().set()
        elif self._waiting_polls:
            self._waiting_polls.popleft().set()
        else:
            self._busy = False

    @contextlib.asynccontextmanager
    async def _command_turn(self) -> AsyncIterator[None]:
        """A turn on the wire for a command (a write, a single read): ahead of the polls."""
        if self._busy:
            await self._take_turn(self._waiting_commands)
        else:
            self._busy = True
        try:
            yield
        finally:
            self._end_turn()

    async def _ensure_connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        client = self._client
        if client is None:
            client = self._client = self._make_client()
        if client.connected:
            return client
        wait = self._link.remaining()
        if wait > _ON_TIME:
            raise ModbusConnectionError(
                f"{self.address} is unreachable; next attempt in {wait:.1f} s",
                retry_after=wait,
            )
        if wait > 0:  # a retry that comes when told to, give or take the clock
            await anyio.sleep(wait)
        opened = False
        self._wire_timeout(client, self.settings.connect_timeout)
        with anyio.move_on_after(self.settings.connect_timeout):
            opened = await client.connect()
        if opened and client.connected:
            self._wire_timeout(client, self.settings.timeout)
            self._timeouts = 0
            self.connections += 1
            return client
        client.close()
        delay = self._link_failed("cannot connect")
        raise ModbusConnectionError(f"cannot connect to {self.address}", retry_after=delay)

    def _link_failed(self, what: str) -> float:
        """Count a failure of the connection; the delay before the next attempt.

        One warning when the endpoint starts failing, not one per retry: the
        retries of an outage are debug lines.
        """
        delay = self._link.failed()
        level = logging.WARNING if self._link.failures == 1 else logging.DEBUG
        log.log(
            level,
            "modbus %s: %s (attempt %d); retrying with backoff, next attempt in %.1f s",
            self.address,
            what,
            self._link.failures,
            delay,
        )
        return delay

    def _link_answered(self) -> None:
        """A reply came: the connection works again (called only while it was failing)."""
        self._reopened = False
        failures = self._link.succeeded()
        if failures:
            log.info("modbus %s: answering again after %d failed attempts", self.address, failures)

    def _unit_backoff(self, unit: int) -> _Backoff:
        """The backoff of one unit behind this endpoint (kept as long as the endpoint)."""
        backoff = self._units.get(unit)
        if backoff is None:
            backoff = self._units[unit] = _Backoff(
                self.settings.min_backoff, self.settings.max_backoff
            )
        return backoff

    def retry_after(self, unit: int) -> float:
        """Seconds before it is worth trying ``unit`` again (its backoff or the connection's)."""
        backoff = self._units.get(unit)
        unit_wait = backoff.remaining() if backoff is not None else 0.0
        return max(self._link.remaining(), unit_wait)

    def close(self) -> None:
        """Close the connection (the next request opens it again)."""
        self._timeouts = 0
        if self._client is not None:
            self._client.close()

    # -- requests ---------------------------------------------------------

    def _safety_net(self, requests: int) -> anyio.CancelScope:
        """A deadline for a turn on the wire: later than any of its requests can end.

        Every request paced and timed out by pymodbus, plus one connection
        attempt and one timeout's slack. Never reached while pymodbus keeps
        its own timeout; if it is, the turn ends as a timeout.
        """
        settings = self.settings
        span = settings.connect_timeout + (requests + 1) * (
            settings.timeout + settings.min_interval
        )
        return anyio.CancelScope(deadline=anyio.current_time() + span)

    def _timed_out(self) -> None:
        """Count a timeout; after ``max_timeouts`` in a row, drop the connection."""
        self._timeouts += 1
        if self._timeouts >= self.settings.max_timeouts:
            # Said once until something answers again, not at every reopening.
            log.log(
                logging.DEBUG if self._reopened else logging.WARNING,
                "modbus %s: %d timeouts in a row, reopening the connection",
                self.address,
                self._timeouts,
            )
            self._reopened = True
            self.close()

    def _net_caught(self, unit: int, function_code: int, address: int) -> ModbusTimeoutError:
        """The error of a request the safety net ended (pymodbus did not time it out)."""
        self._timed_out()
        return ModbusTimeoutError(
            f"unit {unit}: no answer to function {function_code} at {address} "
            f"within the turn's deadline"
        )

    async def _prepare(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """Before a request: wait out the pacing interval, (re)connect if needed."""
        if self._paced:
            pause = self._last_end + self.settings.min_interval - anyio.current_time()
            if pause > 0:
                await anyio.sleep(pause)
        client = self._client
        if client is None or not client.connected:
            client = await self._ensure_connected()
        return client

    def _failure(self, exc: Exception, unit: int, function_code: int, address: int) -> ModbusError:
        """The ModbusError for what pymodbus (or our guards) raised out of a request."""
        if isinstance(exc, _ConnectionLostError):
            what = f"connection lost during a request to unit {unit}"
            delay = self._link_failed(what)
            return ModbusConnectionError(f"{self.address}: {what}", retry_after=delay)
        if isinstance(exc, ConnectionException):
            delay = self._link_failed(str(exc))
            return ModbusConnectionError(f"{self.address}: {exc}", retry_after=delay)
        if isinstance(exc, _MalformedFrameError):
            return ModbusMalformedReplyError(f"unit {unit}: undecodable reply: {exc}")
        if "No response" in str(exc):  # pymodbus's per-request timeout
            self._timed_out()
            return ModbusTimeoutError(
                f"unit {unit}: no answer to function {function_code} at {address} "
                f"within {self.settings.timeout:g} s"
            )
        return ModbusMalformedReplyError(f"unit {unit}: {exc}")

    @staticmethod
    def _refusal(response: ModbusPDU, unit: int, function_code: int, address: int) -> ModbusError:
        """The error of an answer that is an exception response, or not to this request."""
        if response.isError():
            code = getattr(response, "exception_code", 0)
            return ModbusExceptionError(code, function_code, unit, address)
        return ModbusMalformedReplyError(
            f"unit {unit}: function {response.function_code} answered "
            f"a request for function {function_code}"
        )

    async def _request(
        self, function_code: int, unit: int, address: int, method: str, *args: Any, **kwargs: Any
    ) -> ModbusPDU:
        """Send one request and return its (non-exception) response, or raise a ModbusError.

        The caller holds the wire and a safety net. ``method`` names the
        pymodbus client method, called with ``args`` and ``kwargs``. (Reads,
        the hot path, have their own copy of this in :meth:`_read_in_turn`.)
        """
        client = self._client
        if self._paced or client is None or not client.connected:
            client = await self._prepare()
        self.requests_sent += 1
        self.requests_by_function[function_code] += 1
        self._in_flight = True
        try:
            response: ModbusPDU = await getattr(client, method)(*args, **kwargs)
        except _PYMODBUS_FAILURES as exc:
            raise self._failure(exc, unit, function_code, address) from None
        finally:
            self._in_flight = False
            if self._paced:
                self._last_end = anyio.current_time()
        self._timeouts = 0
        if self._link.failures or self._reopened:
            self._link_answered()
        if response.isError() or response.function_code != function_code:
            raise self._refusal(response, unit, function_code, address)
        return response

    async def _read_in_turn(
        self, unit: int, blocks: Sequence[Block]
    ) -> list[list[Any] | ModbusError]:
        """Send the reads of ``blocks`` back to back; the caller has the turn on the wire.

        What :meth:`read_blocks` returns, under a safety net. Each request is
        :meth:`_request` inlined, with the reply's length checked: this runs
        for every block of every poll, and each layer of calls shows in the
        cost.
        """
        replies: list[list[Any] | ModbusError] = []
        block = None
        with self._safety_net(len(blocks)) as net:
            for block in blocks:
                function_code, method, is_bit = block.request
                address, count = block.address, block.count
                client = self._client
                if self._paced or client is None or not client.connected:
                    client = await self._prepare()
                self.requests_sent += 1
                self.requests_by_function[function_code] += 1
                self._in_flight = True
                try:
                    response: ModbusPDU = await getattr(client, method)(
                        address, count=count, device_id=unit
                    )
                except _PYMODBUS_FAILURES as exc:
                    failure = self._failure(exc, unit, function_code, address)
                    if isinstance(failure, ModbusConnectionError):
                        raise failure from None
                    replies.append(failure)
                    if isinstance(failure, ModbusTimeoutError):
                        break  # the rest is not sent: see read_blocks()
                    continue
                finally:
                    self._in_flight = False
                    if self._paced:
                        self._last_end = anyio.current_time()
                self._timeouts = 0
                if self._link.failures or self._reopened:
                    self._link_answered()
                if response.isError() or response.function_code != function_code:
                    replies.append(self._refusal(response, unit, function_code, address))
                    continue
                # Bits arrive in whole bytes; registers exactly as asked. Anything else
                # is a reply that does not match its own byte count or the request.
                # (pymodbus builds fresh lists per reply: registers are not copied.)
                items: list[Any] = response.bits if is_bit else response.registers  # type: ignore[assignment]
                if len(items) != (-(-count // 8) * 8 if is_bit else count):
                    replies.append(
                        ModbusMalformedReplyError(
                            f"unit {unit}: {len(items)} items in the reply to a read of "
                            f"{count} at {address}"
                        )
                    )
                    continue
                replies.append(items[:count] if is_bit else items)
        if net.cancelled_caught and block is not None:
            replies.append(self._net_caught(unit, block.request[0], block.address))
        return replies

    async def _read_one(self, unit: int, table: Table, address: int, count: int) -> list[Any]:
        """One read, raising its error; the caller has the turn on the wire."""
        (reply,) = await self._read_in_turn(unit, (Block(table, address, count, ()),))
        if isinstance(reply, ModbusError):
            raise reply
        return reply

    async def read_blocks(
        self, unit: int, blocks: Sequence[Block]
    ) -> list[list[Any] | ModbusError]:
        """Read the blocks of one unit in one turn on the wire: what a unit poll sends.

        Returns, in order, each block's raw items (``list[int]`` or
        ``list[bool]``, exactly ``count`` long) or the :class:`ModbusError`
        it met. After a timeout the rest is not sent (a unit that did not
        answer one request will not answer the next; waiting for each would
        make one dead unit slow the whole line): the list is then shorter
        than ``blocks``, its length the number of requests sent. Only
        :class:`ModbusConnectionError` is raised.

        The blocks go out back to back, paced, while other polls of this
        endpoint wait their turn; a write waits for this turn only.
        """
        # _command_turn() inlined: a context manager costs more than the rest of
        # the turn's bookkeeping.
        if self._busy:
            await self._take_turn(self._waiting_polls)
        else:
            self._busy = True
        try:
            return await self._read_in_turn(unit, blocks)
        finally:
            self._end_turn()

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[Any]:
        """Read ``count`` registers (or bits) of one table: one request.

        Returns ``list[int]`` for register tables and ``list[bool]`` for bit
        tables, exactly ``count`` long. Raises a :class:`ModbusError`. Like a
        write, it waits for the unit poll on the wire, not for the others.
        """
        if not 1 <= count <= table.max_read:
            raise ValueError(f"a read of a {table.value} table covers 1..{table.max_read} items")
        async with self._command_turn():
            return await self._read_one(unit, table, address, count)

    async def _write(
        self, function_code: int, unit: int, address: int, method: str, *args: Any
    ) -> None:
        """One write request in its own turn on the wire."""
        async with self._command_turn():
            with self._safety_net(1):
                await self._request(
                    function_code, unit, address, method, address, *args, device_id=unit
                )
                return
            raise self._net_caught(unit, function_code, address)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Write one holding register (function 6)."""
        await self._write(6, unit, address, "write_register", value)

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """Write consecutive holding registers (function 16)."""
        await self._write(16, unit, address, "write_registers", list(values))

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Write one coil (function 5)."""
        await self._write(5, unit, address, "write_coil", bool(value))

    async def write_coils(self, unit: int, address: int, values: Sequence[bool]) -> None:
        """Write consecutive coils (function 15)."""
        await self._write(15, unit, address, "write_coils", [bool(v) for v in values])

    async def write(self, unit: int, spec: RegisterSpec, value: Any) -> None:
        """Write a value with the spec's type, scaling and word order.

        A 32-bit value is written as 2 registers in one request (function 16),
        a 16-bit one with function 6, a coil with function 5. A bool kept in
        a bit of a holding register is a read-modify-write of that register,
        in one turn on the wire: no other request of this endpoint between
        the read and the write.
        """
        if not spec.writable:
            raise ValueError(f"{spec.table.value} {spec.address} is not writable")
        if spec.table is Table.COIL:
            await self.write_coil(unit, spec.address, bool(value))
            return
        if spec.type is not ValueType.BOOL:
            words = [int(w) for w in spec.encode(value)]
            if len(words) == 1:
                await self.write_register(unit, spec.address, words[0])
            else:
                await self.write_registers(unit, spec.address, words)
            return
        async with self._command_turn():
            (current,) = await self._read_one(unit, spec.table, spec.address, 1)
            (word,) = spec.encode(value, current)
            with self._safety_net(1):
                await self._request(
                    6, unit, spec.address, "write_register", spec.address, int(word), device_id=unit
                )
                return
            raise self._net_caught(unit, 6, spec.address)

    def device(
        self,
        unit: int,
        profile: Profile,
        members: Mapping[str, int | Sequence[str]] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> ModbusDevice:
        """A unit behind this endpoint, read through ``profile``."""
        return ModbusDevice(self, unit, profile, members, only=only)


# --------------------------------------------------------------------------- device


class ModbusDevice:
    """One Modbus unit read and written through its profile, by relative point id.

    The read plan is computed here, once; :meth:`poll` only sends it.
    """

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        unit: int,
        profile: Profile,
        members: Mapping[str, int | Sequence[str]] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.unit = unit
        self.profile = profile
        self.specs: dict[str, RegisterSpec] = profile.resolve(members)
        """Every point of the device, by relative id."""
        self.plan = ReadPlan.for_profile(profile, members, only=only)
        # The unit's backoff: counts the polls it did not answer, reset by an answer.
        self._backoff = endpoint._unit_backoff(unit)
        self._subplans: dict[tuple[str, ...], ReadPlan] = {}
        self._decoded: dict[int, tuple[list[Any], dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"<ModbusDevice unit {self.unit} at {self.endpoint.address} ({self.profile.name})>"

    async def poll(self, plan: ReadPlan | None = None) -> PollResult:
        """Read every point of the plan once, in one turn on the endpoint's wire.

        A block that fails gives each of its points the failure's quality
        (``config_error:illegal_data_address``, ``comm_failure:timeout``...).
        After a timeout the rest of the poll is not sent (see
        :meth:`ModbusEndpoint.read_blocks`): those points get the same
        quality. Only :class:`ModbusConnectionError` is raised.
        """
        plan = plan or self.plan
        blocks = plan.blocks
        replies = await self.endpoint.read_blocks(self.unit, blocks)
        result = PollResult()
        result.requests = len(replies)
        changed = result.changed
        own_plan = plan is self.plan
        decoded = self._decoded
        failure: ModbusError | None = None
        for index, block in enumerate(blocks):
            raw = replies[index] if index < len(replies) else failure
            if isinstance(raw, ModbusError):
                if raw is not failure:
                    failure = raw
                    log.debug("modbus %s unit %d: %s", self.endpoint.address, self.unit, raw)
                    result.errors.append(raw)
                quality = raw.quality
                ids = [point_id for point_id, _spec in block.points]
                result.update(dict.fromkeys(ids, quality))
                result.failed.setdefault(quality, []).extend(ids)
                if own_plan:
                    # The points went bad: when the block reads again, even as it
                    # was, its values are news.
                    decoded.pop(index, None)
                continue
            assert raw is not None
            if not own_plan:
                values = block.decode(raw)
                result.update(values)
                changed.update(values)
                continue
            # Most registers read the same from one poll to the next: in a block of
            # the device's own plan, decode only the points whose registers changed
            # (decoding is a pure function of them); they alone are news.
            last = decoded.get(index)
            if last is None:
                values = block.decode(raw)
                changed.update(values)
            elif last[0] != raw:
                news = block.decode_changes(last[0], raw)
                values = {**last[1], **news}
                changed.update(news)
            else:
                result.update(last[1])
                continue
            decoded[index] = (raw, values)
            result.update(values)
        if result.answered:
            if self._backoff.failures:
                self._backoff.succeeded()
        else:
            self._backoff.failed()
        return result

    @property
    def retry_after(self) -> float:
        """Seconds before it is worth polling the unit again (see :class:`ModbusEndpoint`)."""
        return self.endpoint.retry_after(self.unit)

    async def read(self, *point_ids: str) -> PollResult:
        """Read only some points (their plan is computed on first use, then kept)."""
        key = tuple(sorted(point_ids))
        plan = self._subplans.get(key)
        if plan is None:
            missing = [p for p in key if p not in self.specs]
            if missing:
                raise KeyError(f"{self.profile.name} has no points {missing}")
            info = self.profile.info
            plan = ReadPlan(
                {p: self.specs[p] for p in key},
                max_gap=info.max_gap,
                max_registers=info.max_registers,
                max_bits=info.max_bits,
            )
            self._subplans[key] = plan
        return await self.poll(plan)

    async def write(self, point_id: str, value: Any) -> None:
        """Write one point by relative id (``"c1/setpoint"``), in engineering units.

        Raises :class:`ModbusError` subclasses if the write fails, KeyError
        for an unknown point and ValueError for a read-only one or a value
        out of the register's range.
        """
        try:
            spec = self.specs[point_id]
        except KeyError:
            raise KeyError(f"{self.profile.name} has no point {point_id!r}") from None
        await self.endpoint.write(self.unit, spec, value)

    async def poll_every(self, period: float) -> AsyncIterator[PollResult]:
        """Poll at a fixed rate and yield each result.

        Raises :class:`ModbusConnectionError` when the endpoint is lost, and
        when the unit has not answered a single request for
        ``settings.unreachable_after`` polls in a row (a dead unit behind a
        live gateway), so the supervisor marks the device and restarts it.
        """
        silent = 0
        next_at = anyio.current_time()
        while True:
            result = await self.poll()
            silent = 0 if result.answered else silent + 1
            if silent >= self.endpoint.settings.unreachable_after:
                raise ModbusConnectionError(
                    f"unit {self.unit} at {self.endpoint.address} has not answered "
                    f"for {silent} polls",
                    retry_after=self.retry_after,
                )
            yield result
            next_at += period
            now = anyio.current_time()
            if next_at < now:  # late (slow line): skip, never burst to catch up
                next_at = now
            await anyio.sleep(next_at - now)


# --------------------------------------------------------------------------- pool


class ModbusPool:
    """The registry of endpoints: one connection per address, shared, reference-counted.

    ``async with pool.tcp(host, port) as endpoint:`` gives the endpoint for
    that address, creating it for the first user; the last user to leave
    closes it. The hub owns one pool and every Modbus driver borrows from it,
    so the cabinets behind one gateway use one connection.
    """

    def __init__(self, settings: ModbusSettings | None = None) -> None:
        self.settings = settings or ModbusSettings()
        self._endpoints: dict[TcpAddress | SerialAddress, ModbusEndpoint] = {}

    @property
    def endpoints(self) -> Mapping[TcpAddress | SerialAddress, ModbusEndpoint]:
        """The endpoints in use, by address."""
        return {address: e for address, e in self._endpoints.items() if e._refs}

    @contextlib.asynccontextmanager
    async def endpoint(
        self, address: TcpAddress | SerialAddress, settings: ModbusSettings | None = None
    ) -> AsyncIterator[ModbusEndpoint]:
        """Borrow the endpoint of ``address`` for the duration of the block.

        ``settings`` apply when this call creates the endpoint; a shared
        endpoint keeps the settings of its first user.
        """
        endpoint = self._endpoints.get(address)
        if endpoint is None or (
            not endpoint._refs and settings is not None and settings != endpoint.settings
        ):
            endpoint = ModbusEndpoint(address, settings or self.settings)
            self._endpoints[address] = endpoint
        endpoint._refs += 1
        try:
            yield endpoint
        finally:
            endpoint._refs -= 1
            if endpoint._refs == 0:
                # Closed, but kept: a driver restarted after a failure must find
                # the backoff where it left it (the pool holds one per address).
                endpoint.close()

    def tcp(
        self, host: str, port: int = 502, *, settings: ModbusSettings | None = None
    ) -> contextlib.AbstractAsyncContextManager[ModbusEndpoint]:
        """Borrow the Modbus/TCP endpoint ``host:port``."""
        return self.endpoint(TcpAddress(host, port), settings)

    def serial(
        self,
        device: str,
        *,
        baudrate: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        settings: ModbusSettings | None = None,
    ) -> contextlib.AbstractAsyncContextManager[ModbusEndpoint]:
        """Borrow the Modbus RTU line on serial port ``device``."""
        address = SerialAddress(device, baudrate, parity, stopbits, bytesize)
        return self.endpoint(address, settings)

    def close(self) -> None:
        """Close every connection (endpoints stay usable and reopen on demand)."""
        for endpoint in self._endpoints.values():
            endpoint.close()
