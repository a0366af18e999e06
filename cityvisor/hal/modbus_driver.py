"""The driver every Modbus family shares: a device type whose points come from a profile.

A Modbus plugin declares its points, alarms and commands, names its profile,
and inherits the conversation: ``run()`` borrows the endpoint from the hub's
shared :class:`~cityvisor.hal.modbus.ModbusPool`, reads every declared point
the profile maps (coalesced into block reads), publishes each poll (points
that could not be read get their bad quality and its reason), and raises
:class:`~cityvisor.hal.modbus.ModbusConnectionError` when the equipment is
lost, so the supervisor marks the device and restarts it. Handlers write
with :meth:`ModbusDeviceType.write`::

    class PumpConfig(ModbusConfig):
        profile: str = "acme_pump"

    class Pump(ModbusDeviceType):
        family = "water"
        Config = PumpConfig
        running = point(bool, doc="Pump running")

        @command(feedback=reaches("running", True))
        async def start(self) -> None:
            await self.write("run", True)

Member points (``per="circuit"``) are read for the members the profile
names: a config attribute ``circuits = 4`` gives ``c1 .. c4`` when the
profile's ``[members.circuit]`` prefix is ``c``. An enum point whose profile
entry has ``labels`` is published by label name, so a vendor numbering its
states differently needs only its own profile.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import pydantic
from anyio.abc import TaskStatus

from cityvisor.core.alarms import alarm
from cityvisor.core.devices import DeviceConfig, DeviceError, DeviceType, point
from cityvisor.core.points import DataType, Quality

from .modbus import ModbusConnectionError, ModbusDevice, ModbusPool, PollResult
from .modbus_profile import Profile, RegisterSpec, load_profile

__all__ = ["ModbusConfig", "ModbusDeviceType", "shared_profile"]

_UNSET = object()


@functools.lru_cache(maxsize=64)
def shared_profile(name_or_path: str) -> Profile:
    """A profile loaded once per process, so every unit of one model shares its read plans."""
    return load_profile(name_or_path)


class ModbusConfig(DeviceConfig):
    """Settings of a device reached over Modbus/TCP and read through a profile."""

    host: str
    """Address of the device (or of the Modbus/TCP gateway in front of it)."""
    port: int = pydantic.Field(502, ge=1, le=65535)
    """TCP port of the device or gateway."""
    unit: int = pydantic.Field(1, ge=1, le=247)
    """Modbus unit id of the device behind that address."""
    profile: str
    """Register map: a bundled profile's name, or the absolute path of a vendor's profile file."""
    period: float = pydantic.Field(1.0, gt=0, le=3600)
    """Seconds between two polls."""

    @pydantic.model_validator(mode="after")
    def _profile_serves_the_members(self) -> ModbusConfig:
        # A profile that cannot be read, or that has fewer members than configured,
        # is a config error that check-config names, not a driver restarting forever.
        profile = shared_profile(self.profile)
        for kind in profile.members:
            count = getattr(self, kind + "s", None)
            if count is not None:
                profile.member_names(kind, count)
        return self


class ModbusDeviceType(DeviceType):
    """Base of the device types read and written through a Modbus profile.

    ``Config`` must be a :class:`ModbusConfig`. Override :meth:`received` to
    derive points of your own from each poll.

    Besides ``online``, each such type has a ``device_fault`` point, the
    exception the unit answers every read with (``exception 4
    (server_device_failure)``, empty while it answers normally), and a
    ``device_fault`` alarm (high, procedure COMM-02) once that lasted its
    on-delay (10 s): the unit is reachable, so ``communication_lost`` stays
    clear, but useless.
    """

    Config: ClassVar[type[ModbusConfig]] = ModbusConfig
    modbus: ModbusDevice | None = None
    """The unit while the driver runs (None while it is disconnected)."""

    device_fault = point(
        str,
        doc={
            "fr": "Défaut signalé par l'équipement (vide : aucun)",
            "en": "Fault the device answers with (empty: none)",
        },
    )
    # The device answers, but only to refuse: communication works and says the
    # equipment does not. Its own alarm, after a delay that a busy moment rides out.
    device_fault_alarm = alarm(
        "device_fault",
        not_equals="",
        priority="high",
        on_delay=10.0,
        message={"fr": "Défaut de l'équipement : {value}", "en": "Device fault: {value}"},
        procedure="COMM-02",
        name="device_fault",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names: Mapping[str, Mapping[int, str]] = {}
        self._published: dict[str, Any] = {}
        # A type that derives points in received() sees every value of every poll;
        # the others are offered only what changed (see publish_poll).
        self._every_value = type(self).received is not ModbusDeviceType.received
        self._fault: str | None = None

    @property
    def profile(self) -> Profile:
        """The device's register map."""
        return shared_profile(self.config.profile)  # type: ignore[attr-defined]

    def members(self, per: str) -> list[str]:
        """A count in the config (``circuits = 4``) names members as the profile does (``c1``)."""
        count = getattr(self.config, per + "s", None)
        profile = shared_profile(self.config.profile)  # type: ignore[attr-defined]
        if isinstance(count, int) and per in profile.members:
            return profile.member_names(per, count)
        return super().members(per)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the device every ``period`` and publish every point the profile maps.

        Started (online) after the first poll that got a valid answer; a
        connection that opens and then gives only timeouts or undecodable
        replies raises :class:`~cityvisor.hal.modbus.ModbusConnectionError`
        with the endpoint's backoff, and the device stays offline.
        """
        config: ModbusConfig = self.config  # type: ignore[assignment]
        kinds = {spec.per for spec in self.point_specs.values() if spec.per}
        members = {kind: self.members(kind) for kind in kinds}
        mapped = [
            relative
            for relative in self.profile.resolve(members)
            if relative.rpartition("/")[2] in self.point_specs
        ]
        pool = self.resources.get("modbus", ModbusPool)
        async with pool.tcp(config.host, config.port) as endpoint:
            self.modbus = endpoint.device(config.unit, self.profile, members, only=mapped)
            self._names = self._label_names(self.modbus.specs)
            self._published = {}  # the supervisor marked every point bad: publish them all
            self._fault = None
            try:
                async with contextlib.aclosing(self.modbus.poll_every(config.period)) as polls:
                    first = await anext(polls)  # raises if the connection cannot be used
                    if not first.answered:
                        # Online means "the device answers": a connection that opens and
                        # then says nothing (or nothing valid) is no better than none.
                        why = first.errors[0] if first.errors else "no reply"
                        raise ModbusConnectionError(
                            f"unit {config.unit} at {endpoint.address} gave no valid answer: {why}",
                            retry_after=self.modbus.retry_after,
                        )
                    self.publish_poll(first)
                    task_status.started()
                    async for result in polls:
                        self.publish_poll(result)
            finally:
                self.modbus = None

    def received(self, values: dict[str, Any]) -> None:
        """Called with each poll's good values (by relative id) before they are published.

        Add or change entries to publish derived points; the default does nothing.
        """

    async def write(self, relative: str, value: Any) -> None:
        """Write one profile point (``"c1/setpoint"``) in engineering units."""
        if self.modbus is None:
            raise DeviceError(f"{self.id} is not connected")
        await self.modbus.write(relative, value)

    def publish_poll(self, result: PollResult) -> None:
        """Publish one poll's result, as ``run()`` does after each poll.

        Good values go through :meth:`received`, then out; points that could
        not be read keep their value and take the failure's quality.
        """
        # Report by exception: a value equal to the one published last would be
        # dropped by the point database anyway; not offering it is much cheaper.
        # Unless received() is overridden (it sees every value), only
        # result.changed is even looked at: the values of blocks whose registers
        # did not change since the last poll were published then.
        if result.answered:
            self.answered()
        published = self._published
        failed = result.failed
        for relatives in failed.values():
            for relative in relatives:
                published.pop(relative, None)
        if self._every_value:
            values = {k: v for k, v in result.items() if not isinstance(v, Quality)}
        else:
            values = dict(result.changed)
        for relative, names in self._names.items():
            if values.get(relative) in names:
                values[relative] = names[values[relative]]
        if self._every_value:
            self.received(values)
        changed = {k: v for k, v in values.items() if published.get(k, _UNSET) != v}
        if changed:
            published.update(changed)
            self.publish(changed)
        for quality, relatives in failed.items():
            self.mark(quality, relatives)
        # Every point refused by the device itself: say so, with the exception it gave.
        fault = result.device_fault
        text = "" if fault is None else f"exception {fault.code} ({fault.name})"
        if text != self._fault:
            self._fault = text
            self.publish({"device_fault": text})

    def _label_names(self, specs: Mapping[str, RegisterSpec]) -> dict[str, dict[int, str]]:
        # The profile's labels say what the vendor's numbers mean; the point's own
        # labels decide how cityvisor numbers them. A number the profile does not
        # name, or a name the point does not know, stays a number.
        names: dict[str, dict[int, str]] = {}
        for relative, register in specs.items():
            spec = self.point_specs.get(relative.rpartition("/")[2])
            if register.labels and spec is not None and spec.dtype is DataType.ENUM:
                known = set((spec.labels or {}).values())
                names[relative] = {
                    n: name for n, name in enumerate(register.labels) if name in known
                }
        return names
