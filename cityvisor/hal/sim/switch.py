"""A many-port network switch simulator: an SNMP agent serving IF-MIB, with traffic and traps.

:class:`SimulatedSwitch` is a real SNMP agent (a pysnmp command responder on
its own UDP port of 127.0.0.1) that answers v2c and v3 like a fibre switch:

* the system group (sysDescr, sysObjectID, sysUpTime, sysContact, sysName,
  sysLocation; the last three writable);
* IF-MIB ifTable and ifXTable for N ports (48 by default): names, speeds,
  admin/oper status, last change, 32-bit and 64-bit (HC) octet counters that
  advance with each port's simulated traffic, error counters;
* a writable ifAdminStatus: admin down takes the port's oper status down
  (and back up when enabled, if its link is up), as on real equipment;
* linkDown/linkUp traps (v2c or v3) to a receiver, on every oper change.

Faults happen on demand (:meth:`SimulatedSwitch.set_link`,
:meth:`~SimulatedSwitch.add_errors`, :meth:`~SimulatedSwitch.restart`), so a
test or the demo decides what the operators see. Many switches run in one
process, each on its own port (:func:`simulated_switches`), which is what the
switches benchmark (50 x 48 ports) uses.

The agent is :class:`~cityvisor.hal.sim.snmp_agent.SnmpAgent` over a
:class:`~cityvisor.hal.sim.snmp_agent.LiveMib`. Why a pysnmp responder
rather than snmpsim: values are computed when asked
(counters from traffic rates, status from the port's state), SETs change the
state, and traps follow; snmpsim serves recorded data files and would need
pysmi, a data file per switch and a variation module to do the same.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import ObjectReceiveStream, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from pysnmp.entity.engine import SnmpEngine
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    UdpTransportTarget,
    send_notification,
)
from pysnmp.proto import rfc1902

from cityvisor.hal.sim.snmp_agent import (
    Apply,
    LiveMib,
    Setter,
    SnmpAgent,
    bound,
    integer,
    text_of,
)
from cityvisor.hal.snmp import (
    IF_INDEX,
    LINK_DOWN,
    LINK_UP,
    SNMP_TRAP_OID,
    SYS_UPTIME,
    IfAdminStatus,
    IfOperStatus,
    UsmCredentials,
)

__all__ = ["SimulatedPort", "SimulatedSwitch", "simulated_switches"]

log = logging.getLogger(__name__)

_SYSTEM = (1, 3, 6, 1, 2, 1, 1)
_IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IF_X_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
_IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1, 0)
_SNMP_ENGINE = (1, 3, 6, 1, 6, 3, 10, 2, 1)
_SYS_OBJECT_ID = "1.3.6.1.4.1.8072.3.2.10"  # net-snmp's "linux" object, a harmless stand-in
_ETHERNET_CSMACD = 6
_WRAP32 = 1 << 32
_WRAP64 = 1 << 64


@dataclass
class SimulatedPort:
    """One port of a simulated switch: its configuration, state and traffic.

    Counters are not stored but computed: octets advance at ``in_bps`` /
    ``out_bps`` while the port is up, from the values they had at the last
    change (``_settle`` moves that base forward before any change).
    """

    index: int
    name: str
    speed: int = 1_000_000_000
    alias: str = ""
    admin_up: bool = True
    link_up: bool = True
    in_bps: float = 0.0
    out_bps: float = 0.0
    in_errors: int = 0
    out_errors: int = 0
    last_change: float = 0.0
    """Uptime (s) of the last oper status change (ifLastChange)."""
    mac: bytes = b""
    _in_octets: float = 0.0
    _out_octets: float = 0.0
    _since: float = 0.0

    @property
    def oper_status(self) -> IfOperStatus:
        """Up when enabled and the link is up, down otherwise."""
        return IfOperStatus.UP if self.admin_up and self.link_up else IfOperStatus.DOWN

    def _settle(self, uptime: float) -> None:
        if self.oper_status is IfOperStatus.UP:
            elapsed = uptime - self._since
            self._in_octets += self.in_bps * elapsed / 8
            self._out_octets += self.out_bps * elapsed / 8
        self._since = uptime

    def octets(self, uptime: float) -> tuple[int, int]:
        """(in, out) octets since the agent started, unwrapped."""
        self._settle(uptime)
        return int(self._in_octets), int(self._out_octets)


class SimulatedSwitch:
    """A network switch with ``ports`` ports, answering SNMP on ``host:port``.

    ``community`` reads, ``write_community`` reads and writes (v2c); ``users``
    read and write over v3 (authPriv). With ``trap_target``, every oper
    status change sends linkDown/linkUp there (v2c with ``trap_community``,
    or v3 with ``trap_user``). ``traffic`` is each port's initial (in, out)
    bit/s; ``counter_start`` is where octet counters start (close to 2**32
    to see 32-bit counters wrap quickly).

    Use as ``async with SimulatedSwitch(...) as switch:``; ``port=0`` picks
    a free UDP port, :attr:`address` tells which.
    """

    def __init__(
        self,
        name: str = "sw-01",
        *,
        ports: int = 48,
        host: str = "127.0.0.1",
        port: int = 0,
        community: str = "public",
        write_community: str = "private",
        users: Sequence[UsmCredentials] = (),
        trap_target: tuple[str, int] | None = None,
        trap_community: str = "public",
        trap_user: UsmCredentials | None = None,
        traffic: tuple[float, float] = (10_000_000.0, 5_000_000.0),
        counter_start: int = 0,
        speed: int = 1_000_000_000,
        location: str = "",
    ) -> None:
        if community == write_community:
            raise ValueError("the read and write communities must differ")
        self.name = name
        self.host = host
        self._requested_port = port
        self.community = community
        self.write_community = write_community
        self.users = list(users)
        self.trap_target = trap_target
        self.trap_community = trap_community
        self.trap_user = trap_user
        self.contact = "noc@example.org"
        self.location = location
        self.description = f"cityvisor simulated switch, {ports} x {speed // 1_000_000} Mbit/s"
        self.ports = [
            SimulatedPort(
                index=number,
                name=f"ge-0/0/{number}",
                speed=speed,
                in_bps=traffic[0],
                out_bps=traffic[1],
                mac=bytes([0x02, 0x00, 0x5E, 0x10, number >> 8, number & 0xFF]),
                _in_octets=float(counter_start),
                _out_octets=float(counter_start),
            )
            for number in range(1, ports + 1)
        ]
        self._started = time.monotonic()
        #: Agent restarts counted like snmpEngineBoots (1 at first start).
        self.boots = 1
        self._engine: SnmpEngine | None = None
        self._agent: SnmpAgent | None = None
        self._stack: AsyncExitStack | None = None
        self._traps: MemoryObjectSendStream[int] | None = None
        #: Traps sent and dropped (for tests and benchmarks).
        self.traps_sent = 0
        self.traps_dropped = 0
        self._mib = _switch_mib(self)

    def __repr__(self) -> str:
        return f"SimulatedSwitch({self.name!r}, {len(self.ports)} ports, {self.address})"

    @property
    def requests(self) -> int:
        """Requests answered (GET, GETNEXT, each GETBULK repetition, SET)."""
        return self._mib.requests

    @property
    def sets(self) -> int:
        """SET requests applied."""
        return self._mib.sets

    # -- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the agent answers on."""
        return self._agent.address if self._agent else (self.host, self._requested_port)

    @property
    def engine_id(self) -> bytes:
        """The agent's snmpEngineID (what a trap receiver needs for its v3 traps)."""
        if self._engine is None:
            raise RuntimeError("the switch is not running")
        return bytes(self._engine.snmpEngineID.asOctets())

    @property
    def uptime(self) -> float:
        """Seconds since the agent (re)started: sysUpTime."""
        return time.monotonic() - self._started

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            # Exit order is reversed: stop serving, then cancel the trap sender.
            stack.callback(task_group.cancel_scope.cancel)
            await self._start_agent()
            stack.callback(self._stop_agent)
            send, receive = anyio.create_memory_object_stream[int](256)
            self._traps = send
            stack.callback(send.close)
            task_group.start_soon(self._send_traps, receive)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (for ``task_group.start``)."""
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    async def _start_agent(self) -> None:
        agent = SnmpAgent(
            self._mib,
            host=self.host,
            port=self._requested_port,
            community=self.community,
            write_community=self.write_community,
            users=self.users,
        )
        await agent.start()
        self._agent = agent
        self._engine = agent.engine
        log.info("simulated switch %s answering on %s:%d", self.name, *self.address)

    def _stop_agent(self) -> None:
        agent, self._agent = self._agent, None
        self._engine = None
        if agent is not None:
            agent.stop()

    # -- the world acting on the switch

    def port(self, index: int) -> SimulatedPort:
        """The port with this ifIndex (1-based)."""
        if not 1 <= index <= len(self.ports):
            raise IndexError(f"{self.name} has no port {index}")
        return self.ports[index - 1]

    def set_link(self, index: int, up: bool) -> None:
        """Plug or unplug a port's fibre (the physical link)."""
        self._change(index, lambda port: setattr(port, "link_up", up))

    def set_admin(self, index: int, status: IfAdminStatus) -> None:
        """Enable or disable a port locally (what a SET of ifAdminStatus does)."""
        self._change(index, lambda port: setattr(port, "admin_up", status is IfAdminStatus.UP))

    def set_traffic(self, index: int, in_bps: float, out_bps: float) -> None:
        """Change a port's simulated traffic (bit/s), from now on."""
        port = self.port(index)
        port._settle(self.uptime)
        port.in_bps, port.out_bps = in_bps, out_bps

    def add_errors(self, index: int, in_errors: int = 0, out_errors: int = 0) -> None:
        """Count errors on a port (ifInErrors / ifOutErrors)."""
        port = self.port(index)
        port.in_errors += in_errors
        port.out_errors += out_errors

    def restart(self) -> None:
        """Reboot the agent: sysUpTime and every counter start again from zero."""
        self._started = time.monotonic()
        self.boots += 1
        for port in self.ports:
            port._in_octets = port._out_octets = 0.0
            port._since = 0.0
            port.in_errors = port.out_errors = 0
            port.last_change = 0.0

    def _change(self, index: int, change: Callable[[SimulatedPort], None]) -> None:
        port = self.port(index)
        uptime = self.uptime
        before = port.oper_status
        port._settle(uptime)
        change(port)
        if port.oper_status is not before:
            port.last_change = uptime
            self._queue_trap(index)

    # -- traps

    def _queue_trap(self, index: int) -> None:
        if self.trap_target is None or self._traps is None:
            return
        try:
            self._traps.send_nowait(index)
        except anyio.WouldBlock:
            self.traps_dropped += 1  # a flapping port must not grow memory

    async def _send_traps(self, receive: ObjectReceiveStream[int]) -> None:
        # One sender task, fed by a bounded stream: SET handlers and set_link()
        # are synchronous and must not wait for the network.
        async with receive:
            async for index in receive:
                if self.trap_target is not None and self._engine is not None:
                    await self._send_trap(index)

    async def _send_trap(self, index: int) -> None:
        assert self._engine is not None and self.trap_target is not None
        port = self.port(index)
        up = port.oper_status is IfOperStatus.UP
        var_binds = [
            (SYS_UPTIME, rfc1902.TimeTicks(int(self.uptime * 100) % _WRAP32)),
            (SNMP_TRAP_OID, rfc1902.ObjectIdentifier(LINK_UP if up else LINK_DOWN)),
            (f"{IF_INDEX}.{index}", rfc1902.Integer32(index)),
            (f"{_oid_text(_IF_ENTRY)}.7.{index}", rfc1902.Integer32(1 if port.admin_up else 2)),
            (f"{_oid_text(_IF_ENTRY)}.8.{index}", rfc1902.Integer32(int(port.oper_status))),
        ]
        auth = (
            self.trap_user.user_data()
            if self.trap_user is not None
            else CommunityData(self.trap_community)
        )
        target = await UdpTransportTarget.create(self.trap_target, timeout=1, retries=0)
        error, *_ = await send_notification(
            self._engine, auth, target, ContextData(), "trap", *var_binds
        )
        if error:
            log.warning("switch %s could not send a trap: %s", self.name, error)
        else:
            self.traps_sent += 1


