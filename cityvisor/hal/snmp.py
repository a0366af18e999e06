"""SNMP for the HAL: a client per agent, counter rates, and one trap/inform receiver.

Fibre network switches speak SNMP v2c or v3 (IF-MIB) and send traps. This
module is everything a switches plugin needs, so that it never touches
pysnmp itself:

* :class:`SnmpManager` owns the pysnmp engines (one UDP socket shared by
  every agent whose credentials can share it) and hands out
  :class:`SnmpClient` objects, one per agent: ``get``, table walks with
  GETBULK (or GETNEXT), typed ``set``, timeouts and retries, and errors
  turned into :class:`SnmpError` subclasses whose ``reason`` is the quality
  reason of the device's points (they are :class:`~cityvisor.core.devices.DeviceError`,
  so the supervisor understands them directly).
* :class:`CounterRate` turns successive counter samples into rates, with
  32-bit wrap and agent restarts handled (no spikes).
* :class:`TrapReceiver` is the one UDP listener for v1/v2c/v3 notifications;
  it dispatches each to the device registered for the sender's address
  through bounded memory streams or non-blocking callbacks.

Values come back as plain Python: integers for INTEGER/Counter/Gauge,
seconds (float) for TimeTicks, ``str`` for OCTET STRING (hex ``aa:bb:..``
when the bytes are not text, as for a MAC address), dotted strings for OIDs
and IP addresses, and ``None`` for noSuchObject/noSuchInstance/endOfMibView.

IF-MIB is not bundled with pysnmp, so every OID here is numeric; the usual
ones are module constants (:data:`IF_NAME`, :data:`IF_HC_IN_OCTETS`...).

Credentials (communities, v3 keys) come from the configuration; they are
kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskStatus
from pyasn1.type import univ
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_PRIV_CBC56_DES,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
    next_cmd,
    set_cmd,
)
from pysnmp.proto import errind, rfc1905
from pysnmp.proto.rfc1902 import (
    Counter32,
    Counter64,
    Gauge32,
    Integer32,
    IpAddress,
    ObjectIdentifier,
    OctetString,
    TimeTicks,
    Unsigned32,
)

from cityvisor.core.devices import DeviceError
from cityvisor.core.points import now_ms

__all__ = [
    "IF_ADMIN_STATUS",
    "IF_ALIAS",
    "IF_DESCR",
    "IF_HC_IN_OCTETS",
    "IF_HC_OUT_OCTETS",
    "IF_HIGH_SPEED",
    "IF_INDEX",
    "IF_IN_ERRORS",
    "IF_IN_OCTETS",
    "IF_LAST_CHANGE",
    "IF_NAME",
    "IF_OPER_STATUS",
    "IF_OUT_ERRORS",
    "IF_OUT_OCTETS",
    "IF_PHYS_ADDRESS",
    "IF_SPEED",
    "IF_TYPE",
    "LINK_DOWN",
    "LINK_UP",
    "SNMP_ENGINE_ID",
    "SNMP_IN_BAD_COMMUNITY_NAMES",
    "SNMP_TRAP_OID",
    "SYS_CONTACT",
    "SYS_DESCR",
    "SYS_LOCATION",
    "SYS_NAME",
    "SYS_OBJECT_ID",
    "SYS_UPTIME",
    "CommunityCredentials",
    "Counter32",
    "Counter64",
    "CounterRate",
    "Gauge32",
    "IfAdminStatus",
    "IfOperStatus",
    "Integer32",
    "IpAddress",
    "Notification",
    "ObjectIdentifier",
    "OctetString",
    "SnmpAuthError",
    "SnmpClient",
    "SnmpError",
    "SnmpManager",
    "SnmpProtocolError",
    "SnmpSetRefusedError",
    "SnmpTimeoutError",
    "SnmpValue",
    "TimeTicks",
    "TrapReceiver",
    "Unsigned32",
    "UsmCredentials",
    "to_python",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- OIDs

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
SNMP_ENGINE_ID = "1.3.6.1.6.3.10.2.1.1.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_IN_BAD_COMMUNITY_NAMES = "1.3.6.1.2.1.11.4.0"

# IF-MIB ifTable columns (index: ifIndex).
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_TYPE = "1.3.6.1.2.1.2.2.1.3"
IF_SPEED = "1.3.6.1.2.1.2.2.1.5"
IF_PHYS_ADDRESS = "1.3.6.1.2.1.2.2.1.6"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8"
IF_LAST_CHANGE = "1.3.6.1.2.1.2.2.1.9"
IF_IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"
IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"
IF_OUT_OCTETS = "1.3.6.1.2.1.2.2.1.16"
IF_OUT_ERRORS = "1.3.6.1.2.1.2.2.1.20"
# IF-MIB ifXTable columns (same index).
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"
IF_HIGH_SPEED = "1.3.6.1.2.1.31.1.1.1.15"
IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.18"

# Standard notifications (SNMPv2-MIB snmpTraps / IF-MIB).
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"


class IfAdminStatus(enum.IntEnum):
    """IF-MIB ifAdminStatus: what the operator asked for."""

    UP = 1
    DOWN = 2
    TESTING = 3


class IfOperStatus(enum.IntEnum):
    """IF-MIB ifOperStatus: what the port really does."""

    UP = 1
    DOWN = 2
    TESTING = 3
    UNKNOWN = 4
    DORMANT = 5
    NOT_PRESENT = 6
    LOWER_LAYER_DOWN = 7


# --------------------------------------------------------------------------- credentials

AuthProtocol: TypeAlias = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol: TypeAlias = Literal["DES", "AES", "AES192", "AES256"]

_AUTH_PROTOCOLS = {
    "MD5": USM_AUTH_HMAC96_MD5,
    "SHA": USM_AUTH_HMAC96_SHA,
    "SHA224": USM_AUTH_HMAC128_SHA224,
    "SHA256": USM_AUTH_HMAC192_SHA256,
    "SHA384": USM_AUTH_HMAC256_SHA384,
    "SHA512": USM_AUTH_HMAC384_SHA512,
}
_PRIV_PROTOCOLS = {
    "DES": USM_PRIV_CBC56_DES,
    "AES": USM_PRIV_CFB128_AES,
    "AES192": USM_PRIV_CFB192_AES,
    "AES256": USM_PRIV_CFB256_AES,
}


@dataclass(frozen=True, slots=True)
class CommunityCredentials:
    """SNMP v2c: a community string (kept out of ``repr``)."""

    community: str = field(repr=False)

    @property
    def version(self) -> str:
        """``"v2c"``."""
        return "v2c"


@dataclass(frozen=True, slots=True)
class UsmCredentials:
    """SNMP v3 USM user with authPriv (authentication and privacy keys kept out of ``repr``)."""

    user: str
    auth_key: str = field(repr=False)
    priv_key: str = field(repr=False)
    auth_protocol: AuthProtocol = "SHA"
    priv_protocol: PrivProtocol = "AES"

    def __post_init__(self) -> None:
        if self.auth_protocol not in _AUTH_PROTOCOLS:
            raise ValueError(f"unknown SNMPv3 authentication protocol {self.auth_protocol!r}")
        if self.priv_protocol not in _PRIV_PROTOCOLS:
            raise ValueError(f"unknown SNMPv3 privacy protocol {self.priv_protocol!r}")
        # RFC 3414 requires at least 8 characters; pysnmp would fail later and less clearly.
        if len(self.auth_key) < 8 or len(self.priv_key) < 8:
            raise ValueError(f"SNMPv3 keys of user {self.user!r} must be at least 8 characters")

    @property
    def version(self) -> str:
        """``"v3"``."""
        return "v3"

    def add_to(self, engine: SnmpEngine, engine_id: bytes | None = None) -> None:
        """Declare this user in a pysnmp engine (an agent's, or a receiver's for ``engine_id``)."""
        pysnmp_config.add_v3_user(
            engine,
            self.user,
            _AUTH_PROTOCOLS[self.auth_protocol],
            self.auth_key,
            _PRIV_PROTOCOLS[self.priv_protocol],
            self.priv_key,
            securityEngineId=None if engine_id is None else OctetString(engine_id),
        )

    def user_data(self) -> UsmUserData:
        """The pysnmp form of these credentials."""
        return UsmUserData(
            self.user,
            self.auth_key,
            self.priv_key,
            authProtocol=_AUTH_PROTOCOLS[self.auth_protocol],
            privProtocol=_PRIV_PROTOCOLS[self.priv_protocol],
        )


Credentials: TypeAlias = CommunityCredentials | UsmCredentials


# --------------------------------------------------------------------------- errors

#: How long a driver waits after an authentication failure: a wrong password is
#: not fixed by retrying, and a storm of bad requests can lock accounts or fill logs.
AUTH_RETRY_AFTER = 300.0


class SnmpError(DeviceError):
    """An SNMP exchange failed; ``reason`` is the quality reason for the device's points."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "comm_failure",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)


