"""OSDP control panel over RS-485: badge readers on a serial line, through libosdp and pyserial.

OSDP (SIA OSDP 2.2, IEC 60839-11-5) is the serial protocol between an access
controller (the *control panel*, CP, here cityvisor) and its readers (the
*peripheral devices*, PD): several readers share one RS-485 pair, each at its
own address (0-126); the CP polls them in turn and sends commands (LED,
buzzer, output relays); readers answer with card reads, key presses and
input, output and tamper/power status. The secure channel (AES-128, keyed by
each reader's SCBK) authenticates and encrypts every frame.

libosdp does the protocol (polling, sequencing, secure channel, retries)
from its own refresh thread; this module gives it a pyserial port and puts
an anyio face on it:

- :class:`OsdpBus` is one serial line (a device path or any pyserial URL:
  ``/dev/ttyUSB0``, ``rfc2217://gateway:4001``). Share it between the doors
  on that line (``resources.get(f"osdp:{port}", ...)``); each door attaches
  its reader with :meth:`OsdpBus.reader`.
- :class:`Reader` is one attached reader: its events arrive on a bounded
  memory object stream (a full stream drops and counts, never blocks the
  bus); :meth:`Reader.output`, :meth:`Reader.led` and :meth:`Reader.buzzer`
  return once the reader acknowledged the command.
- :class:`LineFilter` sits between the port and libosdp and passes only
  whole frames with a good CRC from a known reader. Bad CRC, truncated,
  malformed or unexpected frames and line noise are dropped and counted in
  :attr:`OsdpBus.counters`: libosdp 3.2 takes a reader offline for five
  minutes after a single corrupt reply, and its binding exposes no error
  counters, so the filter both protects the bus and measures the line.

Threads: libosdp calls back into Python from its refresh thread. Nothing on
the event loop ever takes the library's lock (every library call runs in a
worker thread), so the refresh thread can always hand an event to the loop
with ``anyio.from_thread.run_sync``; and no callback calls the library (it
is not re-entrant: that deadlocks).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import osdp
import osdp_sys
import serial
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = [
    "LED_COLORS",
    "CardRead",
    "InputStatus",
    "KeyPress",
    "LineCounters",
    "LineFilter",
    "LinkStatus",
    "LocalStatus",
    "OsdpBus",
    "OsdpConfigError",
    "OsdpError",
    "OutputStatus",
    "Reader",
    "ReaderEvent",
    "crc16",
    "wiegand26",
]

log = logging.getLogger(__name__)

SOM = 0x53
"""Start of message: the first byte of every OSDP frame."""
MARK = 0xFF
"""OSDP 2.2's optional mark byte before SOM (the line's idle state); never counted as noise."""
REPLY_BIT = 0x80
"""Set in the address byte of a reader's reply."""
MAX_FRAME = 1024
"""Longest frame the filter accepts; libosdp's own buffers are smaller."""
MIN_FRAME = 7
"""SOM, address, length (2), control, code and a one-byte checksum."""

LED_COLORS = {
    "off": osdp.CommandLEDColor.Black,
    "red": osdp.CommandLEDColor.Red,
    "green": osdp.CommandLEDColor.Green,
    "amber": osdp.CommandLEDColor.Amber,
    "blue": osdp.CommandLEDColor.Blue,
}
"""LED colours a reader is asked for, by name."""

LIBRARY_LOG_LEVEL = osdp.LogLevel.Error
"""libosdp prints its own log lines on stderr; errors only (a lost reader, a refused key)."""

REPLY_DELAY = 0.25
"""Longest a reader takes to answer (OSDP allows 200 ms)."""

ACK_TIMEOUT = 3.0
"""Seconds a reader has to acknowledge a command (libosdp retries within it)."""


class OsdpError(Exception):
    """The line or a reader cannot be used (port missing, reader silent, no acknowledgement)."""


class OsdpConfigError(OsdpError):
    """Retrying will not help until the configuration changes: a refused key, an address clash."""


# --------------------------------------------------------------------------- frames


