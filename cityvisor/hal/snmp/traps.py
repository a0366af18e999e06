"""The trap receiver: the one UDP listener for v1, v2c and v3 notifications, dispatched per device."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio
from anyio.abc import ObjectReceiveStream, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import ntfrcv

from cityvisor.core.points import now_ms

from .credentials import UsmCredentials
from .oids import IF_ADMIN_STATUS, IF_INDEX, IF_OPER_STATUS, SNMP_TRAP_OID, SYS_UPTIME
from .values import SnmpValue, to_python

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- traps


@dataclass(frozen=True, slots=True)
class Notification:
    """A trap or inform received from an agent, decoded.

    ``varbinds`` holds the objects carried after sysUpTime and snmpTrapOID
    (``{"1.3.6.1.2.1.2.2.1.1.7": 7, ...}`` for a linkDown of port 7).
    """

    source: tuple[str, int]
    version: Literal["v1", "v2c", "v3"]
    trap_oid: str
    uptime: float | None
    varbinds: dict[str, SnmpValue]
    received_at: int
    """UTC epoch milliseconds."""
    security_name: str = ""
    """The v3 user, or the community's index in the receiver (never the community itself)."""

    def value(self, column: str) -> SnmpValue:
        """The first varbind under ``column`` (``IF_INDEX``...), or None."""
        prefix = column.rstrip(".") + "."
        for oid, value in self.varbinds.items():
            if oid.startswith(prefix) or oid == column:
                return value
        return None

    @property
    def if_index(self) -> int | None:
        """The ifIndex a linkDown/linkUp is about (from its ifIndex varbind or its instance)."""
        value = self.value(IF_INDEX)
        if isinstance(value, int):
            return value
        for column in (IF_ADMIN_STATUS, IF_OPER_STATUS):
            for oid in self.varbinds:
                if oid.startswith(column + "."):
                    return int(oid.rsplit(".", 1)[1])
        return None


NotificationCallback: TypeAlias = Callable[[Notification], None]


_VERSIONS = {0: "v1", 1: "v2c", 3: "v3"}


@dataclass
class _Registration:
    deliver: NotificationCallback
    engine_id: bytes | None
    stream: MemoryObjectSendStream[Notification] | None = None
    dropped_logged: bool = False

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class _Receiver(ntfrcv.NotificationReceiver):
    """pysnmp's notification receiver, also handing over who sent each PDU and how."""

    def __init__(self, engine: SnmpEngine, on_notification: Callable[..., None]) -> None:
        super().__init__(engine, self._received)
        self._on_notification = on_notification
        self._sender: tuple[Any, str, str] | None = None

    def process_pdu(
        self, engine: SnmpEngine, mp_model: Any, sec_model: Any, sec_name: Any, *rest: Any
    ) -> None:  # type: ignore[override]
        # pysnmp calls this positionally; the state reference is the last argument.
        # Capture the sender before pysnmp answers an inform, which releases it.
        transport = engine.message_dispatcher.get_transport_info(rest[-1])
        self._sender = (
            transport[1] if transport else None,
            _VERSIONS.get(int(mp_model), "v2c"),
            str(sec_name),
        )
        try:
            super().process_pdu(engine, mp_model, sec_model, sec_name, *rest)
        finally:
            self._sender = None

    def _received(
        self, _engine: Any, _state: Any, _ctx_id: Any, _ctx_name: Any, var_binds: Any, _cb: Any
    ) -> None:
        if self._sender is not None and self._sender[0] is not None:
            self._on_notification(*self._sender, var_binds)


