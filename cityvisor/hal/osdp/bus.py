"""The OSDP bus: one serial line, libosdp's control panel, and its events bridged into anyio."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import osdp
import osdp_sys
import serial

from .errors import OsdpConfigError, OsdpError
from .events import ReaderEvent, _translate
from .frames import LineCounters, LineFilter, _SerialChannel
from .reader import Reader

log = logging.getLogger(__name__)


LIBRARY_LOG_LEVEL = osdp.LogLevel.Error
"""libosdp prints its own log lines on stderr; errors only (a lost reader, a refused key)."""


REPLY_DELAY = 0.25
"""Longest a reader takes to answer (OSDP allows 200 ms)."""


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