def crc16(data: bytes) -> int:
    """OSDP's CRC: CRC-16/AUG-CCITT (polynomial 0x1021, initial value 0x1D0F), sent LSB first."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _frame_is_intact(frame: bytes) -> bool:
    if frame[4] & 0x04:  # control byte: CRC-16 rather than an 8-bit checksum
        return crc16(frame[:-2]) == frame[-2] | frame[-1] << 8
    return (-sum(frame[:-1])) & 0xFF == frame[-1]


@dataclass
class LineCounters:
    """What the line filter saw; every bad frame was dropped before libosdp could see it."""

    frames: int = 0
    """Good replies passed to libosdp."""
    bad_crc: int = 0
    """Frames whose CRC or checksum failed."""
    truncated: int = 0
    """Frames that stopped before their announced length."""
    malformed: int = 0
    """Headers with an impossible length."""
    unexpected: int = 0
    """Good frames not from a reader of this bus (a command heard on the line, an unknown address)."""
    noise_bytes: int = 0
    """Bytes outside any good frame (the rest of a corrupt frame included)."""
    events_dropped: int = 0
    """Reader events lost because their driver did not keep up."""

    @property
    def errors(self) -> int:
        """Bad frames of every kind (what an operator watches to judge the wiring)."""
        return self.bad_crc + self.truncated + self.malformed + self.unexpected


class LineFilter:
    """Pass only whole, intact replies from known readers; count and drop everything else.

    Feed it what the port delivered; it returns the good frames' bytes. A
    frame whose rest does not arrive in time (0.1 s plus twice its
    transmission time at ``baudrate``) is truncated; so is one inside which a
    whole, intact frame begins before its announced end: a header announcing
    40 bytes with 3 behind it costs that one reply, not the next ones held
    until its deadline. After a bad frame the search for the next SOM resumes
    from the byte after the bad one, so a good frame that follows garbage is
    still found.
    """

    def __init__(self, addresses: frozenset[int] = frozenset(), *, baudrate: int = 9600) -> None:
        self.addresses = addresses
        self.byte_time = 11.0 / baudrate
        self.counters = LineCounters()
        self._buffer = bytearray()
        self._since: float | None = None

    def _deadline(self) -> float:
        length = self._buffer[2] | self._buffer[3] << 8 if len(self._buffer) >= 4 else 0
        return 0.1 + 2 * length * self.byte_time

    def feed(self, data: bytes, now: float) -> bytes:
        """Add received bytes; return the bytes of every good frame now complete."""
        counters = self.counters
        if self._since is not None and now - self._since > self._deadline():
            counters.truncated += 1
            self._drop(1)
        self._buffer += data
        good = bytearray()
        while self._buffer:
            start = self._buffer.find(SOM)
            if start != 0:
                self._drop(len(self._buffer) if start < 0 else start)
            if len(self._buffer) < 4:
                break
            length = self._buffer[2] | self._buffer[3] << 8
            if not MIN_FRAME <= length <= MAX_FRAME:
                counters.malformed += 1
                self._drop(1)
                continue
            if len(self._buffer) < length:
                resumed = self._next_whole_frame()
                if resumed is None:
                    break
                # The frame announced more than came: a reply began inside it, so
                # the line moved on. Give it up now, not at its deadline.
                counters.truncated += 1
                self._drop(resumed)
                continue
            frame = bytes(self._buffer[:length])
            if not _frame_is_intact(frame):
                counters.bad_crc += 1
                self._drop(1)
                continue
            del self._buffer[:length]
            self._since = None
            if not frame[1] & REPLY_BIT or (
                self.addresses and frame[1] & ~REPLY_BIT not in self.addresses
            ):
                counters.unexpected += 1
                continue
            counters.frames += 1
            good += frame
        if self._buffer and self._since is None:
            self._since = now  # a new frame has begun: its own clock starts
        return bytes(good)

    def _next_whole_frame(self) -> int | None:
        """Where a whole, intact frame starts after the first byte of the buffer, if one does.

        Only a frame that is complete and passes its check counts: a SOM byte
        and a plausible header are common inside payloads (card data,
        ciphertext), a good CRC over a whole frame is not.
        """
        buffer = self._buffer
        start = buffer.find(SOM, 1)
        while 0 < start <= len(buffer) - MIN_FRAME:
            length = buffer[start + 2] | buffer[start + 3] << 8
            if MIN_FRAME <= length <= len(buffer) - start and _frame_is_intact(
                bytes(buffer[start : start + length])
            ):
                return start
            start = buffer.find(SOM, start + 1)
        return None

    @property
    def pending(self) -> bool:
        """True while part of a frame waits for the rest."""
        return bool(self._buffer)

    def _drop(self, count: int) -> None:
        """Forget the first ``count`` bytes; what is not a mark or a SOM is noise."""
        self.counters.noise_bytes += sum(1 for b in self._buffer[:count] if b not in (MARK, SOM))
        del self._buffer[:count]
        self._since = None


class _SerialChannel(osdp.Channel):
    """libosdp's channel on a pyserial port, behind a :class:`LineFilter`.

    Called from the refresh thread only. A port error is remembered in
    ``failure`` (libosdp cannot be told), and the bus takes it from there.
    """

    _ids = itertools.count(1)

    def __init__(self, port: serial.SerialBase, line: LineFilter) -> None:
        super().__init__()
        self.id = next(self._ids)
        self.port = port
        self.line = line
        self.failure: BaseException | None = None
        self._ready = bytearray()

    def read(self, max_bytes: int) -> bytes:
        try:
            data = self.port.read(4096)
        except Exception as error:  # an exception must not cross into C
            self.failure = self.failure or error
            data = b""
        if data or self.line.pending:
            self._ready += self.line.feed(data, time.monotonic())
        chunk = bytes(self._ready[:max_bytes])
        del self._ready[:max_bytes]
        return chunk

    def write(self, buf: bytes) -> int:
        try:
            return int(self.port.write(buf) or 0)
        except Exception as error:
            self.failure = self.failure or error
            return 0

    def flush(self) -> None:
        try:
            self.port.flush()
        except Exception as error:
            self.failure = self.failure or error


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class CardRead:
    """A card presented to a reader: its raw bits and how the reader framed them."""

    address: int
    reader: int
    format: str
    """``"wiegand"``, ``"raw"`` (unspecified bit format) or ``"ascii"``."""
    data: bytes
    """The bits, most significant first, padded at the end (or the text, for ``ascii``)."""
    bits: int
    """How many bits of ``data`` are the card's (its length in bytes for ``ascii``)."""

    @property
    def number(self) -> str:
        """The badge number as printed on the card and enrolled.

        A 26-bit Wiegand (H10301) read with good parity gives
        ``"facility:card"`` (``"12:3456"``); another bit string gives its
        value in decimal; an ASCII read gives its text.
        """
        if self.format == "ascii":
            return self.data.decode("ascii", "replace")
        value = int.from_bytes(self.data, "big") >> (len(self.data) * 8 - self.bits)
        if self.bits == 26:
            even, payload, odd = value >> 25, (value >> 1) & 0xFFFFFF, value & 1
            if (bin(payload >> 12).count("1") + even) % 2 == 0 and (
                bin(payload & 0xFFF).count("1") + odd
            ) % 2 == 1:
                return f"{payload >> 16}:{payload & 0xFFFF}"
        return str(value)


