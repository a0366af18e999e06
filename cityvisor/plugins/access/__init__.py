"""Access control: doors with an OSDP badge reader, a door contact and a strike relay.

A door decides every card read itself, at once, from the hub's in-memory
copy of the badges and their rights (:mod:`.rights`): granted, it pulses the
strike and shows green; denied, it shows red and beeps; in lockdown only the
badges on the lockdown exception list pass. Every decision is journaled with
the badge's pseudonym, never its number. Badges are managed with
``cityvisor badges`` (:mod:`.cli`) and the API (:mod:`.api`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from anyio.abc import TaskStatus
from pydantic import AfterValidator, Field

from cityvisor import DeviceConfig, DeviceError, DeviceType, alarm, command, hookimpl, point
from cityvisor import reaches as feedback
from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry
from cityvisor.hal import osdp

from .rights import AccessControl, pseudonym_key

MODES = ["normal", "lockdown"]


def _hex_key(value: str | None) -> str | None:
    if value is not None and (
        len(value) != 32 or not all(c in "0123456789abcdefABCDEF" for c in value)
    ):
        raise ValueError("a secure channel key is 32 hexadecimal digits")
    return value


class DoorConfig(DeviceConfig):
    """A door: where its reader is on which RS-485 line, its building, its timings."""

    port: str
    """Serial device or pyserial URL of the reader's RS-485 line (``/dev/ttyUSB0``)."""
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    """Line speed in bit/s; every door on a line uses the same."""
    address: int = Field(ge=0, le=126)
    """The reader's OSDP address on its line."""
    secure_channel_key: Annotated[str | None, AfterValidator(_hex_key)] = None
    """The reader's SCBK (32 hex digits; write ``${ENV}``). Without it the line is in clear."""
    building: str = Field(min_length=1)
    """The building the door opens: rights are granted per building or per zone."""
    held_open_time: float = Field(30.0, gt=0)
    """Seconds the door may stay open before it is reported held open."""
    strike_pulse: float = Field(5.0, ge=0.5, le=25)
    """Seconds the strike stays released after a granted badge or an unlock."""