class SnmpTimeoutError(SnmpError):
    """No answer from the agent after every retry (``comm_failure``)."""


class SnmpAuthError(SnmpError):
    """The agent refuses our credentials (``config_error``, with a long ``retry_after``).

    Raised for v3 reports (unknown user, wrong digest, decryption error) and
    for a v2c community (or a v3 privacy key) the agent silently ignores,
    detected as explained in :meth:`SnmpClient.get`.
    """

    def __init__(self, message: str, *, retry_after: float = AUTH_RETRY_AFTER) -> None:
        super().__init__(message, reason="config_error", retry_after=retry_after)


class SnmpSetRefusedError(SnmpError):
    """The agent refused a SET (``notWritable``, ``noAccess``, ``readOnly``, ``wrongValue``...).

    ``status`` is the SNMP error-status name and ``oid`` the refused object. A
    refusal is an answer, not a communication failure: the command that asked
    for the SET fails with this message, the device stays online.
    """

    def __init__(self, oid: str, status: str, agent: str) -> None:
        super().__init__(f"{agent} refused to set {oid}: {status}", reason="config_error")
        self.oid = oid
        self.status = status


class SnmpProtocolError(SnmpError):
    """The agent answered with an error to a read (``genErr``, ``tooBig``...) or broke the protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="device_failure")


# Reports that mean "your credentials are wrong": retrying will not help.
_AUTH_INDICATIONS = (
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.WrongDigest,
    errind.DecryptionError,
    errind.AuthenticationFailure,
    errind.AuthenticationError,
    errind.UnsupportedSecurityLevel,
    errind.UnsupportedAuthProtocol,
    errind.UnsupportedPrivProtocol,
    errind.NoEncryption,
    errind.NoAuthentication,
)


# --------------------------------------------------------------------------- values

SnmpValue: TypeAlias = int | float | str | None
"""A value read from an agent, converted by :func:`to_python`."""

TableIndex: TypeAlias = int | tuple[int, ...]
"""A table row's index: an ``int`` for single-integer indexes (ifIndex), else the sub-identifiers."""