def wiegand26(facility: int, card: int) -> tuple[bytes, int]:
    """The 26 bits (with parity) of an H10301 card, as a reader sends them: ``(data, 26)``."""
    if not (0 <= facility < 256 and 0 <= card < 65536):
        raise ValueError("a 26-bit card has a facility code < 256 and a card number < 65536")
    payload = facility << 16 | card
    even = bin(payload >> 12).count("1") % 2
    odd = 1 - bin(payload & 0xFFF).count("1") % 2
    value = even << 25 | payload << 1 | odd
    return (value << 6).to_bytes(4, "big"), 26


@dataclass(frozen=True)
class KeyPress:
    """Keys typed on a reader's keypad."""

    address: int
    reader: int
    keys: str


@dataclass(frozen=True)
class InputStatus:
    """The reader's inputs (input 0 is usually the door contact), true when active."""

    address: int
    inputs: tuple[bool, ...]


@dataclass(frozen=True)
class OutputStatus:
    """The reader's outputs (output 0 is usually the door strike), true when energised."""

    address: int
    outputs: tuple[bool, ...]


@dataclass(frozen=True)
class LocalStatus:
    """The reader's own state: its tamper switch and its power supply."""

    address: int
    tamper: bool
    power_failure: bool


@dataclass(frozen=True)
class LinkStatus:
    """The reader came online or went offline; ``secure`` when the secure channel is up.

    ``secure_refused`` means the reader failed the secure-channel handshake
    before it was ever online: its key is not the one configured.
    """

    address: int
    online: bool
    secure: bool
    secure_refused: bool = False


ReaderEvent = CardRead | KeyPress | InputStatus | OutputStatus | LocalStatus | LinkStatus

_CARD_FORMATS = {
    osdp.CardFormat.Wiegand: "wiegand",
    osdp.CardFormat.Unspecified: "raw",
    osdp.CardFormat.ASCII: "ascii",
}


