"""A small SNMP agent for simulators: a pysnmp command responder over a table of live getters.

A simulator describes its MIB as a :class:`LiveMib`: each instance OID has
a getter called when a manager reads it, and a writable one a setter that
checks the value (raise :class:`TypeError` or :class:`ValueError`) and
returns what applies it. A SET is all or nothing: every varbind is checked
before any is applied, as RFC 3416 asks. :class:`SnmpAgent` serves that MIB
over v2c (a read community and a write community) on its own UDP socket of
the event loop, so net-snmp's ``snmpget``/``snmpset`` and cityvisor's own
client talk to it as to a real device.

Why not snmpd with a ``pass_persist`` script: the simulated equipment lives
in the test's process (phases cycling, faults injected with a method call),
and a pysnmp responder reads that state directly, with no second process to
keep in step.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

if TYPE_CHECKING:
    from cityvisor.hal.snmp import UsmCredentials

__all__ = ["Apply", "LiveMib", "Oid", "Setter", "SnmpAgent", "integer", "oid", "text_of"]

log = logging.getLogger(__name__)

Oid = tuple[int, ...]
Apply = Callable[[], None]
Setter = Callable[[Any], Apply]
"""Checks a value a manager SETs (raise TypeError/ValueError) and returns what applies it."""


def oid(text: str) -> Oid:
    """``"1.3.6.1.2.1.1.5.0"`` as a tuple of integers."""
    return tuple(int(part) for part in text.strip(".").split("."))


def bound(read: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A getter that answers ``read(*args)`` at each request (the arguments fixed now)."""
    return lambda: read(*args)


def text_of(value: Any) -> str:
    """The text of an OCTET STRING a manager sent (UTF-8, undecodable bytes replaced)."""
    return bytes(value.asOctets()).decode("utf-8", errors="replace")