class TrapReceiver:
    """The one UDP listener for SNMP traps and informs, v1/v2c and v3.

    ``communities`` are accepted for v1/v2c; ``users`` for v3. An inform
    (the receiver is authoritative) works with the users alone; a v3 *trap*
    is signed with the sender's engine ID, so the receiver must know it:
    pass ``engine_id`` when registering the device (read it once with
    :meth:`SnmpClient.engine_id`).

    Each notification is dispatched to whoever registered the sender's IP
    address (:meth:`register` with a non-blocking callback, or
    :meth:`open_stream` for a bounded memory stream). Unknown senders are
    counted and logged (once per address), never an error; a full stream
    drops the notification and counts it: a slow device never blocks the
    listener or grows memory.

    Use as ``async with TrapReceiver(...) as rx:`` (listening inside the
    block) or ``await task_group.start(rx.run)`` (listening until cancelled).
    ``port=0`` picks a free port; :attr:`address` tells which.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 162,
        *,
        communities: Sequence[str] = (),
        users: Sequence[UsmCredentials] = (),
    ) -> None:
        self.host = host
        self.port = port
        self._communities = list(communities)
        self._users = list(users)
        self._registry: dict[str, _Registration] = {}
        self._unknown_logged: set[str] = set()
        self._engine_ids: set[bytes] = set()
        self._engine: SnmpEngine | None = None
        self._receiver: _Receiver | None = None
        self._socket: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._starting = anyio.Lock()
        #: Notifications decoded, dispatched, from unknown senders, and dropped (full stream).
        self.received = 0
        self.dispatched = 0
        self.unknown_senders = 0
        self.dropped = 0

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listener is bound to."""
        # Kept after stop: the port picked for port=0 stays known.
        return self._bound or (self.host, self.port)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled (for ``task_group.start``)."""
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    async def start(self) -> None:
        """Bind the UDP port and start receiving (prefer ``async with``)."""
        if self._engine is not None:
            raise RuntimeError("the trap receiver is running already")
        # Bind here, synchronously, so that a port in use is an error now (pysnmp
        # would bind in a background future and lose it); port 0 also works.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        self._bound = sock.getsockname()[:2]
        engine = SnmpEngine()
        transport = udp.UdpAsyncioTransport()
        # Create the endpoint ourselves (pysnmp's open_server_mode would do it in an
        # unowned background future): when this returns, the socket is served.
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: transport, sock=sock)
        pysnmp_config.add_transport(engine, udp.DOMAIN_NAME, transport)
        for number, community in enumerate(self._communities):
            pysnmp_config.add_v1_system(engine, f"community-{number}", community)
        for user in self._users:
            user.add_to(engine)
        self._engine = engine
        for engine_id in list(self._engine_ids):
            self._add_engine_id(engine_id)
        self._receiver = _Receiver(engine, self._on_pdu)
        log.info("SNMP trap receiver listening on %s:%d", *self.address)

    @property
    def listening(self) -> bool:
        """Whether the receiver is bound and receiving."""
        return self._engine is not None

    async def ensure_started(self) -> None:
        """Start listening unless it is already: for a receiver that devices share.

        The devices of a hub find one receiver in the hub's resources and
        each calls this before :meth:`open_stream`; only the first binds the
        port, the others wait for it. If binding fails, the next call tries again.
        """
        async with self._starting:
            if self._engine is None:
                await self.start()

    def close(self) -> None:
        """Stop listening (what a hub calls on its shared resources when it stops)."""
        self.stop()

    def stop(self) -> None:
        """Stop listening and release the port."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._receiver is not None:
            self._receiver.close(engine)
            self._receiver = None
        engine.close_dispatcher()
        # The devices' streams end with the listener: their readers see end-of-stream.
        for registration in self._registry.values():
            registration.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _add_engine_id(self, engine_id: bytes) -> None:
        if self._engine is not None:
            for user in self._users:
                user.add_to(self._engine, engine_id)

    def accept(
        self, *, communities: Iterable[str] = (), users: Iterable[UsmCredentials] = ()
    ) -> None:
        """Accept more communities and v3 users, before or while listening.

        One receiver serves every device of a hub, and each device brings its
        own trap credentials when its driver starts: they are added to the
        running engine instead of restarting the listener (which would lose
        the notifications in flight).
        """
        for community in communities:
            if community not in self._communities:
                self._communities.append(community)
                if self._engine is not None:
                    number = len(self._communities) - 1
                    pysnmp_config.add_v1_system(self._engine, f"community-{number}", community)
        for user in users:
            if user not in self._users:
                self._users.append(user)
                if self._engine is not None:
                    user.add_to(self._engine)
                    for engine_id in self._engine_ids:
                        user.add_to(self._engine, engine_id)

    # -- registry

    def register(
        self, host: str, callback: NotificationCallback, *, engine_id: bytes | None = None
    ) -> None:
        """Send the notifications from ``host`` (an IP address) to ``callback``.

        The callback runs in the listener's path: it must not block (put the
        notification in a stream, set an event). ``engine_id`` is the agent's
        snmpEngineID, needed to accept its v3 traps.
        """
        self.unregister(host)  # a device registering again replaces its old stream
        self._registry[host] = _Registration(callback, engine_id)
        if engine_id is not None and engine_id not in self._engine_ids:
            self._engine_ids.add(engine_id)
            self._add_engine_id(engine_id)

    def open_stream(
        self, host: str, *, engine_id: bytes | None = None, max_buffer: int = 64
    ) -> ObjectReceiveStream[Notification]:
        """Register ``host`` and return a bounded stream of its notifications.

        Closing the stream unregisters the device. When the stream is full,
        new notifications are dropped and counted in :attr:`dropped`.
        """
        send: MemoryObjectSendStream[Notification]
        send, receive = anyio.create_memory_object_stream[Notification](max_buffer)

        def deliver(notification: Notification) -> None:
            try:
                send.send_nowait(notification)
            except anyio.WouldBlock:
                self.dropped += 1
                if not registration.dropped_logged:
                    registration.dropped_logged = True
                    log.warning("trap stream of %s is full: dropping notifications", host)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The device closed its end: it no longer listens.
                send.close()
                if self._registry.get(host) is registration:
                    del self._registry[host]

        self.register(host, deliver, engine_id=engine_id)
        registration = self._registry[host]
        registration.stream = send
        return receive

    def unregister(self, host: str) -> None:
        """Stop dispatching the notifications of ``host`` (they count as unknown again)."""
        registration = self._registry.pop(host, None)
        if registration is not None:
            registration.close()

    def _on_pdu(
        self, source: tuple[str, int], version: str, security_name: str, var_binds: Any
    ) -> None:
        self.received += 1
        host = str(source[0])
        uptime: float | None = None
        trap_oid = ""
        values: dict[str, SnmpValue] = {}
        for name, value in var_binds:
            oid = str(name)
            if oid == SYS_UPTIME:
                converted = to_python(value)
                uptime = float(converted) if isinstance(converted, int | float) else None
            elif oid == SNMP_TRAP_OID:
                trap_oid = str(to_python(value))
            else:
                values[oid] = to_python(value)
        registration = self._registry.get(host)
        if registration is None:
            self.unknown_senders += 1
            if host not in self._unknown_logged and len(self._unknown_logged) < 1024:
                self._unknown_logged.add(host)
                log.warning("SNMP notification %s from unknown sender %s ignored", trap_oid, host)
            return
        notification = Notification(
            source=(host, int(source[1])),
            version=version,  # type: ignore[arg-type]
            trap_oid=trap_oid,
            uptime=uptime,
            varbinds=values,
            received_at=now_ms(),
            security_name=security_name,
        )
        try:
            registration.deliver(notification)
        except Exception:  # a device's callback must never break the listener
            log.exception("trap callback for %s failed", host)
            return
        self.dispatched += 1