class Door(DeviceType):
    """A door with an OSDP badge reader, its door contact (input 0) and strike (output 0)."""

    family = "access"
    type_name = "access.door"
    label = {"fr": "Porte à badge", "en": "Badge door"}
    Config = DoorConfig

    secure = point(bool, doc={"fr": "Canal sécurisé", "en": "Secure channel"})
    door_open = point(bool, doc={"fr": "Porte ouverte", "en": "Door open"})
    door_forced = point(bool, doc={"fr": "Porte forcée", "en": "Door forced"})
    door_held_open = point(bool, doc={"fr": "Porte restée ouverte", "en": "Door held open"})
    tamper = point(bool, doc={"fr": "Lecteur arraché", "en": "Reader tampered"})
    power_failure = point(bool, doc={"fr": "Lecteur sans secteur", "en": "Reader power failure"})
    access_mode = point(labels=MODES, doc={"fr": "Mode d'accès", "en": "Access mode"})
    last_access = point(
        labels=["denied", "granted"], doc={"fr": "Dernier passage", "en": "Last access"}
    )
    last_badge = point(
        str, doc={"fr": "Dernier badge (pseudonyme)", "en": "Last badge (pseudonym)"}
    )
    last_reason = point(str, doc={"fr": "Motif", "en": "Reason of the last access"})
    line_errors = point(
        int, history="none", doc={"fr": "Trames rejetées", "en": "Bad frames on the line"}
    )

    forced = alarm("door_forced", equals=True, priority="high", procedure="ACCESS-01",
                   message={"fr": "Porte forcée", "en": "Door forced"})  # fmt: skip
    held_open = alarm("door_held_open", equals=True, procedure="ACCESS-02",
                      message={"fr": "Porte restée ouverte", "en": "Door held open"})  # fmt: skip
    tampered = alarm("tamper", equals=True, priority="high", procedure="ACCESS-03",
                     message={"fr": "Lecteur arraché", "en": "Reader tampered"})  # fmt: skip

    _reader: osdp.Reader | None = None
    _unlocked_until = 0.0
    _opened_at: float | None = None
    _held = _door_known = False

    @command(confirm=True, label={"fr": "Ouvrir une fois", "en": "Unlock once"},
             doc={"fr": "Libérer la gâche un instant (quelqu'un qu'on fait entrer).",
                  "en": "Release the strike for a moment (someone let in from the control room)."})  # fmt: skip
    async def unlock_once(self) -> None:
        """Release the strike for ``strike_pulse`` seconds (someone let in from the control room)."""
        await self._release_strike()

    # Locking down is the safe direction: operators may; reopening is a supervisor's decision.
    # The mode is the hub's (decisions are ours), so a door whose reader is offline is
    # locked down too, and shows it when the reader is back.
    @command(confirm=True, feedback=feedback("access_mode", 1, within=5), requires_online=False,
             label={"fr": "Confiner", "en": "Lock down"},
             doc={"fr": "Refuser tous les badges sauf les exceptions au confinement, jusqu'à la levée.",
                  "en": "Deny every badge but the lockdown exceptions, until released."})  # fmt: skip
    async def lockdown(self) -> None:
        """Deny every badge but the lockdown exceptions, until released."""
        await self._set_mode("lockdown")

    @command(confirm=True, role="supervisor", feedback=feedback("access_mode", 0, within=5),
             requires_online=False, label={"fr": "Lever le confinement", "en": "Release"},
             doc={"fr": "Retour à l'accès normal.", "en": "Back to normal access."})  # fmt: skip
    async def release(self) -> None:
        """Back to normal access."""
        await self._set_mode("normal")

    @property
    def settings(self) -> DoorConfig:
        """The door's config, typed."""
        return self.config  # type: ignore[return-value]

    @property
    def control(self) -> AccessControl:
        """The hub's badge book and door modes, shared by every door."""
        return self.resources.get("access", AccessControl)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Attach the reader, then decide every card read and follow the door until the link drops."""
        config = self.settings
        bus = self.resources.get(
            f"osdp:{config.port}", lambda: osdp.OsdpBus(config.port, baudrate=config.baudrate)
        )
        with anyio.move_on_after(10):
            await self.control.ready.wait()
        if not self.control.ready.is_set():
            raise DeviceError("the badge rights are not loaded", reason="not_connected")
        key = bytes.fromhex(config.secure_channel_key) if config.secure_channel_key else None
        try:
            async with bus.reader(config.address, scbk=key) as reader:
                if not await reader.wait_online(10):
                    raise DeviceError(f"reader {config.address} on {config.port} does not answer")
                self._reader, self._opened_at = reader, None
                self._held = self._door_known = False
                mode = MODES.index(self.control.modes.get(self.id, "normal"))
                self.publish(
                    {"secure": reader.secure, "access_mode": mode, "door_held_open": False}
                )
                task_status.started()
                await self._show_mode()
                await self._follow(reader, bus)
        except osdp.OsdpError as error:  # a refused key or an address clash: retry slowly
            slow = isinstance(error, osdp.OsdpConfigError)
            reason, retry = ("config_error", 60.0) if slow else ("comm_failure", None)
            raise DeviceError(str(error), reason=reason, retry_after=retry) from None
        finally:
            self._reader = None

    async def _follow(self, reader: osdp.Reader, bus: osdp.OsdpBus) -> None:
        errors, held = -1, self.settings.held_open_time
        while reader.online:
            self.answered()  # online: the reader answers the bus's polls
            event: osdp.ReaderEvent | None = None
            due = 1.0
            if self._opened_at is not None and not self._held:
                due = self._opened_at + held - anyio.current_time()
            with anyio.move_on_after(max(0.0, min(1.0, due))):
                event = await reader.events.receive()
            if isinstance(event, osdp.CardRead):
                await self._decide(reader, event)
            elif isinstance(event, osdp.InputStatus) and event.inputs:
                self._door(event.inputs[0])
            elif isinstance(event, osdp.LocalStatus):
                self.publish({"tamper": event.tamper, "power_failure": event.power_failure})
            elif isinstance(event, osdp.LinkStatus):
                self.publish({"secure": event.secure})
            if due <= 0 and self._opened_at is not None and not self._held:
                self._held = True
                self.publish({"door_held_open": True})
            if bus.counters.errors != errors:
                errors = bus.counters.errors
                self.publish({"line_errors": errors})
        raise DeviceError(reader.failure or f"reader {reader.address} went offline")

    def _door(self, is_open: bool) -> None:
        if is_open and self._opened_at is None:
            # A door found open when the reader connects was not seen being forced.
            forced = self._door_known and anyio.current_time() > self._unlocked_until
            self._opened_at = anyio.current_time()
            self.publish({"door_open": True, "door_forced": forced})
        elif not is_open:
            self._opened_at, self._held = None, False
            self.publish({"door_open": False, "door_forced": False, "door_held_open": False})
        self._door_known = True

    async def _decide(self, reader: osdp.Reader, read: osdp.CardRead) -> None:
        """Grant or deny a card, signal it at the door, then publish and journal it."""
        config, control = self.settings, self.control
        mode = control.modes.get(self.id, "normal")
        decision = control.book.decide(
            read.number,
            building=config.building,
            zone=self.zone,
            lockdown=mode == "lockdown",
            now=now_ms(),
        )
        badge, signalled = control.pseudonym(read.number), True
        try:
            if decision.granted:
                await self._release_strike()
            else:
                await reader.led("red", seconds=2)
                await reader.buzzer(repeat=2)
        except osdp.OsdpError as error:  # the link is dropping: journal the decision all the same
            self.log.warning("door %s: the reader did not take the decision: %s", self.id, error)
            signalled = False
        self.publish(
            {
                "last_access": int(decision.granted),
                "last_badge": badge,
                "last_reason": decision.reason,
            }
        )
        verdict = "granted" if decision.granted else "denied"
        details = {"badge": badge, "granted": decision.granted, "reason": decision.reason}
        details |= {"mode": mode, "building": config.building, "signalled": signalled}
        entry = JournalEntry(kind="access", message=f"access {verdict}: {decision.reason}",
                             device=self.id, point=self.point_id("last_access"), data=details)  # fmt: skip
        await control.journal(entry)

    async def _release_strike(self) -> None:
        if self._reader is None:
            raise DeviceError("the reader is offline")
        self._unlocked_until = anyio.current_time() + self.settings.strike_pulse
        await self._reader.output(0, pulse=self.settings.strike_pulse)
        await self._reader.led("green", seconds=self.settings.strike_pulse)

    async def _set_mode(self, mode: str) -> None:
        await self.control.set_mode(self.id, mode)
        self.publish({"access_mode": MODES.index(mode)})
        await self._show_mode()

    async def _show_mode(self) -> None:
        """A door in lockdown shows red for good: closed, whoever comes to it."""
        lockdown = self.control.modes.get(self.id) == "lockdown"
        try:
            if self._reader is not None:
                await self._reader.led("red" if lockdown else "off")
        except osdp.OsdpError as error:  # the mode holds all the same: decisions are ours
            self.log.warning("door %s: cannot show its mode: %s", self.id, error)


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The access family's device types."""
    return [Door]