def _oid_text(oid: Sequence[int]) -> str:
    return ".".join(str(n) for n in oid)


# --------------------------------------------------------------------------- the MIB

Getter = Callable[[float], Any]


def _switch_mib(switch: SimulatedSwitch) -> LiveMib:
    """The switch's MIB: system group, ifNumber, ifTable and ifXTable of every port.

    Values are computed when read, all of one request at the same uptime
    (taken when the request arrives), so a manager's rates never mix two
    instants.
    """
    s = switch
    entries: dict[tuple[int, ...], Getter] = {}
    entries[(*_SYSTEM, 1, 0)] = lambda _t: rfc1902.OctetString(s.description)
    entries[(*_SYSTEM, 2, 0)] = lambda _t: rfc1902.ObjectIdentifier(_SYS_OBJECT_ID)
    entries[(*_SYSTEM, 3, 0)] = lambda t: rfc1902.TimeTicks(int(t * 100) % _WRAP32)
    entries[(*_SYSTEM, 4, 0)] = lambda _t: rfc1902.OctetString(s.contact)
    entries[(*_SYSTEM, 5, 0)] = lambda _t: rfc1902.OctetString(s.name)
    entries[(*_SYSTEM, 6, 0)] = lambda _t: rfc1902.OctetString(s.location)
    entries[(*_SYSTEM, 7, 0)] = lambda _t: rfc1902.Integer32(6)  # sysServices: L2 + L3
    entries[_IF_NUMBER] = lambda _t: rfc1902.Integer32(len(s.ports))
    # SNMP-FRAMEWORK-MIB snmpEngine group: managers read the engine ID to accept v3 traps.
    entries[(*_SNMP_ENGINE, 1, 0)] = lambda _t: rfc1902.OctetString(s.engine_id)
    entries[(*_SNMP_ENGINE, 2, 0)] = lambda _t: rfc1902.Integer32(s.boots)
    entries[(*_SNMP_ENGINE, 3, 0)] = lambda t: rfc1902.Integer32(int(t))
    entries[(*_SNMP_ENGINE, 4, 0)] = lambda _t: rfc1902.Integer32(65507)
    for port in switch.ports:
        for column, getter in _port_columns(port).items():
            entries[(*column, port.index)] = getter
    setters: dict[tuple[int, ...], Setter] = {
        (*_SYSTEM, 4, 0): _text_setter(lambda value: setattr(s, "contact", value)),
        (*_SYSTEM, 5, 0): _text_setter(lambda value: setattr(s, "name", value)),
        (*_SYSTEM, 6, 0): _text_setter(lambda value: setattr(s, "location", value)),
    }
    for port in switch.ports:
        setters[(*_IF_ENTRY, 7, port.index)] = _admin_setter(switch, port.index)
        setters[(*_IF_X_ENTRY, 18, port.index)] = _text_setter(
            functools.partial(setattr, port, "alias")
        )
    now = [0.0]

    def on_request() -> None:
        now[0] = s.uptime

    mib = LiveMib(tables=_TABLE_ENTRIES, on_request=on_request)
    for instance, getter in entries.items():
        mib.add(instance, bound(lambda getter: getter(now[0]), getter), setters.get(instance))
    return mib