_ABSENT = (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)


def _text_or_hex(raw: bytes) -> str:
    # Agents pad strings with NULs and some send MACs or binary in OCTET STRING:
    # printable UTF-8 is text, anything else is shown as hex the way operators read MACs.
    trimmed = raw.rstrip(b"\x00")
    try:
        text = trimmed.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex(":")
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return text
    return raw.hex(":")


def to_python(value: Any) -> SnmpValue:
    """Convert a pysnmp value to plain Python (see the module docstring for the mapping)."""
    if isinstance(value, _ABSENT):
        return None
    if isinstance(value, TimeTicks):
        return int(value) / 100.0
    if isinstance(value, IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, univ.OctetString):
        return _text_or_hex(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return ".".join(str(n) for n in value)
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.Null):
        return None
    return str(value)


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().lstrip(".").split("."))


def _oid_text(oid: Iterable[int]) -> str:
    return ".".join(str(n) for n in oid)


def _set_value(value: Any) -> Any:
    # Python int -> Integer32 (enumerations such as ifAdminStatus are INTEGER);
    # text -> OCTET STRING; anything else must already be a typed pysnmp value.
    if isinstance(value, bool):
        raise TypeError("SNMP has no boolean: use an enumeration value (int)")
    if isinstance(value, int):
        return Integer32(value)
    if isinstance(value, str | bytes):
        return OctetString(value)
    if isinstance(value, univ.Integer | univ.OctetString | univ.ObjectIdentifier):
        return value
    raise TypeError(f"cannot SET a {type(value).__name__}: pass an int, str or a typed value")


# --------------------------------------------------------------------------- manager and client


