"""Simulated OSDP badge readers (libosdp's peripheral-device mode) on a serial line.

A :class:`ReaderLine` is the reader end of an RS-485 line: a serial port (a
pty of a socat pair in tests) with one or more :class:`SimulatedReader` on
it, each at its own address, all driven by one thread. A reader answers the
control panel's polls (with the secure channel when given a key), presents
cards and keys on demand, reports its door contact (input 0), tamper switch
and power supply, and obeys the LED, buzzer and output commands, so that a
test can see what the control panel asked for::

    with ReaderLine("/tmp/line/readers") as line:
        door = line.add_reader(1, scbk=KEY)
        door.present_card("12:3456")
        assert door.wait_until(lambda r: r.relay_pulses == 1, timeout=5)

Every method of a reader may be called from any thread (the test's event
loop included): orders are queued to the line's thread, which alone calls
libosdp (it is not thread-safe). ``wait_until`` blocks: from async code,
call it through ``anyio.to_thread.run_sync``.

``cityvisor sim osdp`` runs a line on a new pty and prints its path.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import osdp
import osdp_sys
import serial

from ..osdp import LED_COLORS, LIBRARY_LOG_LEVEL, wiegand26

__all__ = ["ReaderLine", "SimulatedReader", "main"]

log = logging.getLogger(__name__)

_COLOR_NAMES = {value: name for name, value in LED_COLORS.items()}
_CAPABILITIES = [
    (osdp.Capability.ContactStatusMonitoring, 1, 1),
    (osdp.Capability.OutputControl, 1, 1),
    (osdp.Capability.LEDControl, 1, 1),
    (osdp.Capability.AudibleControl, 1, 1),
    (osdp.Capability.CardDataFormat, 1, 1),
    (osdp.Capability.CommunicationSecurity, 1, 1),
]


class _Inbox(osdp.Channel):
    """A reader's channel: every byte heard on the line (RS-485 is a shared pair), its replies out."""

    def __init__(self, line: ReaderLine) -> None:
        super().__init__()
        self.line = line
        self.received = bytearray()

    def read(self, max_bytes: int) -> bytes:
        chunk = bytes(self.received[:max_bytes])
        del self.received[:max_bytes]
        return chunk

    def write(self, buf: bytes) -> int:
        return self.line._reply(buf)

    def flush(self) -> None:
        pass


