"""Fibre network switches over SNMP v2c/v3: ports, traffic, errors, link traps, port commands.

Ports are members ``p<ifIndex>`` and come from the config (``ports = 48`` or
a list of ifIndex), because a hub declares every point before any driver
runs: the switch fills in their names and aliases, a listed port it lacks
reads bad(config_error), and a port the config does not list is not shown.
Each period the driver reads the system group and the IF-MIB tables (one
GETBULK walk); bit and error rates come from counter deltas timed by the
agent's own sysUpTime, so a counter wrap or an agent restart never shows a
spike. linkDown/linkUp traps, received by one listener per hub and listen
address, update the port at once. A wrong community or v3 key is
bad(config_error) with a long retry delay (``cityvisor.hal.snmp``), not a
retry storm. The family's page is docs/families/switches.md.
"""

from __future__ import annotations

import ipaddress
from copy import copy
from typing import Any, Literal

import anyio
import pydantic
from anyio.abc import ObjectReceiveStream, TaskStatus

from cityvisor import (
    Deadband,
    DeviceConfig,
    DeviceError,
    DeviceType,
    Quality,
    alarm,
    command,
    hookimpl,
    point,
    reaches,
)
from cityvisor.hal import snmp
from cityvisor.hal.snmp import CommunityCredentials, IfAdminStatus, IfOperStatus, UsmCredentials

COLUMNS = {
    **{"name": snmp.IF_NAME, "alias": snmp.IF_ALIAS, "speed": snmp.IF_HIGH_SPEED},
    **{"admin_status": snmp.IF_ADMIN_STATUS, "oper_status": snmp.IF_OPER_STATUS},
    **{"in": snmp.IF_HC_IN_OCTETS, "out": snmp.IF_HC_OUT_OCTETS},
    **{"in_errors": snmp.IF_IN_ERRORS, "out_errors": snmp.IF_OUT_ERRORS},
}
"""The IF-MIB columns read each period (ifTable and ifXTable, both indexed by ifIndex)."""
COUNTERS = ("in", "out", "in_errors", "out_errors")


class SwitchConfig(DeviceConfig):
    """Settings of one SNMP switch."""

    host: str
    """Address of the switch's SNMP agent (IP address or DNS name)."""
    port: int = pydantic.Field(161, ge=1, le=65535)
    """UDP port of the agent."""
    version: Literal["v2c", "v3"] = "v2c"
    """SNMP version: ``"v2c"`` (communities) or ``"v3"`` (USM user, authPriv)."""
    community: str = "public"
    """v2c: the read community."""
    write_community: str = ""
    """v2c: the community allowed to set ifAdminStatus; empty, port commands fail."""
    user: str = ""
    """v3: the USM user (authPriv), for reads and port commands alike."""
    auth_key: str = ""
    """v3: authentication key (8 characters or more); keep it in the environment: ``${NAME}``."""
    priv_key: str = ""
    """v3: privacy key (8 characters or more), ``${NAME}`` as well."""
    auth_protocol: snmp.AuthProtocol = "SHA"
    """v3: MD5, SHA, SHA224, SHA256, SHA384 or SHA512."""
    priv_protocol: snmp.PrivProtocol = "AES"
    """v3: DES, AES, AES192 or AES256."""
    ports: pydantic.PositiveInt | list[pydantic.PositiveInt] = 48
    """The ports shown: a count N (ifIndex 1 to N) or a list of ifIndex. ifIndex i is ``p<i>``."""
    critical_ports: list[pydantic.PositiveInt] = []
    """ifIndex of the ports whose link loss raises an alarm (uplinks, camera ports)."""
    poll_period: float = pydantic.Field(10.0, gt=0)
    """Seconds between two polls of the whole switch."""
    timeout: float = pydantic.Field(1.0, gt=0)
    """Seconds to wait for each SNMP answer (then ``retries`` more attempts)."""
    retries: int = pydantic.Field(1, ge=0)
    """Extra attempts after a timeout."""
    error_rate_limit: float = pydantic.Field(1.0, ge=0)
    """Errors per second on a port (in + out) above which its error alarm rises."""
    trap_listen: str = "0.0.0.0:162"
    """``address:port`` where the hub listens for traps (one listener per value); empty: none."""
    trap_community: str = ""
    """v2c community of the switch's traps (default: ``community``); v3 traps use ``user``."""
    trap_source: str = ""
    """IP address the switch sends its traps from, when it is not ``host``."""

    @property
    def if_indexes(self) -> list[int]:
        """The ifIndex of every port shown."""
        ports = self.ports
        return list(range(1, ports + 1)) if isinstance(ports, int) else list(ports)

    @property
    def credentials(self) -> CommunityCredentials | UsmCredentials:
        """The read credentials (and, for v3, the write credentials too)."""
        if self.version == "v2c":
            return CommunityCredentials(self.community)
        keys = (self.auth_key, self.priv_key, self.auth_protocol, self.priv_protocol)
        return UsmCredentials(self.user, *keys)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> SwitchConfig:
        if self.version == "v3" and not self.user:
            raise ValueError("version v3 needs a user")
        self.credentials  # noqa: B018 - building them checks the v3 keys
        if len(set(self.if_indexes)) != len(self.if_indexes):
            raise ValueError("ports lists an ifIndex twice")
        if unknown := sorted(set(self.critical_ports) - set(self.if_indexes)):
            raise ValueError(f"critical_ports {unknown} are not among the ports")
        if self.trap_listen:
            _address(self.trap_listen)
        return self


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected address:port, not {text!r}")
    return host, int(port)