def _translate(address: int, event: dict[str, Any]) -> ReaderEvent | None:
    """A libosdp event dict as one of our events (None for what drivers need not see)."""
    kind = event.get("event")
    if kind == osdp.Event.CardRead:
        fmt = _CARD_FORMATS.get(event["format"], "raw")
        data = bytes(event["data"])
        return CardRead(address, event["reader_no"], fmt, data, event.get("length", len(data)))
    if kind == osdp.Event.KeyPress:
        keys = bytes(event["data"]).decode("ascii", "replace")
        return KeyPress(address, event["reader_no"], keys)
    if kind == osdp.Event.Status:
        report = bytes(event.get("report", b""))
        if event["type"] == osdp.StatusReportType.Input:
            return InputStatus(address, tuple(bool(b) for b in report))
        if event["type"] == osdp.StatusReportType.Output:
            return OutputStatus(address, tuple(bool(b) for b in report))
        if event["type"] == osdp.StatusReportType.Local:
            report += bytes(2)
            return LocalStatus(address, bool(report[0]), bool(report[1]))
    return None


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


# --------------------------------------------------------------------------- the bus


class OsdpBus:
    """One RS-485 line and the libosdp control panel that polls its readers.

    Readers attach and detach at run time; the control panel is (re)built
    whenever the set of addresses changes, after ``settle`` seconds so that
    the doors of one line starting together share one build. An address
    stays polled until the last reader detaches (a door whose reader is
    offline reattaches to the same control panel). Closing the last reader
    stops the refresh thread and closes the port; the next attach reopens it.
    """

    def __init__(
        self, port: str, *, baudrate: int = 9600, event_buffer: int = 64, settle: float = 0.1
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.event_buffer = event_buffer
        self.settle = settle
        self.counters = LineCounters()
        self._readers: dict[int, Reader] = {}
        self._polled: dict[int, bytes | None] = {}
        self._order: list[int] = []
        self._cp: Any = None
        self._channel: _SerialChannel | None = None
        self._serial: serial.SerialBase | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._library = threading.Lock()
        self._configure = anyio.Lock()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._given_up: set[int] = set()
        self._kicking: set[int] = set()
        """Readers libosdp declared offline: it will not try them again for five minutes."""

    @asynccontextmanager
    async def reader(self, address: int, *, scbk: bytes | None = None) -> AsyncIterator[Reader]:
        """Attach the reader at ``address`` for the length of the block.

        ``scbk`` (16 bytes) enforces the secure channel with that key: a
        reader with another key is never online. Without it the line is in
        clear (acceptable only on a test bench).

        :raises OsdpError: the port cannot be opened.
        :raises OsdpConfigError: another reader holds the address.
        :raises ValueError: a bad address or key.
        """
        if not 0 <= address <= 126:
            raise ValueError(f"OSDP address {address} is out of range 0..126")
        if scbk is not None and len(scbk) != 16:
            raise ValueError("an OSDP secure channel key (SCBK) is 16 bytes")
        if address in self._readers:
            raise OsdpConfigError(f"address {address} on {self.port} is used by another reader")
        send, receive = anyio.create_memory_object_stream[ReaderEvent](self.event_buffer)
        reader = Reader(self, address, scbk, receive, send)
        self._readers[address] = reader
        try:
            await self._attach(reader)
            yield reader
        finally:
            del self._readers[address]
            send.close()
            receive.close()
            with anyio.move_on_after(5, shield=True):
                async with self._configure:
                    if not self._readers:
                        await anyio.to_thread.run_sync(self._close_sync)

    async def _attach(self, reader: Reader) -> None:
        self._token = anyio.lowlevel.current_token()
        async with self._configure:
            failed = self._channel is not None and self._channel.failure is not None
            if failed or self._polled.get(reader.address, b"?") != reader.scbk:
                await anyio.sleep(self.settle)  # let the other doors of this line join this build
                wanted = {a: self._polled.get(a) for a in self._polled if not failed}
                wanted.update({a: r.scbk for a, r in self._readers.items()})
                await anyio.to_thread.run_sync(self._build_sync, wanted)
            elif reader.address in self._given_up:
                await self._kick(reader.address)
            online, secure = await anyio.to_thread.run_sync(self._status_sync, reader.address)
        if online:
            reader.online = reader.was_online = True
            reader.secure = secure
            reader._link_changed()

    async def _kick(self, address: int) -> None:
        """Retry an offline reader now: libosdp would wait five minutes before its next try.

        Only a reader libosdp gave up on: restarting one in the middle of its
        handshake would break its secure channel.
        """
        self._given_up.discard(address)
        self._kicking.add(address)  # the disable reports the reader offline: not news
        try:
            await anyio.to_thread.run_sync(self._call_sync, "disable_pd", address)
            for _ in range(10):  # the disable takes effect at the next refresh
                await anyio.sleep(0.05)
                if await anyio.to_thread.run_sync(self._call_sync, "enable_pd", address):
                    return
        finally:
            self._kicking.discard(address)

    async def _submit(self, address: int, command: dict[str, Any]) -> bool:
        return bool(
            await anyio.to_thread.run_sync(self._call_sync, "submit_command", address, command)
        )

    async def aclose(self) -> None:
        """Stop polling and close the port (the hub calls it when it stops)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_sync)

    # -- worker threads ---------------------------------------------------------

    def _call_sync(self, method: str, address: int, *args: Any) -> Any:
        with self._library:
            if self._cp is None or address not in self._order:
                return False
            return getattr(self._cp, method)(self._order.index(address), *args)

    def _status_sync(self, address: int) -> tuple[bool, bool]:
        with self._library:
            if self._cp is None or address not in self._order:
                return False, False
            bit = 1 << self._order.index(address)
            return bool(self._cp.status() & bit), bool(self._cp.sc_status() & bit)

    def _build_sync(self, wanted: dict[int, bytes | None]) -> None:
        self._close_sync()
        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=0, write_timeout=1
            )
        except (serial.SerialException, OSError, ValueError) as error:
            raise OsdpError(f"cannot open {self.port}: {error}") from None
        try:
            # A reply to the previous control panel may still be on its way: one reaching the
            # new control panel would break its sequence and keep the reader off for 5 minutes.
            time.sleep(REPLY_DELAY)
            self._serial.reset_input_buffer()
            self._start_sync(wanted)
        except BaseException:
            self._close_sync()
            raise
        log.info("OSDP bus %s: polling readers %s", self.port, self._order)

    def _start_sync(self, wanted: dict[int, bytes | None]) -> None:
        assert self._serial is not None
        line = LineFilter(frozenset(wanted), baudrate=self.baudrate)
        line.counters = self.counters
        self._channel = _SerialChannel(self._serial, line)
        self._order = sorted(wanted)
        flags = osdp.LibFlag.EnableNotification
        infos = [
            {
                "name": f"reader-{address}",
                "address": address,
                "flags": flags | (osdp.LibFlag.EnforceSecure if wanted[address] else 0),
                "scbk": wanted[address],
                "channel": self._channel,
            }
            for address in self._order
        ]
        osdp_sys.set_loglevel(LIBRARY_LOG_LEVEL)
        cp = osdp_sys.ControlPanel(infos)
        cp.set_event_callback(self._on_event)
        self._cp = cp
        self._polled = dict(wanted)
        self._given_up = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name=f"osdp {self.port}", daemon=True)
        self._thread.start()

    def _close_sync(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._library:
            self._cp = None  # the binding tears the control panel down when it is released
            self._order = []
            self._polled = {}
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        self._channel = None

    def _refresh(self) -> None:
        """The refresh thread: libosdp must be refreshed at least every 50 ms."""
        channel = self._channel
        assert channel is not None
        while not self._stop.wait(0.02):
            with self._library:
                try:
                    self._cp.refresh()
                except Exception:  # a bug in a callback must not stop the polling
                    log.exception("OSDP bus %s: refresh failed", self.port)
            if channel.failure is not None:
                reason = f"serial line {self.port} failed: {channel.failure}"
                log.warning("OSDP bus %s: %s", self.port, reason)
                self._to_loop(self._fail_all, reason)
                return

    def _on_event(self, index: int, event: dict[str, Any]) -> int:
        """libosdp's event callback (refresh thread, library lock held): hand over, never call back."""
        try:
            address = self._order[index]
            if event.get("event") == osdp.Event.Notification:
                self._to_loop(self._notify, address, event["type"], event["arg0"], event["arg1"])
            else:
                translated = _translate(address, event)
                if translated is not None:
                    self._to_loop(self._deliver, address, translated)
        except Exception:
            log.exception("OSDP bus %s: cannot handle event %r", self.port, event)
        return 0

    def _to_loop(self, function: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the event loop is gone, and nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(function, *args, token=self._token)

    # -- on the event loop ------------------------------------------------------

    def _deliver(self, address: int, event: ReaderEvent) -> None:
        reader = self._readers.get(address)
        if reader is not None:
            reader._deliver(event)

    def _notify(self, address: int, kind: int, arg0: int, arg1: int) -> None:
        if address in self._kicking and kind != osdp.EventNotification.Command:
            return
        reader = self._readers.get(address)
        if reader is not None:
            reader._notify(kind, arg0, arg1)
        if kind == osdp.EventNotification.PeripheralDeviceStatus:
            (self._given_up.discard if arg0 else self._given_up.add)(address)
            log.info(
                "OSDP bus %s: reader %d %s", self.port, address, "online" if arg0 else "offline"
            )

    def _fail_all(self, reason: str) -> None:
        for reader in self._readers.values():
            reader._fail(reason)
