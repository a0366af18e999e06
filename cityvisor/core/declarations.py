"""Declarations: what a device type writes, as a datasheet would, about its points, alarms and commands.

Everything here is immutable and does no I/O: :func:`point` resolves to a
:class:`~cityvisor.core.points.PointSpec`, :func:`alarm` returns an
:class:`AlarmSpec`, :func:`command` attaches a :class:`CommandSpec` to the
handler, and :func:`interlock`, :func:`reaches` and the parameter helpers
(:func:`number`, :func:`integer`, :func:`boolean`, :func:`choice`,
:func:`string`) describe a command's gates, feedback and arguments. Devices,
alarms and commands all import this module, so none of the three needs
another to read what a device type declares.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .points import DataType, Deadband, PointSpec, PointValue, QualityStatus, Scaling
from .text import MAX_INTEGER, MIN_INTEGER, integer_problem, shown, text_problem
from .users import Role

COMMUNICATION_ALARM = "communication_lost"
"""Name of the alarm every device gets; while it is active it suppresses the device's others."""


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


# --------------------------------------------------------------------------- declarations


class _PointDeclaration:
    """What :func:`point` returns: resolves to an immutable :class:`PointSpec` on the class."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.spec: PointSpec | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.spec = PointSpec(name=name, **self.options)

    def __get__(self, instance: object, owner: type) -> PointSpec:
        assert self.spec is not None
        return self.spec


def point(
    dtype: type | str | DataType = float,
    *,
    unit: str = "",
    writable: bool = False,
    doc: str | Mapping[str, str] | None = None,
    labels: Sequence[str] | Mapping[int, str] | None = None,
    deadband: float | Deadband | None = None,
    scaling: Scaling | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    per: str | None = None,
    history: str = "default",
) -> Any:
    """Declare a point of a device type (as a class attribute)::

        level = point(float, unit="%", writable=True, per="circuit", deadband=0.5,
                      minimum=0, maximum=100, doc={"fr": "Niveau", "en": "Dimming level"})
        position = point(labels=["up", "down", "moving", "fault"])

    ``labels`` makes an enum (a list numbers its labels from 0). ``deadband``
    is absolute in the point's unit, or ``Deadband.percent(1)`` of its range.
    ``per`` names the member kind (``"circuit"``, ``"port"``) when the device
    has one such point per member. ``history`` is the retention class
    (``"none"`` keeps no history).
    """
    data_type = DataType.ENUM if labels is not None else DataType.of(dtype)
    if isinstance(labels, Sequence) and not isinstance(labels, str):
        labels = dict(enumerate(labels))
    if isinstance(deadband, int | float):
        deadband = Deadband(float(deadband))
    return _PointDeclaration(
        dtype=data_type,
        unit=unit,
        writable=writable,
        doc=text(doc),
        labels=labels,
        deadband=deadband,
        scaling=scaling,
        minimum=minimum,
        maximum=maximum,
        per=per,
        history=history,
    )


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a command: its type, range and documentation."""

    dtype: type
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    unit: str = ""
    doc: Mapping[str, str] = field(default_factory=dict)
    default: Any = None
    required: bool = True
    max_length: int | None = None

    def validate(self, name: str, value: Any) -> Any:
        """Return ``value`` converted to the parameter's type; raise ValueError saying why not.

        Beyond the declared range, integers must fit SQLite's 64 bits, numbers
        must be finite and text must pass :func:`~cityvisor.core.text.text_problem`
        (valid Unicode, no control characters).
        """
        if value is None:
            if self.required and self.default is None:
                raise ValueError(f"{name} is required")
            return self.default
        dtype = self.dtype
        if dtype is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {shown(value)}")
        elif dtype is int:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be an integer, not {shown(value)}")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"{name} must be an integer, not {shown(value)}")
                value = int(value)
            problem = integer_problem(name, value)
            if problem is not None:
                raise ValueError(problem)
        elif dtype is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, not {shown(value)}")
            try:
                value = float(value)
            except OverflowError:  # an integer beyond every float: 10**400
                raise ValueError(f"{name} must be a finite number") from None
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        elif dtype is str:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, not {shown(value)}")
            problem = text_problem(name, value, max_length=self.max_length or 1000)
            if problem is not None:
                raise ValueError(problem)
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"{name} must be one of {choices}, not {shown(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{name} must be >= {self.minimum}, not {shown(value)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{name} must be <= {self.maximum}, not {shown(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """The parameter as a JSON Schema fragment (for the API and the HMI's forms)."""
        types = {bool: "boolean", int: "integer", float: "number", str: "string"}
        schema: dict[str, Any] = {"type": types[self.dtype]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        elif self.dtype is int:
            schema["minimum"] = MIN_INTEGER
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        elif self.dtype is int:
            schema["maximum"] = MAX_INTEGER
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.default is not None:
            schema["default"] = self.default
        if self.unit:
            schema["x-unit"] = self.unit
        if self.doc:
            schema["description"] = self.doc.get("en") or next(iter(self.doc.values()))
            schema["x-doc"] = dict(self.doc)
        return schema


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    unit: str = "",
    doc: str | Mapping[str, str] | None = None,
    default: float | None = None,
) -> Param:
    """A real-valued parameter, optionally bounded: ``level=number(0, 100, unit="%")``."""
    return Param(float, minimum, maximum, unit=unit, doc=text(doc), default=default)


def integer(
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    unit: str = "",
    doc: str | Mapping[str, str] | None = None,
    default: int | None = None,
) -> Param:
    """An integer parameter, optionally bounded: ``preset=integer(1, 16)``."""
    return Param(int, minimum, maximum, unit=unit, doc=text(doc), default=default)


def boolean(*, doc: str | Mapping[str, str] | None = None, default: bool | None = None) -> Param:
    """A true/false parameter."""
    return Param(bool, doc=text(doc), default=default)


def choice(*choices: Any, doc: str | Mapping[str, str] | None = None, default: Any = None) -> Param:
    """A parameter that takes one of a fixed set of values: ``mode=choice("auto", "manual")``."""
    if not choices:
        raise ValueError("choice() needs at least one value")
    dtype = type(choices[0])
    return Param(dtype, choices=tuple(choices), doc=text(doc), default=default)


def string(
    *, max_length: int = 200, doc: str | Mapping[str, str] | None = None, default: str | None = None
) -> Param:
    """A free-text parameter (bounded in length)."""
    return Param(str, max_length=max_length, doc=text(doc), default=default)


# --------------------------------------------------------------------------- interlocks, feedback


@dataclass(frozen=True, slots=True)
class Interlock:
    """A condition on one of the device's points that must hold for the command to run.

    ``point`` is the point's name within the device (for a per-member
    command, the member's point). The command is refused when the point's
    value is not ``equals`` (or is ``not_equals``), or when its quality is
    bad (an interlock that cannot be verified does not hold).
    """

    point: str
    equals: Any = None
    not_equals: Any = None
    reason: Mapping[str, str] = field(default_factory=dict)

    def holds(self, value: Any, good: bool) -> bool:
        """True if the command may run given the point's value and whether its quality is good."""
        if not good:
            return False
        if self.equals is not None and value != self.equals:
            return False
        return not (self.not_equals is not None and value == self.not_equals)


def interlock(
    point: str,
    *,
    equals: Any = None,
    not_equals: Any = None,
    reason: str | Mapping[str, str],
) -> Interlock:
    """Declare that ``point`` must equal (or not equal) a value for the command to run.

    ::

        interlock("vehicle_on_loop", equals=False,
                  reason={"fr": "Véhicule sur la boucle", "en": "Vehicle on the loop"})
    """
    if (equals is None) == (not_equals is None):
        raise ValueError(f"interlock on {point!r}: give exactly one of equals or not_equals")
    return Interlock(point, equals, not_equals, text(reason))


@dataclass(frozen=True, slots=True)
class Feedback:
    """The point value that proves a command worked.

    The point (``point``, relative to the device or member) must reach
    ``value``, or the value of the parameter named ``param``, within
    ``within`` seconds (a number, or the name of a config attribute of the
    device holding one, such as ``"travel_time"``), ``tolerance`` apart for
    numbers.
    """

    point: str
    value: Any = None
    param: str | None = None
    tolerance: float = 0.0
    within: float | str = 10.0

    def target(self, arguments: Mapping[str, Any]) -> Any:
        """The value the point must reach for these arguments."""
        return arguments[self.param] if self.param is not None else self.value

    def reached(self, value: Any, target: Any) -> bool:
        """True when ``value`` counts as having reached ``target``."""
        if value is None:
            return False
        if isinstance(target, int | float) and not isinstance(target, bool):
            return abs(value - target) <= self.tolerance
        return bool(value == target)


def reaches(
    point: str,
    value: Any = None,
    *,
    param: str | None = None,
    tolerance: float = 0.0,
    within: float | str = 10.0,
) -> Feedback:
    """Declare a command's feedback: ``reaches("level", param="level", tolerance=1, within=10)``."""
    if (value is None) == (param is None):
        raise ValueError(f"feedback on {point!r}: give exactly one of value or param")
    return Feedback(point, value, param, tolerance, within)


# --------------------------------------------------------------------------- the declaration

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class CommandSpec:
    """The declaration of one command of a device type."""

    name: str
    handler: Handler
    params: Mapping[str, Param] = field(default_factory=dict)
    per: str | None = None
    role: Role = Role.OPERATOR
    confirm: bool = False
    confirm_within: float = 30.0
    two_person: bool = False
    approve_within: float = 120.0
    approver_role: Role = Role.SUPERVISOR
    """The lowest role that may approve it when it needs a second person (never below ``role``)."""
    interlocks: Sequence[Interlock] = ()
    feedback: Feedback | None = None
    timeout: float = 10.0
    doc: Mapping[str, str] = field(default_factory=dict)
    label: Mapping[str, str] = field(default_factory=dict)
    requires_online: bool = True
    """False for a command that changes only what the hub keeps for the device (a
    door's lockdown mode, a camera's watch flag): it is accepted while the
    equipment is unreachable, and the driver applies it when the link is back."""

    @property
    def approver_role_needed(self) -> Role:
        """The role an approver needs: ``approver_role``, or ``role`` if that is higher."""
        return max(self.role, self.approver_role)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and convert arguments; raise ValueError listing every problem."""
        clean, problems = self.check(arguments)
        if problems:
            raise ValueError("; ".join(problems))
        return clean

    def check(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Converted arguments and the list of every problem found (empty when valid)."""
        if not isinstance(arguments, Mapping):
            return {}, ["arguments must be an object"]
        problems: list[str] = []
        unknown = set(arguments) - set(self.params)
        if unknown:
            named = ", ".join(_plain(name) for name in sorted(unknown, key=str)[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            problems.append(f"unknown argument(s): {named}{more}")
        clean: dict[str, Any] = {}
        for name, param in self.params.items():
            try:
                clean[name] = param.validate(name, arguments.get(name))
            except ValueError as error:
                problems.append(str(error))
        return clean, problems

    def json_schema(self) -> dict[str, Any]:
        """The command's parameters as a JSON Schema object."""
        return {
            "type": "object",
            "properties": {n: p.json_schema() for n, p in self.params.items()},
            "required": [n for n, p in self.params.items() if p.required and p.default is None],
            "additionalProperties": False,
        }


def command(
    *,
    per: str | None = None,
    role: str | Role = "operator",
    confirm: bool = False,
    confirm_within: float = 30.0,
    two_person: bool = False,
    approve_within: float = 120.0,
    approver_role: str | Role = "supervisor",
    interlocks: Sequence[Interlock] = (),
    feedback: Feedback | None = None,
    timeout: float = 10.0,
    doc: str | Mapping[str, str] | None = None,
    label: str | Mapping[str, str] | None = None,
    name: str | None = None,
    requires_online: bool = True,
    **params: Param,
) -> Callable[[Handler], Handler]:
    """Declare an async method of a device type as a command.

    Keyword arguments other than the options below declare the command's
    parameters (``level=number(0, 100)``); the method receives them by name,
    after the member (``circuit``, ``port``) when ``per`` is given::

        @command(per="circuit", level=number(0, 100, unit="%"),
                 feedback=reaches("level", param="level", tolerance=1))
        async def set_level(self, circuit: str, level: float) -> None:
            ...

    Options: ``role`` needed to send it; ``confirm`` (select, then operate
    within ``confirm_within`` seconds); ``two_person`` (a second user
    approves within ``approve_within`` seconds); ``approver_role``, the
    lowest role that may approve (``"supervisor"`` unless said; the approver
    also needs ``role`` when it is higher); ``interlocks`` that must
    hold; ``feedback`` that proves success; ``timeout`` for the handler;
    ``requires_online=False`` for a command that only changes hub-side state
    and may be sent while the equipment is unreachable. The docstring of the method is the command's documentation unless
    ``doc`` is given.
    """
    for key, param in params.items():
        if not isinstance(param, Param):
            raise TypeError(
                f"command parameter {key!r} must be declared with number(), integer(), "
                f"boolean(), choice() or string(), not {param!r}"
            )

    def decorate(handler: Handler) -> Handler:
        spec = CommandSpec(
            name=name or handler.__name__,
            handler=handler,
            params=dict(params),
            per=per,
            role=Role.parse(role),
            confirm=confirm,
            confirm_within=confirm_within,
            two_person=two_person,
            approve_within=approve_within,
            approver_role=Role.parse(approver_role),
            interlocks=tuple(interlocks),
            feedback=feedback,
            timeout=timeout,
            doc=text(doc if doc is not None else (handler.__doc__ or "").strip() or None),
            label=text(label),
            requires_online=requires_online,
        )
        handler.__cityvisor_command__ = spec  # type: ignore[attr-defined]
        return handler

    return decorate


def _plain(name: Any) -> str:
    """A name for a message: as it is when it is plain text, else its shortened repr."""
    if isinstance(name, str) and text_problem("name", name, max_length=60) is None:
        return name
    return shown(name, 60)