def _doc(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


ADMIN = {s.value: s.name.lower() for s in IfAdminStatus}
OPER = {s.value: s.name.lower() for s in IfOperStatus}
OUT_OF_RANGE = Quality.bad("device_failure:out_of_range")
"""The quality of a status the agent sent outside its enumeration (ifOperStatus 42)."""
_STATUS = {
    "admin_status": (snmp.IF_ADMIN_STATUS, ADMIN),
    "oper_status": (snmp.IF_OPER_STATUS, OPER),
}


class Switch(DeviceType):
    """A managed fibre network switch, watched and driven over SNMP (IF-MIB)."""

    family = "switches"
    type_name = "switches.switch"
    label = _doc("Commutateur réseau", "Network switch")
    Config = SwitchConfig

    sys_name = point(str, doc=_doc("Nom (sysName)", "Name (sysName)"))
    sys_descr = point(str, doc=_doc("Description (sysDescr)", "Description (sysDescr)"))
    uptime = point(float, unit="s", doc=_doc("Temps de marche", "Agent uptime"))
    name = point(str, per="port", doc=_doc("Nom du port (ifName)", "Port name (ifName)"))
    alias = point(str, per="port", doc=_doc("Libellé (ifAlias)", "Description (ifAlias)"))
    admin_status = point(labels=ADMIN, per="port", doc=_doc("État demandé", "Admin status"))
    oper_status = point(labels=OPER, per="port", doc=_doc("État du lien", "Link status"))
    speed = point(float, unit="bit/s", per="port", doc=_doc("Vitesse", "Speed"))
    in_rate = point(
        float,
        unit="bit/s",
        per="port",
        deadband=Deadband.percent(1),
        doc=_doc("Débit entrant", "Bit rate in"),
    )
    out_rate = point(
        float,
        unit="bit/s",
        per="port",
        deadband=Deadband.percent(1),
        doc=_doc("Débit sortant", "Bit rate out"),
    )
    error_rate = point(
        float,
        unit="1/s",
        per="port",
        doc=_doc("Erreurs par seconde (entrée + sortie)", "Errors per second (in + out)"),
    )
    error_rate_high = point(
        bool,
        per="port",
        doc=_doc("Erreurs au-dessus du seuil", "error_rate above error_rate_limit"),
    )
    critical_down = point(
        bool,
        per="port",
        doc=_doc("Port critique activé mais sans lien", "Critical port enabled but without link"),
    )

    # Every port has both alarms; only a critical port ever sets critical_down.
    critical_port_down = alarm(
        "critical_down",
        equals=True,
        priority="high",
        procedure="NET-01",
        message=_doc("Port critique hors service", "Critical port down"),
    )
    port_errors = alarm(
        "error_rate_high",
        equals=True,
        priority="medium",
        procedure="NET-02",
        message=_doc("Taux d'erreurs élevé", "High error rate"),
    )

    @command(
        per="port",
        confirm=True,
        feedback=reaches("admin_status", value=2, within=5),
        label=_doc("Désactiver le port", "Disable the port"),
        doc=_doc(
            "Couper le port (ifAdminStatus = down).", "Shut the port down (ifAdminStatus = down)."
        ),
    )
    async def disable_port(self, port: str) -> None:
        """Shut the port down (SET ifAdminStatus = down)."""
        await self._set_admin(port, IfAdminStatus.DOWN)

    @command(
        per="port",
        confirm=True,
        feedback=reaches("admin_status", value=1, within=5),
        label=_doc("Activer le port", "Enable the port"),
        doc=_doc(
            "Remettre le port en service (ifAdminStatus = up).",
            "Bring the port back up (ifAdminStatus = up).",
        ),
    )
    async def enable_port(self, port: str) -> None:
        """Bring the port back up (SET ifAdminStatus = up)."""
        await self._set_admin(port, IfAdminStatus.UP)

    # ------------------------------------------------------------------ driver

    config: SwitchConfig
    _client: snmp.SnmpClient | None = None
    _writer: snmp.SnmpClient | None = None
    _rates: dict[int, list[snmp.CounterRate]] = {}
    bad_varbinds: int = 0
    """Values of the wrong type the agent sent (in traps or replies), ignored and counted."""
    _bad_logged: frozenset[tuple[str, str]] = frozenset()

    def members(self, per: str) -> list[str]:
        """Ports are ``p<ifIndex>``, from the config: points exist before any discovery."""
        return [f"p{index}" for index in self.config.if_indexes]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll every ``poll_period`` seconds, and apply link traps as they arrive."""
        config = self.config
        manager = self.resources.get("snmp.manager", snmp.SnmpManager)
        agent = {"host": config.host, "port": config.port}
        options: dict[str, Any] = {"timeout": config.timeout, "retries": config.retries, **agent}
        # v3: an engine of this run's own, so that a switch swapped for a spare (a new
        # engine ID) is discovered afresh when its timeouts restart the driver.
        dedicated = config.version == "v3"
        client = manager.client(credentials=config.credentials, dedicated=dedicated, **options)
        self._client = self._writer = client
        try:
            await self._run(manager, options, task_status)
        finally:
            self._client = self._writer = None
            client.close()

    async def _run(
        self, manager: snmp.SnmpManager, options: dict[str, Any], task_status: TaskStatus[None]
    ) -> None:
        config, client = self.config, self._client
        assert client is not None
        if config.version == "v2c":
            writer = CommunityCredentials(config.write_community)
            self._writer = (
                manager.client(credentials=writer, **options) if writer.community else None
            )
        # New counters for each run: a rate never spans an outage.
        octets, errors = snmp.CounterRate(scale=8), snmp.CounterRate(bits=32)
        self._rates = {
            i: [copy(octets), copy(octets), copy(errors), copy(errors)] for i in config.if_indexes
        }
        # Online is "the agent answers": one GET, so that a hub of many switches starts
        # at once. Credentials the agent refuses fail here: bad(config_error).
        await client.get(snmp.SYS_UPTIME)
        async with anyio.create_task_group() as tg:
            traps = await self._trap_stream()
            if traps is not None:
                tg.start_soon(self._apply_traps, traps)
            task_status.started()
            next_poll = anyio.current_time()  # polls keep this phase, not drift by their length
            while True:
                await self._poll()
                next_poll = max(next_poll + config.poll_period, anyio.current_time())
                await anyio.sleep_until(next_poll)

    async def _poll(self) -> None:
        assert self._client is not None
        system = await self._client.get(snmp.SYS_NAME, snmp.SYS_DESCR, snmp.SYS_UPTIME)
        uptime = float(system[snmp.SYS_UPTIME] or 0)
        rows = await self._client.walk_table(COLUMNS)
        values = {"sys_name": system[snmp.SYS_NAME], "sys_descr": system[snmp.SYS_DESCR]}
        values["uptime"] = uptime
        for index, rates in self._rates.items():
            row, p = rows.get(index), f"p{index}"
            if row is None:  # listed in the config, unknown to the switch
                self.mark(Quality.bad("config_error"), [f"{p}/{name}" for name in PORT_POINTS])
                continue
            in_bps, out_bps, in_errors, out_errors = (
                rate.update(counter, uptime) if isinstance(counter := row.get(key), int) else None
                for rate, key in zip(rates, COUNTERS, strict=True)
            )
            values |= {f"{p}/name": row.get("name"), f"{p}/alias": row.get("alias")}
            values |= {f"{p}/in_rate": in_bps, f"{p}/out_rate": out_bps}
            admin = self._checked(index, "admin_status", row.get("admin_status"))
            oper = self._checked(index, "oper_status", row.get("oper_status"))
            values |= self._status(index, admin, oper)
            if isinstance(speed := row.get("speed"), int):
                values[f"{p}/speed"] = speed * 1e6  # ifHighSpeed counts Mbit/s
            if in_errors is not None and out_errors is not None:
                values[f"{p}/error_rate"] = errors = in_errors + out_errors
                values[f"{p}/error_rate_high"] = errors > self.config.error_rate_limit
        self.publish({key: value for key, value in values.items() if value is not None})

    def _checked(self, index: int, name: str, value: Any) -> int | Quality | None:
        """A status value the agent sent, checked against its enumeration.

        An integer of the enumeration is the value. Anything but an integer
        (a string for ifOperStatus, an OID for ifAdminStatus) is not a status
        at all: counted, logged once per column and kind, and ignored (None),
        so the rest of the trap or reply still applies. An integer outside
        the enumeration (ifOperStatus 42) is the agent reporting nonsense: the
        point is marked bad (:data:`OUT_OF_RANGE`), never shown as a value.
        """
        if value is None:
            return None
        column, labels = _STATUS[name]
        if isinstance(value, int) and not isinstance(value, bool):
            if value in labels:
                return value
            problem = "out of range"
        else:
            problem = "of the wrong type"
        self.bad_varbinds += 1
        if (column, problem) not in self._bad_logged:
            self._bad_logged = self._bad_logged | {(column, problem)}
            self.log.warning(
                "%s: %s.%d is %s (%r); ignored, and counted from now on without a log line",
                self.id,
                column,
                index,
                problem,
                value,
            )
        return OUT_OF_RANGE if problem == "out of range" else None

    def _status(self, index: int, admin: Any, oper: Any) -> dict[str, Any]:
        """A port's status points. A critical port is down when enabled but without link.

        ``admin`` and ``oper`` come from :meth:`_checked`: a status out of its
        range marks its point bad here, and leaves ``critical_down`` as it was.
        """
        p = f"p{index}"
        statuses = (("admin_status", admin), ("oper_status", oper))
        bad = [f"{p}/{name}" for name, value in statuses if value is OUT_OF_RANGE]
        if bad:
            self.mark(OUT_OF_RANGE, bad)
        if admin is OUT_OF_RANGE:
            admin = None
        if oper is OUT_OF_RANGE:
            oper = None
        critical = index in self.config.critical_ports
        down = None if oper is None else critical and admin != 2 and oper != IfOperStatus.UP
        status = {f"{p}/admin_status": admin, f"{p}/oper_status": oper, f"{p}/critical_down": down}
        return {key: value for key, value in status.items() if value is not None}

    async def _set_admin(self, port: str, status: IfAdminStatus) -> None:
        if self._client is None:
            raise DeviceError(f"{self.id} is not connected")
        if self._writer is None:
            raise DeviceError("no write_community in the config", reason="config_error")
        index = int(port.removeprefix("p"))
        await self._writer.set_admin_status(index, status)
        # What the switch reads back, not what we asked for, is the command's feedback.
        oids = _oids(index)
        now = await self._client.get(*(oid for _name, oid in oids))
        checked = (self._checked(index, name, now[oid]) for name, oid in oids)
        self.publish(self._status(index, *checked))

    async def _trap_stream(self) -> ObjectReceiveStream[snmp.Notification] | None:
        config, client = self.config, self._client
        if not config.trap_listen or client is None:
            return None
        listen = config.trap_listen
        receiver = self.resources.get(
            f"snmp.traps:{listen}", lambda: snmp.TrapReceiver(*_address(listen))
        )
        credentials = config.credentials
        if isinstance(credentials, UsmCredentials):
            receiver.accept(users=[credentials])
        else:
            receiver.accept(communities=[config.trap_community or config.community])
        # A v3 trap is signed with the agent's engine ID: the receiver must know it.
        engine_id = await client.engine_id() if config.version == "v3" else None
        source = config.trap_source or await _ip_address(config.host)
        try:
            await receiver.ensure_started()  # the first switch binds, for the whole hub
        except OSError as error:  # polling goes on: traps only make it faster
            self.log.error("%s: no traps, cannot listen on %s: %s", self.id, listen, error)
            return None
        return receiver.open_stream(source, engine_id=engine_id)

    async def _apply_traps(self, traps: ObjectReceiveStream[snmp.Notification]) -> None:
        async with traps:
            async for trap in traps:
                index = trap.if_index
                if trap.trap_oid not in (snmp.LINK_DOWN, snmp.LINK_UP) or index not in self._rates:
                    continue
                link = IfOperStatus.UP if trap.trap_oid == snmp.LINK_UP else IfOperStatus.DOWN
                oper = self._checked(index, "oper_status", trap.value(snmp.IF_OPER_STATUS))
                admin = self._checked(index, "admin_status", trap.value(snmp.IF_ADMIN_STATUS))
                if oper is None:  # absent or unusable: the trap itself says which way
                    oper = link
                if admin is None:
                    admin = self.point(f"p{index}/admin_status").current.value
                self.publish(self._status(index, admin, oper), source_ts=trap.received_at)


PORT_POINTS = [name for name, spec in Switch.point_specs.items() if spec.per == "port"]


def _oids(index: int) -> list[tuple[str, str]]:
    """The status points of port ``index`` with their instance OIDs."""
    return [(name, f"{column}.{index}") for name, (column, _labels) in _STATUS.items()]


async def _ip_address(host: str) -> str:
    """The address the receiver will see ``host``'s traps come from."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return str((await anyio.getaddrinfo(host, None))[0][4][0])


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The switches family's device types."""
    return [Switch]


@hookimpl
def cityvisor_check_config(config: Any) -> list[str]:
    """Two switches sending traps from one address to one listener cannot be told apart."""
    senders: dict[tuple[str, str], str] = {}
    problems = []
    for number, entry in enumerate(config.devices):
        settings = entry.config
        if entry.type != Switch.type_name or not entry.enabled:
            continue
        listen = settings.get("trap_listen", "0.0.0.0:162")
        sender = (listen, settings.get("trap_source") or settings.get("host", ""))
        if listen and sender in senders:
            problems.append(
                f"devices[{number}].config.trap_source: {entry.id} sends traps from "
                f"{sender[1]} like {senders[sender]}; set the address it really sends from"
            )
        senders.setdefault(sender, entry.id)
    return problems
