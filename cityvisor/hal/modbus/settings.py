"""Where an endpoint connects, and how it paces, times out and backs off."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A Modbus/TCP endpoint (a device or a gateway)."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialAddress:
    """A Modbus RTU line on a serial port (an RS-485 bus with its units)."""

    device: str
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.device}@{self.baudrate}{self.parity}{self.bytesize}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """How an endpoint talks to its equipment."""

    timeout: float = 1.0
    """Seconds to wait for the answer to one request."""
    connect_timeout: float = 3.0
    """Seconds to wait for a connection to open."""
    min_interval: float = 0.0
    """Seconds between the end of one request and the start of the next
    (slow gateways and RS-485 lines need a pause)."""
    min_backoff: float = 0.2
    """Seconds before the first retry after a failure: a connection refused,
    lost or closed, or a poll of a unit without a single valid answer."""
    max_backoff: float = 30.0
    """The cap of that backoff, which doubles at each failure in a row and
    starts over only when the equipment answers."""
    max_timeouts: int = 3
    """Consecutive timeouts after which the connection is closed and reopened
    (a half-open TCP connection answers nothing, ever)."""
    unreachable_after: int = 3
    """Consecutive polls of a unit without any answer after which
    :meth:`ModbusDevice.poll_every` gives up with :class:`ModbusConnectionError`."""


class _Backoff:
    """Capped exponential backoff that only a success resets.

    An endpoint keeps one for its connection and one per unit, and the pool
    keeps the endpoint between its users: a driver restarted after a failure
    finds the count where it left it, so retries slow down instead of
    starting over at the minimum after every restart.
    """

    __slots__ = ("failures", "max_delay", "min_delay", "next_at")

    def __init__(self, min_delay: float, max_delay: float) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.failures = 0
        self.next_at = -float("inf")

    def failed(self) -> float:
        """Count a failure; the delay before the next attempt."""
        self.failures += 1
        delay = min(self.max_delay, self.min_delay * 2.0 ** min(self.failures - 1, 60))
        self.next_at = anyio.current_time() + delay
        return delay

    def remaining(self) -> float:
        """Seconds left before the next attempt (0 when it may happen now)."""
        return max(0.0, self.next_at - anyio.current_time())

    def succeeded(self) -> int:
        """Start over from the minimum; how many failures there had been."""
        failures, self.failures, self.next_at = self.failures, 0, -float("inf")
        return failures
