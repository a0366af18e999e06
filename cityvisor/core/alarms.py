"""Alarms: declarations, conditions and (below) the ISA-18.2 state machine.

An alarm is an abnormal condition on a point that an operator must see and
acknowledge. Device types declare their default alarms with :func:`alarm`;
a deployment adds more in its config. Each declaration becomes one alarm per
device (and per member, for per-circuit or per-port points).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .points import PointValue, QualityStatus

__all__ = [
    "AlarmSpec",
    "Condition",
    "Priority",
    "alarm",
    "text",
]


def text(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """Normalise operator-facing text to ``{"fr": ..., "en": ...}``.

    A plain string is used for every language; a mapping is kept as given.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        return {"fr": value, "en": value}
    return dict(value)


class Priority(enum.IntEnum):
    """Alarm priority (ISA-18.2): what the operator should deal with first."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, name: str | Priority) -> Priority:
        """``"high"`` -> ``Priority.HIGH``; raise ValueError naming the choices."""
        if isinstance(name, Priority):
            return name
        try:
            return cls[name.upper()]
        except KeyError:
            choices = ", ".join(p.name.lower() for p in cls)
            raise ValueError(f"unknown priority {name!r} (expected one of: {choices})") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Condition:
    """When an alarm is active, given its point's value.

    ``kind`` is one of:

    - ``high``: value > ``limit``; clears when value <= ``limit - deadband``
    - ``low``: value < ``limit``; clears when value >= ``limit + deadband``
    - ``equals``: value == ``limit`` (a state alarm: door open, mains lost)
    - ``not_equals``: value != ``limit``
    - ``quality_bad``: the point's quality is bad (whatever its value)

    A point whose quality is bad never makes a value condition active or
    inactive: the condition keeps its last state (communication loss has its
    own alarm, which suppresses the others).
    """

    kind: str
    limit: Any = None
    deadband: float = 0.0

    KINDS = ("high", "low", "equals", "not_equals", "quality_bad")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(
                f"unknown alarm condition {self.kind!r} (expected one of {self.KINDS})"
            )
        if self.deadband < 0:
            raise ValueError("alarm deadband must not be negative")

    def evaluate(self, value: PointValue, active: bool) -> bool:
        """Whether the condition holds for ``value``, given whether it held before.

        ``active`` gives the hysteresis of limit alarms.
        """
        if self.kind == "quality_bad":
            return value.quality.status is QualityStatus.BAD
        if value.quality.status is QualityStatus.BAD or value.value is None:
            return active
        v = value.value
        if self.kind == "high":
            return v > (self.limit - self.deadband if active else self.limit)
        if self.kind == "low":
            return v < (self.limit + self.deadband if active else self.limit)
        if self.kind == "equals":
            return bool(v == self.limit)
        return bool(v != self.limit)

    def describe(self) -> str:
        """A short human form: ``> 80``, ``== True``, ``quality bad``."""
        symbols = {"high": ">", "low": "<", "equals": "==", "not_equals": "!="}
        if self.kind == "quality_bad":
            return "quality bad"
        return f"{symbols[self.kind]} {self.limit!r}"


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    """The declaration of one alarm class.

    ``point`` is the point's name within its device (``"lamp_failures"``), or,
    for alarms a deployment adds in its config, a full point id.
    """

    name: str
    point: str
    condition: Condition
    priority: Priority = Priority.MEDIUM
    message: Mapping[str, str] = field(default_factory=dict)
    procedure: str | None = None
    on_delay: float = 0.0
    off_delay: float = 0.0
    latching: bool = False
    suppressible: bool = True
    """False for the communication alarm itself: it is never suppressed by design."""


def alarm(
    point: str,
    *,
    high: float | None = None,
    low: float | None = None,
    equals: Any = None,
    not_equals: Any = None,
    quality_bad: bool = False,
    deadband: float = 0.0,
    priority: str | Priority = "medium",
    message: str | Mapping[str, str] | None = None,
    procedure: str | None = None,
    on_delay: float = 0.0,
    off_delay: float = 0.0,
    latching: bool = False,
    name: str | None = None,
) -> AlarmSpec:
    """Declare an alarm on one of the device's points.

    Give exactly one of ``high``, ``low``, ``equals``, ``not_equals`` or
    ``quality_bad=True``::

        lamp_failed = alarm("lamp_failures", high=0, priority="medium",
                            message={"fr": "Lampe en panne", "en": "Lamp failure"},
                            procedure="LIGHT-07")
        door_open = alarm("door_open", equals=True, on_delay=30)

    The attribute name becomes the alarm's name unless ``name`` is given.
    An alarm on a per-member point (per circuit, per port) exists once per member.
    """
    given = {
        "high": high,
        "low": low,
        "equals": equals,
        "not_equals": not_equals,
    }
    chosen = [(k, v) for k, v in given.items() if v is not None]
    if quality_bad:
        chosen.append(("quality_bad", None))
    if len(chosen) != 1:
        raise ValueError(
            f"alarm on {point!r}: give exactly one of high, low, equals, not_equals, quality_bad"
        )
    kind, limit = chosen[0]
    if on_delay < 0 or off_delay < 0:
        raise ValueError(f"alarm on {point!r}: delays must not be negative")
    return AlarmSpec(
        name=name or "",
        point=point,
        condition=Condition(kind, limit, deadband),
        priority=Priority.parse(priority),
        message=text(message),
        procedure=procedure,
        on_delay=on_delay,
        off_delay=off_delay,
        latching=latching,
    )