class SnmpManager:
    """Owns the pysnmp engines that clients share, and closes them.

    One :class:`~pysnmp.entity.engine.SnmpEngine` (one UDP socket) serves every
    v2c agent and every v3 agent with the same credentials. pysnmp keys v3
    users by name inside an engine, so two different credential sets for the
    same user name (a city migrating passwords switch by switch) get separate
    engines instead of overwriting each other.

    An SNMPv3 engine also remembers each agent's engine ID (and boots and
    time) once it has discovered them, for minutes: a switch swapped for a
    spare answers with a new engine ID that a long-lived shared engine keeps
    getting wrong (the agent drops every request). A client that asks for a
    ``dedicated`` engine gets its own, for as long as the client lives: a
    driver that takes one per run rediscovers the agent each time it
    restarts, which is what its timeouts make it do.

    Use it as an async context manager; engines belong to the event loop
    they were created on::

        async with SnmpManager() as snmp:
            switch = snmp.client("10.1.2.3", credentials=CommunityCredentials("public"))
            print(await switch.get(SYS_NAME))
    """

    def __init__(self) -> None:
        self._engines: list[tuple[SnmpEngine, dict[str, UsmCredentials]]] = []
        self._dedicated: list[SnmpEngine] = []
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every engine's socket. Clients of this manager stop working."""
        self._closed = True
        for engine in [*(engine for engine, _users in self._engines), *self._dedicated]:
            if engine.transport_dispatcher is not None:
                engine.close_dispatcher()
        self._engines.clear()
        self._dedicated.clear()

    @property
    def engine_count(self) -> int:
        """How many engines (UDP sockets) the manager has open: shared ones and dedicated ones."""
        return len(self._engines) + len(self._dedicated)

    def _release(self, engine: SnmpEngine) -> None:
        """Close a dedicated engine (its client is closed)."""
        if engine in self._dedicated:
            self._dedicated.remove(engine)
            if engine.transport_dispatcher is not None:
                engine.close_dispatcher()

    def engine_for(self, credentials: Credentials) -> SnmpEngine:
        """The engine a client with these credentials should use (created on first need)."""
        if self._closed:
            raise RuntimeError("this SnmpManager is closed")
        for engine, users in self._engines:
            if isinstance(credentials, CommunityCredentials):
                return engine
            known = users.get(credentials.user)
            if known is None or known == credentials:
                users[credentials.user] = credentials
                return engine
        engine = SnmpEngine()
        users = {credentials.user: credentials} if isinstance(credentials, UsmCredentials) else {}
        self._engines.append((engine, users))
        return engine

    def client(
        self,
        host: str,
        port: int = 161,
        *,
        credentials: Credentials,
        timeout: float = 1.0,
        retries: int = 1,
        max_repetitions: int = 25,
        use_bulk: bool = True,
        dedicated: bool = False,
    ) -> SnmpClient:
        """A client for the agent at ``host:port`` (see :class:`SnmpClient`).

        On a shared engine, or with ``dedicated`` on an engine of its own that
        :meth:`SnmpClient.close` closes: its discovery of the agent's engine
        ID lasts only as long as the client.
        """
        if dedicated:
            if self._closed:
                raise RuntimeError("this SnmpManager is closed")
            engine = SnmpEngine()
            self._dedicated.append(engine)
        else:
            engine = self.engine_for(credentials)
        client = SnmpClient(
            engine,
            host,
            port,
            credentials=credentials,
            timeout=timeout,
            retries=retries,
            max_repetitions=max_repetitions,
            use_bulk=use_bulk,
        )
        if dedicated:
            client._on_close = lambda: self._release(engine)
        return client


