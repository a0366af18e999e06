"""A point's value at one moment: value, quality and the two timestamps, in epoch milliseconds."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

from .quality import Quality


def now_ms() -> int:
    """The current UTC time as epoch milliseconds."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- values


class PointValue(NamedTuple):
    """An immutable snapshot of a point: what subscribers and history receive."""

    id: str
    value: Any
    quality: Quality
    source_ts: int
    received_ts: int

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps in epoch milliseconds)."""
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        return {
            "id": self.id,
            "value": value,
            "quality": self.quality.as_json(),
            "source_ts": self.source_ts,
            "received_ts": self.received_ts,
        }
