"""The Modbus endpoint: one shared connection, one request in flight, turns per unit, reconnection with backoff."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from ..modbus_profile import (
    Profile,
    RegisterSpec,
    Table,
    ValueType,
)
from .device import ModbusDevice
from .errors import (
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionError,
    ModbusMalformedReplyError,
    ModbusTimeoutError,
    _ConnectionLostError,
    _MalformedFrameError,
)
from .plan import Block
from .settings import ModbusSettings, SerialAddress, TcpAddress, _Backoff

log = logging.getLogger(__name__)


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