class SimulatedReader:
    """One reader on a :class:`ReaderLine`: its state, and the hands that act on it.

    What the control panel commanded, for tests to read: ``relay`` (output 0
    now), ``relay_pulses`` (timed closings so far), ``led`` (colour now) and
    ``leds`` (every colour shown, in order), ``beeps`` (buzzer sequences).
    What the world does to it: :meth:`present_card`, :meth:`press_keys`,
    :meth:`set_door`, :meth:`set_tamper`, :meth:`set_power_failure`,
    :meth:`unplug` and :meth:`plug`.
    """

    def __init__(self, line: ReaderLine, address: int, scbk: bytes | None) -> None:
        self.line = line
        self.address = address
        self.scbk = scbk
        self.online = False
        self.secure = False
        self.plugged = True
        self.relay = False
        self.relay_pulses = 0
        self.led = "off"
        self.leds: list[str] = []
        self.beeps = 0
        self.door_open = False
        self.tamper = False
        self.power_failure = False
        self._relay_until: float | None = None
        self._led_until: float | None = None
        self._led_permanent = "off"
        self._inbox = _Inbox(line)
        self._pd: Any = None

    # -- the world acts on the reader (any thread) ---------------------------------

    def present_card(self, number: str | None = None, *, data: bytes = b"", bits: int = 0) -> None:
        """Present a card: ``"12:3456"`` is a 26-bit Wiegand card; or give raw ``data`` and ``bits``."""
        if number is not None:
            facility, _, card = number.partition(":")
            data, bits = wiegand26(int(facility), int(card))
        self.line._order(self, self._card_event, data, bits)

    def press_keys(self, keys: str) -> None:
        """Type ``keys`` on the keypad."""
        event = {"event": osdp.Event.KeyPress, "reader_no": 0, "data": keys.encode("ascii")}
        self.line._order(self, self._submit, event)

    def set_door(self, is_open: bool) -> None:
        """Open or close the door (input 0, the door contact)."""
        self.line._order(self, self._set, "door_open", is_open)

    def set_tamper(self, tampered: bool) -> None:
        """Open or close the reader's case (its tamper switch)."""
        self.line._order(self, self._set, "tamper", tampered)

    def set_power_failure(self, failed: bool) -> None:
        """Lose or recover the reader's mains power."""
        self.line._order(self, self._set, "power_failure", failed)

    def unplug(self) -> None:
        """Take the reader off the line: it hears and answers nothing."""
        self.line._order(self, self._plug, False)

    def plug(self) -> None:
        """Put the reader back on the line."""
        self.line._order(self, self._plug, True)

    def wait_until(self, predicate: Callable[[SimulatedReader], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked at every change); False on timeout."""
        with self.line._changed:
            return self.line._changed.wait_for(lambda: predicate(self), timeout)

    # -- in the line's thread --------------------------------------------------------

    def _start(self) -> None:
        info = {
            "name": f"sim-reader-{self.address}",
            "address": self.address,
            "flags": 0,
            "channel": self._inbox,
            "scbk": self.scbk,
            "version": 1,
            "model": 1,
            "vendor_code": 0xC17F15,
            "serial_number": 0x1000 + self.address,
            "firmware_version": 0x010000,
        }
        capabilities = [
            {"function_code": f, "compliance_level": c, "num_items": n} for f, c, n in _CAPABILITIES
        ]
        osdp_sys.set_loglevel(LIBRARY_LOG_LEVEL)
        self._pd = osdp_sys.PeripheralDevice(info, capabilities=capabilities)
        self._pd.set_command_callback(self._on_command)

    def _tick(self, now: float) -> bool:
        """One turn: refresh libosdp, run out timers; True if something changed."""
        changed = False
        if self._pd is not None:
            self._pd.refresh()
            online, secure = bool(self._pd.is_online()), bool(self._pd.is_sc_active())
            if online and not self.online:
                self._report_status()
            changed = (online, secure) != (self.online, self.secure)
            self.online, self.secure = online, secure
        if self._relay_until is not None and now >= self._relay_until:
            self._relay_until = None
            self._set_relay(False)
            changed = True
        if self._led_until is not None and now >= self._led_until:
            self._led_until = None
            self._show(self._led_permanent)
            changed = True
        return changed

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        """libosdp's command callback: update the state only (calling libosdp here deadlocks)."""
        now = time.monotonic()
        kind = command["command"]
        if kind == osdp.Command.Output and command["output_no"] == 0:
            code, timer = command["control_code"], command["timer_count"] / 10
            if code in (5, 6):
                self._relay_until = now + timer
                self.relay_pulses += code == 5
                self._set_relay(code == 5)
            elif code in (1, 2, 3, 4):
                self._relay_until = None
                self._set_relay(code in (2, 4))
        elif kind == osdp.Command.LED:
            color = _COLOR_NAMES.get(command["on_color"], "off")
            if command.get("temporary"):
                self._led_until = now + command.get("timer_count", 0) / 10
                self._show(color)
            else:
                self._led_permanent = color
                if self._led_until is None:
                    self._show(color)
        elif kind == osdp.Command.Buzzer and command["control_code"] == 2:
            self.beeps += 1
        self.line._notify()
        return 0, None

    def _show(self, color: str) -> None:
        self.led = color
        self.leds.append(color)

    def _set_relay(self, on: bool) -> None:
        self.relay = on
        report = {"event": osdp.Event.Status, "type": osdp.StatusReportType.Output}
        self.line._order(self, self._submit, {**report, "nr_entries": 1, "report": bytes([on])})

    def _card_event(self, data: bytes, bits: int) -> None:
        event = {"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0}
        self._submit({**event, "format": osdp.CardFormat.Wiegand, "length": bits, "data": data})

    def _set(self, name: str, value: bool) -> None:
        setattr(self, name, value)
        self._report_status()

    def _report_status(self) -> None:
        status = {"event": osdp.Event.Status}
        door = bytes([self.door_open])
        local = bytes([self.tamper, self.power_failure])
        self._submit(
            {**status, "type": osdp.StatusReportType.Input, "nr_entries": 1, "report": door}
        )
        self._submit(
            {**status, "type": osdp.StatusReportType.Local, "nr_entries": 2, "report": local}
        )

    def _submit(self, event: dict[str, Any]) -> None:
        if self._pd is not None and self.plugged:
            self._pd.submit_event(event)

    def _plug(self, plugged: bool) -> None:
        self.plugged = plugged
        self._inbox.received.clear()
        if plugged:
            self._start()  # a reader that was powered off starts afresh (new session keys)
        else:
            self._pd = None
            self.online = self.secure = False


class ReaderLine:
    """The readers' end of a serial line, with its simulated readers; one thread drives them all.

    ``port`` is a device path or pyserial URL; :meth:`on_new_pty` makes a
    line on a fresh pseudo-terminal instead (its ``path`` is what a control
    panel opens).
    """

    def __init__(self, port: str | None, *, baudrate: int = 9600) -> None:
        self.port = port
        self.path = port
        self.baudrate = baudrate
        self.readers: dict[int, SimulatedReader] = {}
        self._serial: Any = None
        self._orders: queue.SimpleQueue[
            tuple[SimulatedReader | None, Callable[..., None], tuple[Any, ...]]
        ] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pty: tuple[int, int] | None = None
        self._prefixes: deque[bytes] = deque()  # the line thread's only

    @classmethod
    def on_new_pty(cls, *, baudrate: int = 9600) -> ReaderLine:
        """A line on a new pseudo-terminal: a control panel opens ``line.path``."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        line = cls(None, baudrate=baudrate)
        line._pty = (master, slave)
        line.path = os.ttyname(slave)
        return line

    def add_reader(self, address: int, *, scbk: bytes | None = None) -> SimulatedReader:
        """Put a reader at ``address`` on the line (powered on at once if the line runs)."""
        if address in self.readers:
            raise ValueError(f"there is a reader at address {address} already")
        reader = SimulatedReader(self, address, scbk)
        if self._thread is None:
            self.readers[address] = reader
        else:
            self._order(None, self._adopt, reader)
        return reader

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the line between two frames: noise, a corrupted frame."""
        self._order(None, self._write, data)

    def inject_before_replies(self, data: bytes, count: int = 1) -> None:
        """Put ``data`` on the line just ahead of each of the next ``count`` replies.

        What a reader with a failing transmitter or a second talker does: a
        truncated frame (a header announcing 40 bytes, 3 following) arrives
        right before a real reply, so a control panel that waits for the 40
        bytes holds the real reply behind it.
        """
        self._order(None, self._prefixes.extend, [bytes(data)] * count)

    def start(self) -> None:
        """Open the port and start answering."""
        if self._pty is None:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0)
        for reader in self.readers.values():
            reader._start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="osdp reader line", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the port (and the pty, if the line made one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for reader in self.readers.values():
            reader._pd = None
            reader.online = reader.secure = False
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    def __enter__(self) -> ReaderLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the line's thread ---------------------------------------------------------

    def _order(
        self, reader: SimulatedReader | None, action: Callable[..., Any], *args: Any
    ) -> None:
        self._orders.put((reader, action, args))

    def _adopt(self, reader: SimulatedReader) -> None:
        reader._start()
        self.readers[reader.address] = reader

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            changed = False
            while True:
                try:
                    _reader, action, args = self._orders.get_nowait()
                except queue.Empty:
                    break
                action(*args)
                changed = True
            heard = self._read()
            now = time.monotonic()
            for reader in self.readers.values():
                if reader.plugged:
                    reader._inbox.received += heard
                changed = reader._tick(now) or changed
            if changed:
                self._notify()

    def _read(self) -> bytes:
        try:
            if self._pty is not None:
                return os.read(self._pty[0], 4096)
            return bytes(self._serial.read(4096))
        except (BlockingIOError, OSError, serial.SerialException):
            return b""

    def _reply(self, data: bytes) -> int:
        """A reader's reply on the line, behind what :meth:`inject_before_replies` queued."""
        if not (self._prefixes and data):
            return self._write(data)
        prefix = self._prefixes.popleft()
        return max(0, self._write(prefix + data) - len(prefix))

    def _write(self, data: bytes) -> int:
        try:
            if self._pty is not None:
                return os.write(self._pty[0], data)
            return int(self._serial.write(data) or 0)
        except (OSError, serial.SerialException):
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``cityvisor sim osdp``: simulated readers on a serial line until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="cityvisor sim osdp", description="Simulated OSDP badge readers on a serial line."
    )
    parser.add_argument("--port", help="serial device or pyserial URL (default: a new pty)")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument(
        "--address", type=int, action="append", help="a reader's address (repeatable; default 1)"
    )
    parser.add_argument("--key", help="secure channel key (32 hex digits) shared by the readers")
    parser.add_argument(
        "--card-every", type=float, default=0, help="present card 1:1 every so many seconds"
    )
    args = parser.parse_args(argv)
    try:
        scbk = bytes.fromhex(args.key) if args.key else None
    except ValueError:
        parser.error("--key must be 32 hexadecimal digits")
    line = (
        ReaderLine(args.port, baudrate=args.baudrate)
        if args.port
        else ReaderLine.on_new_pty(baudrate=args.baudrate)
    )
    readers = [line.add_reader(address, scbk=scbk) for address in args.address or [1]]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with line:
        print(f"OSDP readers {sorted(line.readers)} on {line.path}", flush=True)
        try:
            while not stop.wait(args.card_every or 3600):
                if args.card_every:
                    for reader in readers:
                        reader.present_card("1:1")
        except KeyboardInterrupt:
            pass
    return 0
