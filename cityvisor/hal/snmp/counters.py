"""Counter rates: successive samples of one counter into a rate per second, across wraps and restarts."""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- counters


class CounterRate:
    """Turns successive samples of one SNMP counter into a rate per second.

    Feed it the counter and the agent's sysUpTime (seconds) read in the
    *same* request: the interval comes from the agent's clock, so network
    jitter does not distort the rate. ``scale`` multiplies the result
    (8 turns ifHCInOctets into bit/s).

    * a Counter32 that went backwards wrapped once at 2**32 (use the 64-bit
      ifHC* counters on fast ports: a 32-bit octet counter wraps every 3.4 s
      at 10 Gbit/s);
    * sysUpTime going backwards means the agent restarted (its counters
      started again from zero): no rate for that sample, never a spike;
    * a 64-bit counter that went backwards was reset (discontinuity): no rate;
    * with ``max_rate`` (the port speed, say), an impossible rate is dropped
      as a discontinuity too (an undetected counter reset).

    :meth:`update` returns ``None`` when there is no rate yet or for a sample
    that cannot give one; the next sample starts again from it. ``delta`` is
    the last increment (errors in the interval, for instance).
    """

    def __init__(
        self, *, bits: Literal[32, 64] = 64, scale: float = 1.0, max_rate: float | None = None
    ) -> None:
        if bits not in (32, 64):
            raise ValueError("a counter has 32 or 64 bits")
        self.modulus = 1 << bits
        self.scale = scale
        self.max_rate = max_rate
        self.delta: int | None = None
        self._previous: tuple[int, float] | None = None

    def reset(self) -> None:
        """Forget the previous sample (after a gap in polling, for instance)."""
        self._previous = None
        self.delta = None

    def update(self, value: int, uptime: float) -> float | None:
        """Add a sample (counter value, agent uptime in seconds); return the rate or None."""
        previous, self._previous = self._previous, (int(value), float(uptime))
        self.delta = None
        if previous is None:
            return None
        last_value, last_uptime = previous
        elapsed = uptime - last_uptime
        if elapsed < 0:
            log.debug("agent uptime went backwards (%.2f -> %.2f s): restart", last_uptime, uptime)
            return None
        if elapsed == 0:
            # Same agent tick (or a cached answer): keep the older sample as the base.
            self._previous = previous
            return None
        delta = int(value) - last_value
        if delta < 0:
            if self.modulus == 1 << 64:
                return None  # a 64-bit counter does not wrap in practice: it was reset
            delta += self.modulus
        rate = delta * self.scale / elapsed
        if self.max_rate is not None and rate > self.max_rate:
            return None
        self.delta = delta
        return rate
