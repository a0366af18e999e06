"""What readers report: card reads, key presses, input, output, tamper and link status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import osdp

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
