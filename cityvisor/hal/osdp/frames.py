"""OSDP frames on the serial line: the checksum, and the filter that keeps damaged frames from libosdp."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import osdp
import serial

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
