"""One reader on the bus: its events, and the LED, buzzer, text and outputs it is asked for."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import osdp
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .errors import OsdpConfigError, OsdpError
from .events import LinkStatus, ReaderEvent

if TYPE_CHECKING:  # the bus creates its readers: the type is only needed for hints
    from .bus import OsdpBus

LED_COLORS = {
    "off": osdp.CommandLEDColor.Black,
    "red": osdp.CommandLEDColor.Red,
    "green": osdp.CommandLEDColor.Green,
    "amber": osdp.CommandLEDColor.Amber,
    "blue": osdp.CommandLEDColor.Blue,
}
"""LED colours a reader is asked for, by name."""


ACK_TIMEOUT = 3.0
"""Seconds a reader has to acknowledge a command (libosdp retries within it)."""


# --------------------------------------------------------------------------- readers


@dataclass(eq=False)
class Reader:
    """One reader attached to a bus (see :meth:`OsdpBus.reader`).

    ``events`` yields :data:`ReaderEvent` objects in arrival order; it holds
    at most the bus's ``event_buffer`` events, and counts in ``dropped``
    those it had to refuse. ``online`` and ``secure`` follow the link.
    """

    bus: OsdpBus
    address: int
    scbk: bytes | None
    events: MemoryObjectReceiveStream[ReaderEvent]
    _send: MemoryObjectSendStream[ReaderEvent]
    online: bool = False
    secure: bool = False
    secure_refused: bool = False
    failure: str = ""
    """Why the line failed (the reader is then offline for good: detach and attach again)."""
    dropped: int = 0
    was_online: bool = False
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _acks: deque[tuple[int, list[bool], anyio.Event]] = field(default_factory=deque)

    async def wait_online(self, timeout: float) -> bool:
        """Wait until the reader is online; False on timeout.

        :raises OsdpConfigError: the secure channel was refused (wrong key).
        :raises OsdpError: the line failed.
        """
        with anyio.move_on_after(timeout):
            while True:
                if self.failure:
                    raise OsdpError(self.failure)
                if self.secure_refused:
                    raise OsdpConfigError(
                        f"reader {self.address} refused the secure channel: its key is not ours"
                    )
                if self.online:
                    return True
                await self._changed.wait()
        return False

    async def output(self, number: int = 0, *, on: bool = True, pulse: float | None = None) -> None:
        """Switch an output; with ``pulse`` (seconds, up to 25.5), on for that long then back."""
        if pulse is not None:
            code, timer = (5 if on else 6), _tenths(pulse)
        else:
            code, timer = (2 if on else 1), 0
        await self._command(
            {
                "command": osdp.Command.Output,
                "output_no": number,
                "control_code": code,
                "timer_count": timer,
            }
        )

    async def led(self, color: str, *, seconds: float | None = None, reader: int = 0) -> None:
        """Light the reader's LED in ``color`` (see :data:`LED_COLORS`); for ``seconds``, or for good."""
        hue = LED_COLORS[color]
        command = {
            "command": osdp.Command.LED,
            "reader": reader,
            "led_number": 0,
            "control_code": 2 if seconds is not None else 1,
            "on_color": hue,
            "off_color": hue,
            "on_count": 1,
            "off_count": 0,
            "temporary": seconds is not None,
            "timer_count": _tenths(seconds or 0),
        }
        await self._command(command)

    async def buzzer(
        self, *, on: float = 0.2, off: float = 0.1, repeat: int = 1, reader: int = 0
    ) -> None:
        """Beep ``repeat`` times (``on`` and ``off`` in seconds)."""
        await self._command(
            {
                "command": osdp.Command.Buzzer,
                "reader": reader,
                "control_code": 2,
                "on_count": _tenths(on),
                "off_count": _tenths(off),
                "rep_count": repeat,
            }
        )

    async def _command(self, command: dict[str, Any]) -> None:
        if not self.online:
            raise OsdpError(f"reader {self.address} is offline")
        result: list[bool] = []
        acked = anyio.Event()
        entry = (command["command"], result, acked)
        # Registered before submitting: the acknowledgement may beat the worker thread home.
        self._acks.append(entry)
        try:
            if not await self.bus._submit(self.address, command):
                raise OsdpError(f"reader {self.address}: libosdp refused the command")
            with anyio.move_on_after(ACK_TIMEOUT):
                await acked.wait()
        finally:
            if entry in self._acks:
                self._acks.remove(entry)
        if not result:
            raise OsdpError(f"reader {self.address} did not acknowledge within {ACK_TIMEOUT:g} s")
        if not result[0]:
            raise OsdpError(f"reader {self.address} refused the command")

    # -- on the event loop, from the refresh thread ---------------------------

    def _deliver(self, event: ReaderEvent) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
            self.bus.counters.events_dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _notify(self, kind: int, arg0: int, arg1: int) -> None:
        if kind == osdp.EventNotification.Command:
            for entry in self._acks:
                if entry[0] == arg0 and not entry[2].is_set():
                    entry[1].append(bool(arg1))
                    entry[2].set()
                    break
            return
        if kind == osdp.EventNotification.SecureChannelStatus:
            self.secure = bool(arg0)
            if not arg0 and not self.was_online and self.scbk is not None:
                self.secure_refused = True
        elif kind == osdp.EventNotification.PeripheralDeviceStatus:
            self.online = bool(arg0)
            self.was_online = self.was_online or self.online
            if self.online:
                self.secure_refused = False
        else:
            return
        self._link_changed()

    def _link_changed(self) -> None:
        if not self.online:
            for _command, _result, acked in self._acks:
                acked.set()  # no result: "did not acknowledge"
        self._deliver(LinkStatus(self.address, self.online, self.secure, self.secure_refused))
        self._changed.set()
        self._changed = anyio.Event()

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.online = self.secure = False
        self._link_changed()


def _tenths(seconds: float) -> int:
    return max(0, min(255, round(seconds * 10)))