@hookimpl
def cityvisor_check_config(config: Any) -> list[str]:
    """Doors sharing a line must agree on its speed and have addresses of their own."""
    problems: list[str] = []
    lines: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(config.devices):
        if entry.type != Door.type_name or not entry.enabled:
            continue
        port, speed, address = (entry.config.get(k) for k in ("port", "baudrate", "address"))
        first = lines.setdefault(port, {"speed": speed or 9600, "by": {}})
        if (speed or 9600) != first["speed"]:
            problems.append(f"devices[{index}].config.baudrate: {port} runs at {first['speed']}")
        if address in first["by"]:
            problems.append(
                f"devices[{index}].config.address: {address} on {port} is {first['by'][address]}'s"
            )
        first["by"].setdefault(address, entry.id)
    return problems


@hookimpl
def cityvisor_startup(hub: Any) -> Any:
    """With doors to serve: load the badge book, then keep it fresh."""
    if not any(isinstance(device, Door) for device in hub.devices.values()):
        return None
    control = hub.resources.get("access", AccessControl)

    async def serve() -> None:
        key = await anyio.to_thread.run_sync(pseudonym_key, hub.config.store.path)
        await control.serve(hub.store, key)

    return serve


@hookimpl
def cityvisor_web_routes(hub: Any) -> Any:
    """The badge management API (``/api/v1/access/...``)."""
    from .api import routes

    return routes(hub)
