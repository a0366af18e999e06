"""OSDP control panel over RS-485: badge readers on a serial line, through libosdp and pyserial.

OSDP (SIA OSDP 2.2, IEC 60839-11-5) is the serial protocol between an access
controller (the *control panel*, CP, here cityvisor) and its readers (the
*peripheral devices*, PD): several readers share one RS-485 pair, each at its
own address (0-126); the CP polls them in turn and sends commands (LED,
buzzer, output relays); readers answer with card reads, key presses and
input, output and tamper/power status. The secure channel (AES-128, keyed by
each reader's SCBK) authenticates and encrypts every frame.

libosdp does the protocol (polling, sequencing, secure channel, retries)
from its own refresh thread; this package gives it a pyserial port and puts
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

Where each part lives: ``bus.py`` (:class:`OsdpBus`), ``reader.py``
(:class:`Reader`), ``events.py`` (what readers report), ``frames.py``
(checksums and the line filter) and ``errors.py``.
"""

from __future__ import annotations

from .bus import LIBRARY_LOG_LEVEL, REPLY_DELAY, OsdpBus
from .errors import OsdpConfigError, OsdpError
from .events import (
    CardRead,
    InputStatus,
    KeyPress,
    LinkStatus,
    LocalStatus,
    OutputStatus,
    ReaderEvent,
    wiegand26,
)
from .frames import MARK, MAX_FRAME, MIN_FRAME, REPLY_BIT, SOM, LineCounters, LineFilter, crc16
from .reader import ACK_TIMEOUT, LED_COLORS, Reader

__all__ = [
    "ACK_TIMEOUT",
    "LED_COLORS",
    "LIBRARY_LOG_LEVEL",
    "MARK",
    "MAX_FRAME",
    "MIN_FRAME",
    "REPLY_BIT",
    "REPLY_DELAY",
    "SOM",
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
