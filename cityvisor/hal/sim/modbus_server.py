"""A Modbus/TCP server whose register map comes from a profile: the base of the simulators.

:class:`ModbusSimulator` runs a real pymodbus server (one unit per simulated
device, as a gateway with several cabinets would) whose registers are laid
out by the same profile file the client reads, and a *tick* that moves the
simulated equipment along: subclasses implement :meth:`ModbusSimulator.tick`,
reading what clients wrote (coils, holding registers) and writing what the
equipment measures.

It counts the requests it receives (by unit and function code) and the
connections it accepts, so tests can prove coalescing and endpoint sharing
from the server's side, and it can be told to answer "device busy".

Use it as an async context manager: the server listens on entry (``port=0``
picks a free port, see :attr:`ModbusSimulator.port`), and everything stops
on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cityvisor.hal.modbus_profile import Profile, RegisterSpec, Table, load_profile

__all__ = ["ModbusSimulator", "run_simulator_cli"]

log = logging.getLogger(__name__)

# Function codes the pymodbus datastore uses to address each table directly.
_READ_CODE = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}
_WRITE_CODE = {Table.COIL: 15, Table.DISCRETE_INPUT: 2, Table.HOLDING: 16, Table.INPUT: 4}

# Addresses past the last mapped point stay readable for this many items, then
# the device answers "illegal data address" like real equipment does.
_SPARE = 16


class ModbusSimulator:
    """Base class of the Modbus equipment simulators.

    ``units`` are the Modbus unit ids served (one simulated device each);
    ``members`` the member counts given to the profile (``{"circuit": 8}``).
    ``tick`` is the period of the simulation step in seconds; ``seed`` makes
    random behaviour repeatable. With ``serial`` (a serial port or pty path)
    it speaks Modbus RTU on that line instead of listening on TCP.
    """

    kind = "modbus"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        profile: Profile | str,
        units: Sequence[int],
        members: Mapping[str, int] | None = None,
        tick: float = 0.05,
        seed: int | None = None,
        serial: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.serial = serial
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.units = list(units)
        if not self.units or len(set(self.units)) != len(self.units):
            raise ValueError("give one or more distinct unit ids")
        if not all(1 <= u <= 247 for u in self.units):
            raise ValueError("Modbus unit ids are 1..247")
        self.members = dict(members or {})
        self.specs: dict[str, RegisterSpec] = self.profile.resolve(self.members)
        self.tick_period = tick
        self.random = random.Random(seed)
        self.requests: Counter[tuple[int, int]] = Counter()
        """Requests received, by (unit, function code)."""
        self.connections = 0
        """Client connections accepted since start."""
        self.open_connections = 0
        """Client connections open now."""
        self.ticks = 0
        self._busy: set[int] = set()
        self._internal = False
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._stack: AsyncExitStack | None = None
        self._tick_event = anyio.Event()

    # -- life cycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            devices = [self._sim_device(unit) for unit in self.units]
            self._server = (
                ModbusTcpServer(
                    devices,
                    address=(self.host, self.port),
                    trace_pdu=self._trace_pdu,
                    trace_connect=self._trace_connect,
                )
                if self.serial is None
                else ModbusSerialServer(
                    devices,
                    port=self.serial,
                    framer=FramerType.RTU,
                    trace_pdu=self._trace_pdu,
                    trace_connect=self._trace_connect,
                )
            )
            await self._server.serve_forever(background=True)
            # The server's close is a plain call: registered first, it runs last.
            stack.push_async_callback(self._server.shutdown)
            sockets = getattr(self._server.transport, "sockets", None) or []
            if self.serial is None and sockets:
                self.port = sockets[0].getsockname()[1]
            for unit in self.units:
                await self.setup(unit)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            group.start_soon(self._run, name=f"{self.kind} simulator ticks")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        where = self.serial or f"{self.host}:{self.port}"
        log.info("%s simulator on %s, units %s", self.kind, where, self.units)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def serve_forever(self) -> None:
        """Run until cancelled (for ``main()`` and the demo)."""
        async with self:
            await anyio.sleep_forever()

    async def _run(self) -> None:
        last = anyio.current_time()
        while True:
            await anyio.sleep(self.tick_period)
            now = anyio.current_time()
            for unit in self.units:
                await self.tick(unit, now - last)
            last = now
            self.ticks += 1
            event, self._tick_event = self._tick_event, anyio.Event()
            event.set()

    async def next_tick(self, count: int = 1) -> None:
        """Wait until ``count`` more simulation steps have been applied."""
        for _ in range(count):
            await self._tick_event.wait()

    # -- to implement -----------------------------------------------------

    async def setup(self, unit: int) -> None:
        """Write a unit's initial register values (called once, before clients connect)."""

    async def tick(self, unit: int, dt: float) -> None:
        """Advance one unit's simulation by ``dt`` seconds."""

    # -- registers through the profile --------------------------------------

    async def get(self, unit: int, point_id: str) -> Any:
        """A point's value as a client would read it (decoded, scaled)."""
        spec = self.specs[point_id]
        raw = await self._datastore_get(unit, spec.table, spec.address, spec.width)
        return spec.decode(raw)

    async def set(self, unit: int, point_id: str, value: Any) -> None:
        """Set a point's registers (encoded as the profile says), as the equipment would."""
        spec = self.specs[point_id]
        current = 0
        if not spec.table.is_bit and spec.bit is not None:
            (current,) = await self._datastore_get(unit, spec.table, spec.address, 1)
        await self._datastore_set(unit, spec.table, spec.address, spec.encode(value, current))

    async def raw(self, unit: int, table: Table, address: int, count: int = 1) -> list[Any]:
        """The raw registers (or bits) of a unit, for tests that check the wire layout."""
        return await self._datastore_get(unit, table, address, count)

    async def _datastore_get(self, unit: int, table: Table, address: int, count: int) -> list[Any]:
        assert self._server is not None, "the simulator is not running"
        self._internal = True
        try:
            return list(await self._server.async_getValues(unit, _READ_CODE[table], address, count))
        finally:
            self._internal = False

    async def _datastore_set(
        self, unit: int, table: Table, address: int, values: Sequence[Any]
    ) -> None:
        assert self._server is not None, "the simulator is not running"
        self._internal = True
        try:
            await self._server.async_setValues(unit, _WRITE_CODE[table], address, list(values))
        finally:
            self._internal = False

    # -- faults and counters ----------------------------------------------

    def set_busy(self, unit: int, busy: bool = True) -> None:
        """Make a unit answer every request with exception 6 (server device busy)."""
        if busy:
            self._busy.add(unit)
        else:
            self._busy.discard(unit)

    def request_count(self, unit: int | None = None, function_code: int | None = None) -> int:
        """Requests received, optionally for one unit and/or one function code."""
        return sum(
            n
            for (u, fc), n in self.requests.items()
            if (unit is None or u == unit) and (function_code is None or fc == function_code)
        )

    def reset_counters(self) -> None:
        """Forget the requests counted so far."""
        self.requests.clear()

    # -- pymodbus plumbing --------------------------------------------------

    def _sim_device(self, unit: int) -> SimDevice:
        # Separate tables (the 4-tuple form), each from address 0 to past the
        # last mapped item; coils and discrete inputs are then bit-addressed.
        sizes = dict.fromkeys(Table, 0)
        for spec in self.specs.values():
            sizes[spec.table] = max(sizes[spec.table], spec.end)

        def block(table: Table) -> list[SimData]:
            size = sizes[table] + _SPARE
            if table.is_bit:
                size = -(-size // 16) * 16
                return [SimData(0, count=size, values=False, datatype=DataType.BITS)]
            return [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]

        return SimDevice(
            unit,
            simdata=(
                block(Table.COIL),
                block(Table.DISCRETE_INPUT),
                block(Table.HOLDING),
                block(Table.INPUT),
            ),
            # The action hook is not told which unit is addressed: bind it.
            action=functools.partial(self._action, unit),
        )

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # pymodbus calls this for every datastore access, the simulator's own
        # included: only requests from the network may be refused.
        if self._internal:
            return None
        if unit in self._busy:
            return ExcCodes.DEVICE_BUSY
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[(pdu.dev_id, pdu.function_code)] += 1
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self.connections += 1
            self.open_connections += 1
        else:
            self.open_connections = max(0, self.open_connections - 1)


def run_simulator_cli(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    build: Callable[[argparse.Namespace], ModbusSimulator],
    argv: Sequence[str] | None = None,
) -> int:
    """The blocking entry point shared by the simulators' ``main()``.

    Parses ``--host``, ``--port``, ``--seed`` and the simulator's own
    options, then serves until interrupted (Ctrl-C).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (0: any free port)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random behaviour")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    simulator = build(args)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(simulator.serve_forever, backend="asyncio")
    return 0
