"""Flood levels: per-gauge thresholds with hysteresis, and the rate of rise.

A gauge's level is compared with three thresholds (vigilance, alert,
crisis). Crossing one upwards sets its flag at once; the flag drops only
when the level falls ``hysteresis`` metres below the threshold, so water
lapping at a threshold never makes the alarm chatter. The rate of rise is
the slope of the level over the last ``rate_window`` seconds of samples
(cm/h), with its own limit and hysteresis.
"""

from __future__ import annotations

import collections
from typing import Any

import pydantic

__all__ = ["STAGES", "LevelWatch", "Thresholds"]

STAGES = ["normal", "vigilance", "alert", "crisis"]
"""The gauge's stage, from the highest threshold it is above."""


class Thresholds(pydantic.BaseModel):
    """Thresholds of one gauge (metres above its zero), and its rate-of-rise limit."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    vigilance: float = pydantic.Field(ge=0, le=100)
    """Level from which the site is watched (vigilance alarm, medium)."""
    alert: float = pydantic.Field(ge=0, le=100)
    """Level from which the population is alerted (alert alarm, high)."""
    crisis: float = pydantic.Field(ge=0, le=100)
    """Level from which the site floods: roads close, crisis cell (crisis alarm, critical)."""
    hysteresis: float = pydantic.Field(0.05, ge=0, le=5)
    """Metres the level must fall below a threshold before its alarm clears."""
    rate_limit: float = pydantic.Field(30.0, gt=0)
    """Rate of rise (cm/h) above which the rising-fast alarm rises."""
    rate_hysteresis: float = pydantic.Field(5.0, ge=0)
    """cm/h the rate must fall below the limit before that alarm clears."""
    rate_window: float = pydantic.Field(900.0, gt=0)
    """Seconds of samples the rate of rise is computed over."""

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.vigilance < self.alert < self.crisis:
            raise ValueError("expected vigilance < alert < crisis")
        return self


class LevelWatch:
    """The derived points of one gauge, updated sample by sample."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.above = {"vigilance": False, "alert": False, "crisis": False}
        self.rising_fast = False
        self._samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)

    def update(self, level: float, at: float) -> dict[str, Any]:
        """Take a level (m) sampled at ``at`` (seconds, monotonic); return the derived points."""
        t = self.thresholds
        for name in self.above:
            threshold = getattr(t, name)
            if level >= threshold:
                self.above[name] = True
            elif level < threshold - t.hysteresis:
                self.above[name] = False
        samples = self._samples
        if samples and at <= samples[-1][0]:
            samples.clear()  # a clock that went back: start the window again
        samples.append((at, level))
        while samples and samples[0][0] < at - t.rate_window:
            samples.popleft()
        values: dict[str, Any] = {f"above_{name}": flag for name, flag in self.above.items()}
        values["stage"] = max(
            (STAGES.index(name) for name, flag in self.above.items() if flag), default=0
        )
        rate = self.rate()
        if rate is not None:
            if rate > t.rate_limit:
                self.rising_fast = True
            elif rate < t.rate_limit - t.rate_hysteresis:
                self.rising_fast = False
            values["rate_of_rise"] = round(rate, 2)
            values["rising_fast"] = self.rising_fast
        return values

    def rate(self) -> float | None:
        """The least-squares slope of the window's samples in cm/h, or None before two samples.

        A slope over every sample of the window, not the last two: one noisy
        radar echo does not make the water "rise" at metres per hour.
        """
        samples = self._samples
        if len(samples) < 2 or samples[-1][0] - samples[0][0] <= 0:
            return None
        n = len(samples)
        mean_t = sum(s[0] for s in samples) / n
        mean_level = sum(s[1] for s in samples) / n
        spread = sum((s[0] - mean_t) ** 2 for s in samples)
        if spread == 0:
            return None
        slope = sum((s[0] - mean_t) * (s[1] - mean_level) for s in samples) / spread
        return slope * 100 * 3600  # m/s -> cm/h