_TABLE_ENTRIES = (_IF_ENTRY, _IF_X_ENTRY)


def _text_setter(apply: Callable[[str], None]) -> Setter:
    def setter(value: Any) -> Apply:
        if not isinstance(value, rfc1902.OctetString):
            raise TypeError("an OCTET STRING is expected")
        text = text_of(value)
        return lambda: apply(text)

    return setter


def _admin_setter(switch: SimulatedSwitch, index: int) -> Setter:
    def setter(value: Any) -> Apply:
        status = integer(value)
        if status not in (IfAdminStatus.UP, IfAdminStatus.DOWN):
            raise ValueError("ifAdminStatus is up(1) or down(2)")

        return lambda: switch.set_admin(index, IfAdminStatus(status))

    return setter


def _port_columns(port: SimulatedPort) -> dict[tuple[int, ...], Getter]:
    """The ifTable and ifXTable columns of one port, as getters of the uptime."""

    def in_octets(t: float) -> int:
        return port.octets(t)[0]

    def out_octets(t: float) -> int:
        return port.octets(t)[1]

    if_entry = {
        1: lambda _t: rfc1902.Integer32(port.index),
        2: lambda _t: rfc1902.OctetString(port.name),
        3: lambda _t: rfc1902.Integer32(_ETHERNET_CSMACD),
        4: lambda _t: rfc1902.Integer32(9216),
        5: lambda _t: rfc1902.Gauge32(min(port.speed, _WRAP32 - 1)),
        6: lambda _t: rfc1902.OctetString(port.mac),
        7: lambda _t: rfc1902.Integer32(1 if port.admin_up else 2),
        8: lambda _t: rfc1902.Integer32(int(port.oper_status)),
        9: lambda _t: rfc1902.TimeTicks(int(port.last_change * 100) % _WRAP32),
        10: lambda t: rfc1902.Counter32(in_octets(t) % _WRAP32),
        11: lambda t: rfc1902.Counter32((in_octets(t) // 1000) % _WRAP32),  # ifInUcastPkts
        13: lambda _t: rfc1902.Counter32(0),  # ifInDiscards
        14: lambda _t: rfc1902.Counter32(port.in_errors % _WRAP32),
        16: lambda t: rfc1902.Counter32(out_octets(t) % _WRAP32),
        17: lambda t: rfc1902.Counter32((out_octets(t) // 1000) % _WRAP32),  # ifOutUcastPkts
        19: lambda _t: rfc1902.Counter32(0),  # ifOutDiscards
        20: lambda _t: rfc1902.Counter32(port.out_errors % _WRAP32),
    }
    if_x_entry = {
        1: lambda _t: rfc1902.OctetString(port.name),
        6: lambda t: rfc1902.Counter64(in_octets(t) % _WRAP64),
        7: lambda t: rfc1902.Counter64((in_octets(t) // 1000) % _WRAP64),  # ifHCInUcastPkts
        10: lambda t: rfc1902.Counter64(out_octets(t) % _WRAP64),
        11: lambda t: rfc1902.Counter64((out_octets(t) // 1000) % _WRAP64),
        15: lambda _t: rfc1902.Gauge32(port.speed // 1_000_000),  # ifHighSpeed, Mbit/s
        18: lambda _t: rfc1902.OctetString(port.alias),
    }
    columns: dict[tuple[int, ...], Getter] = {}
    for number, getter in if_entry.items():
        columns[(*_IF_ENTRY, number)] = getter
    for number, getter in if_x_entry.items():
        columns[(*_IF_X_ENTRY, number)] = getter
    return columns


# --------------------------------------------------------------------------- many switches


@asynccontextmanager
async def simulated_switches(
    count: int, *, name_prefix: str = "sw", **options: Any
) -> AsyncIterator[list[SimulatedSwitch]]:
    """Run ``count`` switches in this process, each on its own free UDP port.

    ``options`` go to every :class:`SimulatedSwitch` (``ports=48``,
    ``trap_target=...``...). For the benchmark: 50 switches of 48 ports.
    """
    async with AsyncExitStack() as stack:
        switches = [
            await stack.enter_async_context(
                SimulatedSwitch(f"{name_prefix}-{number:02d}", **options)
            )
            for number in range(1, count + 1)
        ]
        yield switches
