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
        return _json(self.id, self.value, self.quality, self.source_ts, self.received_ts)


def _json(
    point_id: str, value: Any, quality: Quality, source_ts: int, received_ts: int
) -> dict[str, Any]:
    """What :meth:`PointValue.as_json` gives (a value that is not a number: null)."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {
        "id": point_id,
        "value": value,
        "quality": quality.as_json(),
        "source_ts": source_ts,
        "received_ts": received_ts,
    }


# --------------------------------------------------------------------------- states

State = tuple[str, Any, "int | Quality", int, int]
"""How the database keeps a point's current value: a plain tuple
``(id, value, quality code, source_ts, received_ts)``.

Every member is a string, a number or None, so the garbage collector stops
tracking the tuple after its first young collection (it does so only for
exact tuples of such members): a city's current values are then no part of
its full passes, however many points there are (decision 0022). The quality
is kept as a small integer code (:func:`quality_code`); read a state with
:func:`value_of`.
"""

MAX_QUALITY_CODES = 4096
"""Distinct qualities given a code; past them a quality is kept as itself (still correct)."""

_QUALITIES: list[Quality] = [Quality.GOOD]
_CODES: dict[Quality, int] = {Quality.GOOD: 0}
_GOOD = Quality.GOOD
_new_tuple = tuple.__new__


def quality_code(quality: Quality) -> int | Quality:
    """The code of ``quality`` in a :data:`State` (0 is good); the quality itself past the codes."""
    if quality is _GOOD:
        return 0
    code = _CODES.get(quality)
    if code is None:
        if len(_QUALITIES) >= MAX_QUALITY_CODES:
            return quality
        code = _CODES[quality] = len(_QUALITIES)
        _QUALITIES.append(quality)
    return code


def quality_of(code: int | Quality) -> Quality:
    """The quality a :data:`State` holds (the inverse of :func:`quality_code`)."""
    return _QUALITIES[code] if code.__class__ is int else code  # type: ignore[index,return-value]


def json_of(state: State) -> dict[str, Any]:
    """:meth:`PointValue.as_json` of the value a :data:`State` stands for, without building it."""
    return _json(state[0], state[1], quality_of(state[2]), state[3], state[4])


def value_of(state: State) -> PointValue:
    """The :class:`PointValue` a :data:`State` stands for (a new tuple each call)."""
    quality = quality_of(state[2])
    return _new_tuple(PointValue, (state[0], state[1], quality, state[3], state[4]))  # type: ignore[no-any-return]
