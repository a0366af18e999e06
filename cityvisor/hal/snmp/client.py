"""SNMP clients: the manager that owns the pysnmp engines, and a client per agent (get, walk, set)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
from pysnmp.entity.engine import SnmpEngine
from pysnmp.hlapi.v3arch.asyncio import (
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

from .credentials import CommunityCredentials, Credentials, UsmCredentials
from .errors import (
    _AUTH_INDICATIONS,
    SnmpAuthError,
    SnmpError,
    SnmpProtocolError,
    SnmpSetRefusedError,
    SnmpTimeoutError,
)
from .oids import IF_ADMIN_STATUS, SNMP_ENGINE_ID, SYS_UPTIME, IfAdminStatus
from .values import _ABSENT, SnmpValue, TableIndex, _oid, _oid_text, _set_value, to_python

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