class LiveMib(AbstractMibInstrumController):
    """Instance OIDs with getters (and setters), answered in lexicographic order.

    ``tables`` are the entry OIDs under which a missing instance is
    ``noSuchInstance`` rather than ``noSuchObject``. ``on_request`` runs
    before each request is answered (a simulator brings its state up to date).
    """

    def __init__(
        self, tables: tuple[Oid, ...] = (), on_request: Callable[[], None] | None = None
    ) -> None:
        self.getters: dict[Oid, Callable[[], Any]] = {}
        self.setters: dict[Oid, Setter] = {}
        self.tables = tables
        self.on_request = on_request
        self.requests = 0
        self.sets = 0
        self._sorted: list[Oid] = []

    def add(self, instance: Oid, getter: Callable[[], Any], setter: Setter | None = None) -> None:
        """Serve ``instance`` (read with ``getter``; writable when ``setter`` is given)."""
        self.getters[instance] = getter
        if setter is not None:
            self.setters[instance] = setter
        self._sorted = []

    def _oids(self) -> list[Oid]:
        if not self._sorted:
            self._sorted = sorted(self.getters)
        return self._sorted

    def _begin(self) -> None:
        self.requests += 1
        if self.on_request is not None:
            self.on_request()

    def read_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """GET: each instance's value, or noSuchObject/noSuchInstance."""
        self._begin()
        result = []
        for name, _value in var_binds:
            instance = tuple(name)
            getter = self.getters.get(instance)
            if getter is not None:
                result.append((name, getter()))
            elif any(instance[: len(entry)] == entry for entry in self.tables):
                result.append((name, rfc1905.noSuchInstance))
            else:
                result.append((name, rfc1905.noSuchObject))
        return result

    def read_next_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """GETNEXT (and each GETBULK repetition): the next instance, or endOfMibView."""
        self._begin()
        oids = self._oids()
        result = []
        for name, _value in var_binds:
            position = bisect.bisect_right(oids, tuple(name))
            if position < len(oids):
                found = oids[position]
                result.append((rfc1902.ObjectName(found), self.getters[found]()))
            else:
                result.append((name, rfc1905.endOfMibView))
        return result

    def write_variables(self, *var_binds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """SET: check every varbind first (all or nothing), then apply them in order."""
        self._begin()
        access_check = context.get("acFun")
        appliers: list[Apply] = []
        for idx, (name, value) in enumerate(var_binds):
            instance = tuple(name)
            if access_check is not None:
                # pysnmp's VACM check raises, or returns True for "not in the view":
                # either way, as net-snmp answers, no write access is noAccess.
                try:
                    denied = access_check(
                        "write", (name, value), snmpEngine=context["snmpEngine"], idx=idx
                    )
                except smi_error.AuthorizationError:
                    denied = True
                if denied:
                    raise smi_error.NoAccessError(name=name, idx=idx)
            setter = self.setters.get(instance)
            if setter is None:
                if instance in self.getters:
                    raise smi_error.NotWritableError(name=name, idx=idx)
                raise smi_error.NoCreationError(name=name, idx=idx)
            try:
                appliers.append(setter(value))
            except TypeError:
                raise smi_error.WrongTypeError(name=name, idx=idx) from None
            except ValueError:
                raise smi_error.WrongValueError(name=name, idx=idx) from None
        for apply in appliers:
            apply()
        self.sets += 1
        return list(var_binds)


def integer(value: Any) -> int:
    """The integer a manager SET, or TypeError when it sent another type."""
    if not isinstance(value, rfc1902.Integer32 | rfc1902.Integer | rfc1902.Unsigned32):
        raise TypeError("an INTEGER is expected")
    return int(value)


class SnmpAgent:
    """Serves a :class:`LiveMib` over SNMP v2c (and v3) on ``host:port`` (``port=0``: a free one).

    ``community`` reads; ``write_community`` reads and writes; ``users``
    read and write over v3 (authPriv). Start it inside a running event loop
    with :meth:`start`, stop it with :meth:`stop`.
    """

    def __init__(
        self,
        mib: LiveMib,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        community: str = "public",
        write_community: str = "private",
        users: Sequence[UsmCredentials] = (),
    ) -> None:
        if community == write_community:
            raise ValueError("the read and write communities must differ")
        self.mib = mib
        self.host = host
        self.requested_port = port
        self.community = community
        self.write_community = write_community
        self.users = list(users)
        self.engine: SnmpEngine | None = None
        self._socket: socket.socket | None = None
        self._bound: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the agent answers on."""
        return self._bound or (self.host, self.requested_port)

    @property
    def engine_id(self) -> bytes:
        """The agent's snmpEngineID (what a trap receiver needs for its v3 traps)."""
        if self.engine is None:
            raise RuntimeError("the agent is not running")
        return bytes(self.engine.snmpEngineID.asOctets())

    async def start(self) -> None:
        """Bind the UDP socket (a bind error raises here) and answer requests."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        self._bound = sock.getsockname()[:2]
        engine = SnmpEngine()
        self.engine = engine
        transport = udp.UdpAsyncioTransport()
        # Our own endpoint, awaited: pysnmp's open_server_mode binds in a background
        # future and would lose a bind error.
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: transport, sock=sock)
        pysnmp_config.add_transport(engine, udp.DOMAIN_NAME, transport)
        everything, nothing = (1, 3, 6), (0, 0)
        pysnmp_config.add_v1_system(engine, "readers", self.community)
        # pysnmp 7.1 lets a group without any write view write: a write view on
        # zeroDotZero, where nothing lives, makes the readers' SET a refusal.
        pysnmp_config.add_vacm_user(engine, 2, "readers", "noAuthNoPriv", everything, nothing)
        pysnmp_config.add_v1_system(engine, "writers", self.write_community)
        pysnmp_config.add_vacm_user(engine, 2, "writers", "noAuthNoPriv", everything, everything)
        for user in self.users:
            user.add_to(engine)
            pysnmp_config.add_vacm_user(engine, 3, user.user, "authPriv", everything, everything)
        snmp_context = context.SnmpContext(engine)
        snmp_context.unregister_context_name(b"")
        snmp_context.register_context_name(b"", self.mib)  # type: ignore[arg-type]
        cmdrsp.GetCommandResponder(engine, snmp_context)
        cmdrsp.NextCommandResponder(engine, snmp_context)
        cmdrsp.BulkCommandResponder(engine, snmp_context)
        cmdrsp.SetCommandResponder(engine, snmp_context)

    def stop(self) -> None:
        """Stop answering and close the socket."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close_dispatcher()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