class SnmpClient:
    """The conversation with one SNMP agent (a switch).

    ``timeout`` is per attempt, ``retries`` the extra attempts pysnmp makes
    before giving up, so an unreachable agent costs at most
    ``timeout * (retries + 1)`` per request (plus one probe the first time,
    see below). Build it with :meth:`SnmpManager.client`.

    **Telling a wrong community from a dead agent.** An SNMP v2c agent says
    nothing to a wrong community (and a v3 agent nothing to a wrong privacy
    key): both look like a timeout. So when a client that has *never* had an
    answer times out, it sends one SNMPv3 probe (an unknown user, no
    credentials): any v3-capable agent answers it with a report. An answer
    means the agent is alive and ignoring us: :class:`SnmpAuthError`
    (``config_error``, long ``retry_after``). No answer: :class:`SnmpTimeoutError`
    (``comm_failure``). Once the client has had an answer, timeouts are
    plain ``comm_failure`` (the agent or the network went away), with no
    probe; a community changed on the switch while we run is therefore seen
    as ``comm_failure`` until the driver restarts with a fresh client.
    Agents that do not speak v3 at all always give ``comm_failure``.
    """

    def __init__(
        self,
        engine: SnmpEngine,
        host: str,
        port: int = 161,
        *,
        credentials: Credentials,
        timeout: float = 1.0,
        retries: int = 1,
        max_repetitions: int = 25,
        use_bulk: bool = True,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.max_repetitions = max_repetitions
        self.use_bulk = use_bulk
        #: Requests sent (one per GET/GETNEXT/GETBULK/SET PDU, retransmissions not counted).
        self.requests = 0
        #: Whether the agent has ever answered this client.
        self.answered = False
        self._target: UdpTransportTarget | None = None
        self._on_close: Callable[[], None] | None = None
        self._auth = (
            CommunityData(credentials.community)
            if isinstance(credentials, CommunityCredentials)
            else credentials.user_data()
        )

    def __repr__(self) -> str:
        return f"SnmpClient({self.agent}, {self.credentials.version})"

    @property
    def agent(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Close the client's dedicated engine, if it has one (a shared engine stays open)."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def _transport(self) -> UdpTransportTarget:
        if self._target is None:
            # create() resolves the host name: do it once, not per request.
            self._target = await UdpTransportTarget.create(
                (self.host, self.port), timeout=self.timeout, retries=self.retries
            )
        return self._target

    async def _request(self, command: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
        target = await self._transport()
        self.requests += 1
        # pysnmp enforces timeout and retries itself; the outer deadline only guards
        # against a lost callback so that no request can hang a driver forever.
        with anyio.fail_after(self.timeout * (self.retries + 1) + 5.0):
            error_indication, error_status, error_index, var_binds = await command(
                self.engine, self._auth, target, ContextData(), *args, lookupMib=False
            )
        if error_indication is None:
            self.answered = True
            return int(error_status), int(error_index), tuple(var_binds)
        raise await self._error_for(error_indication)

    async def _error_for(self, indication: errind.ErrorIndication) -> SnmpError:
        if isinstance(indication, errind.RequestTimedOut):
            if not self.answered and await self._agent_is_alive():
                return SnmpAuthError(
                    f"{self.agent} is up but does not answer our {self.credentials.version} "
                    "credentials (wrong community or privacy key, or this host is not allowed)"
                )
            return SnmpTimeoutError(
                f"no answer from {self.agent} after {self.retries + 1} attempt(s) "
                f"of {self.timeout:g} s"
            )
        if isinstance(indication, _AUTH_INDICATIONS):
            self.answered = True  # the agent is there: it reported on our credentials
            return SnmpAuthError(f"{self.agent} rejects our SNMPv3 credentials: {indication}")
        return SnmpError(f"{self.agent}: {indication}")

    async def _agent_is_alive(self) -> bool:
        """Whether anything SNMPv3 answers at the agent's address (one short probe)."""
        probe = UsmUserData("cityvisor-probe")  # a user no agent knows: it must report
        target = await UdpTransportTarget.create(
            (self.host, self.port), timeout=self.timeout, retries=0
        )
        with anyio.move_on_after(self.timeout + 5.0):
            indication, *_ = await get_cmd(
                self.engine,
                probe,
                target,
                ContextData(),
                ObjectType(ObjectIdentity(SYS_UPTIME)),
                lookupMib=False,
            )
            return not isinstance(indication, errind.RequestTimedOut)
        return False

    # -- reads

    async def get(self, *oids: str) -> dict[str, SnmpValue]:
        """Read scalar instances (``"1.3.6.1.2.1.1.5.0"``...) in one request per 32 OIDs.

        Returns ``{oid: value}`` in the order asked; an object the agent does
        not have reads as ``None``.

        Raises :class:`SnmpTimeoutError`, :class:`SnmpAuthError`, :class:`SnmpProtocolError`.
        """
        values: dict[str, SnmpValue] = {}
        for oid, value in await self._get_raw(oids):
            values[oid] = to_python(value)
        return values

    async def get_value(self, oid: str) -> SnmpValue:
        """Read one scalar instance (see :meth:`get`)."""
        return (await self.get(oid))[_oid_text(_oid(oid))]

    async def engine_id(self) -> bytes:
        """The agent's snmpEngineID, which identifies its v3 traps (see :meth:`TrapReceiver.register`)."""
        ((_, value),) = await self._get_raw([SNMP_ENGINE_ID])
        if isinstance(value, _ABSENT):
            raise SnmpProtocolError(f"{self.agent} has no snmpEngineID")
        return bytes(value.asOctets())

    async def _get_raw(self, oids: Sequence[str]) -> list[tuple[str, Any]]:
        result: list[tuple[str, Any]] = []
        # Chunks keep each PDU well under a UDP datagram and agents' varbind limits.
        for start in range(0, len(oids), 32):
            chunk = [
                ObjectType(ObjectIdentity(_oid_text(_oid(o)))) for o in oids[start : start + 32]
            ]
            status, index, var_binds = await self._request(get_cmd, *chunk)
            if status:
                raise SnmpProtocolError(
                    f"{self.agent} answered GET with {_status_name(status)} at varbind {index}"
                )
            result.extend((str(name), value) for name, value in var_binds)
        return result

    async def walk_table(
        self, columns: Sequence[str] | Mapping[str, str]
    ) -> dict[TableIndex, dict[str, SnmpValue]]:
        """Read whole table columns, row by row, stopping at the end of each column.

        ``columns`` are column OIDs (``IF_NAME``, ``IF_OPER_STATUS``...) or a
        mapping ``{label: column OID}``; the result maps each row index
        (``ifIndex`` for IF-MIB) to ``{label or column OID: value}``.
        Columns are fetched together with GETBULK (or GETNEXT when the client
        was made with ``use_bulk=False``); a column the agent does not have
        simply yields no values.
        """
        labels = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        prefixes = {label: _oid(oid) for label, oid in labels.items()}
        cursor = dict(prefixes)  # the last OID seen per column
        rows: dict[TableIndex, dict[str, SnmpValue]] = {}
        active = list(labels)
        while active:
            request = [ObjectType(ObjectIdentity(_oid_text(cursor[label]))) for label in active]
            if self.use_bulk:
                repetitions = max(1, min(self.max_repetitions, 60 // len(active)))
                status, index, var_binds = await self._request(bulk_cmd, 0, repetitions, *request)
            else:
                status, index, var_binds = await self._request(next_cmd, *request)
            if status:
                raise SnmpProtocolError(
                    f"{self.agent} answered a walk with {_status_name(status)} at varbind {index}"
                )
            finished: set[str] = set()
            progressed = False
            # GETBULK answers in repetitions of len(active) varbinds, in request order.
            for position, (name, value) in enumerate(var_binds):
                label = active[position % len(active)]
                if label in finished:
                    continue
                oid = tuple(name)
                prefix = prefixes[label]
                if isinstance(value, rfc1905.EndOfMibView) or oid[: len(prefix)] != prefix:
                    finished.add(label)
                    continue
                if oid <= cursor[label]:
                    raise SnmpProtocolError(f"{self.agent} returned a non-increasing OID {name}")
                cursor[label] = oid
                progressed = True
                suffix = oid[len(prefix) :]
                row_index: TableIndex = suffix[0] if len(suffix) == 1 else suffix
                rows.setdefault(row_index, {})[label] = to_python(value)
            if not progressed and not finished:
                raise SnmpProtocolError(f"{self.agent} returned an empty walk response")
            active = [label for label in active if label not in finished]
        return dict(sorted(rows.items(), key=lambda item: _sort_key(item[0])))

    # -- writes

    async def set(self, oid: str, value: Any) -> SnmpValue:
        """Write one object instance and return the value the agent confirmed.

        ``value``: an ``int`` is sent as Integer32 (INTEGER and enumerations
        such as ifAdminStatus), a ``str``/``bytes`` as OCTET STRING; pass a
        typed value (``Unsigned32(5)``, ``Gauge32``, ``IpAddress``...) for
        anything else.

        Raises :class:`SnmpSetRefusedError` when the agent refuses (``notWritable``,
        ``noAccess``, ``readOnly``, ``wrongValue``...), and the errors of :meth:`get`.
        """
        oid_text = _oid_text(_oid(oid))
        status, _index, var_binds = await self._request(
            set_cmd, ObjectType(ObjectIdentity(oid_text), _set_value(value))
        )
        if status:
            raise SnmpSetRefusedError(oid_text, _status_name(status), self.agent)
        return to_python(var_binds[0][1]) if var_binds else None

    async def set_many(self, values: Sequence[tuple[str, Any]]) -> dict[str, SnmpValue]:
        """Write several instances in ONE SetRequest: the agent applies all of them or none.

        ``values`` are ``(oid, value)`` pairs typed as for :meth:`set`; returns
        ``{oid: confirmed value}``. Use it when the objects only make sense
        together (an NTCIP priority request's vehicle, phase and arrival time).

        Raises :class:`SnmpSetRefusedError` naming the varbind the agent refused.
        """
        oids = [_oid_text(_oid(oid)) for oid, _value in values]
        var_binds = [
            ObjectType(ObjectIdentity(oid), _set_value(value))
            for oid, (_oid_given, value) in zip(oids, values, strict=True)
        ]
        status, index, answer = await self._request(set_cmd, *var_binds)
        if status:
            refused = oids[index - 1] if 0 < index <= len(oids) else ", ".join(oids)
            raise SnmpSetRefusedError(refused, _status_name(status), self.agent)
        return {str(name): to_python(value) for name, value in answer}

    async def set_admin_status(self, if_index: int, status: IfAdminStatus) -> None:
        """Enable (``IfAdminStatus.UP``) or disable (``DOWN``) a port: SET ifAdminStatus.N."""
        await self.set(f"{IF_ADMIN_STATUS}.{int(if_index)}", int(status))


def _status_name(status: int) -> str:
    try:
        return str(rfc1905.errorStatus.getNamedValues().getName(status))
    except (KeyError, AttributeError):
        return f"error-status {status}"


def _sort_key(index: TableIndex) -> tuple[int, ...]:
    return (index,) if isinstance(index, int) else index


# --------------------------------------------------------------------------- counters


class CounterRate:
    """Turns successive samples of one SNMP counter into a rate per second.

    Feed it the counter and the agent's sysUpTime (seconds) read in the
    *same* request: the interval comes from the agent's clock, so network
    jitter does not distort the rate. ``scale`` multiplies the result
    (8 turns ifHCInOctets into bit/s).

    * a Counter32 that went backwards wrapped once at 2**32 (use the 64-bit
      ifHC* counters on fast ports: a 32-bit octet counter wraps every 3.4 s
      at 10 Gbit/s);
    * sysUpTime going backwards means the agent restarted (its counters
      started again from zero): no rate for that sample, never a spike;
    * a 64-bit counter that went backwards was reset (discontinuity): no rate;
    * with ``max_rate`` (the port speed, say), an impossible rate is dropped
      as a discontinuity too (an undetected counter reset).

    :meth:`update` returns ``None`` when there is no rate yet or for a sample
    that cannot give one; the next sample starts again from it. ``delta`` is
    the last increment (errors in the interval, for instance).
    """

    def __init__(
        self, *, bits: Literal[32, 64] = 64, scale: float = 1.0, max_rate: float | None = None
    ) -> None:
        if bits not in (32, 64):
            raise ValueError("a counter has 32 or 64 bits")
        self.modulus = 1 << bits
        self.scale = scale
        self.max_rate = max_rate
        self.delta: int | None = None
        self._previous: tuple[int, float] | None = None

    def reset(self) -> None:
        """Forget the previous sample (after a gap in polling, for instance)."""
        self._previous = None
        self.delta = None

    def update(self, value: int, uptime: float) -> float | None:
        """Add a sample (counter value, agent uptime in seconds); return the rate or None."""
        previous, self._previous = self._previous, (int(value), float(uptime))
        self.delta = None
        if previous is None:
            return None
        last_value, last_uptime = previous
        elapsed = uptime - last_uptime
        if elapsed < 0:
            log.debug("agent uptime went backwards (%.2f -> %.2f s): restart", last_uptime, uptime)
            return None
        if elapsed == 0:
            # Same agent tick (or a cached answer): keep the older sample as the base.
            self._previous = previous
            return None
        delta = int(value) - last_value
        if delta < 0:
            if self.modulus == 1 << 64:
                return None  # a 64-bit counter does not wrap in practice: it was reset
            delta += self.modulus
        rate = delta * self.scale / elapsed
        if self.max_rate is not None and rate > self.max_rate:
            return None
        self.delta = delta
        return rate


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
    stream: ObjectSendStream[Notification] | None = None
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
        send: ObjectSendStream[Notification]
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
