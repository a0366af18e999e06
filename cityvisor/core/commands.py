"""Commands: declarations (below) and the CommandBus that runs them.

A command is an operator's or a rule's order to a device: set a level, raise
a bollard, disable a port. Device types declare commands with
:func:`command` on an async method; the declaration says which parameters
it takes (types and ranges), who may send it, whether it needs
confirmation or a second person's approval, which interlocks must hold, and
which point value proves it worked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .alarms import text
from .users import Role

__all__ = [
    "CommandSpec",
    "Feedback",
    "Interlock",
    "Param",
    "boolean",
    "choice",
    "command",
    "integer",
    "interlock",
    "number",
    "reaches",
    "string",
]


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
        """Return ``value`` converted to the parameter's type; raise ValueError saying why not."""
        if value is None:
            if self.required and self.default is None:
                raise ValueError(f"{name} is required")
            return self.default
        dtype = self.dtype
        if dtype is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {value!r}")
        elif dtype is int:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be an integer, not {value!r}")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"{name} must be an integer, not {value!r}")
                value = int(value)
        elif dtype is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, not {value!r}")
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number")
        elif dtype is str:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, not {value!r}")
            if self.max_length is not None and len(value) > self.max_length:
                raise ValueError(f"{name} must be at most {self.max_length} characters")
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"{name} must be one of {choices}, not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{name} must be >= {self.minimum}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{name} must be <= {self.maximum}, not {value!r}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """The parameter as a JSON Schema fragment (for the API and the HMI's forms)."""
        types = {bool: "boolean", int: "integer", float: "number", str: "string"}
        schema: dict[str, Any] = {"type": types[self.dtype]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
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
    interlocks: Sequence[Interlock] = ()
    feedback: Feedback | None = None
    timeout: float = 10.0
    doc: Mapping[str, str] = field(default_factory=dict)
    label: Mapping[str, str] = field(default_factory=dict)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and convert arguments; raise ValueError listing every problem."""
        if not isinstance(arguments, Mapping):
            raise ValueError("arguments must be an object")
        problems: list[str] = []
        unknown = set(arguments) - set(self.params)
        if unknown:
            problems.append("unknown argument(s): " + ", ".join(sorted(unknown)))
        clean: dict[str, Any] = {}
        for name, param in self.params.items():
            try:
                clean[name] = param.validate(name, arguments.get(name))
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return clean

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
    interlocks: Sequence[Interlock] = (),
    feedback: Feedback | None = None,
    timeout: float = 10.0,
    doc: str | Mapping[str, str] | None = None,
    label: str | Mapping[str, str] | None = None,
    name: str | None = None,
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
    approves within ``approve_within`` seconds); ``interlocks`` that must
    hold; ``feedback`` that proves success; ``timeout`` for the handler.
    The docstring of the method is the command's documentation unless
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
            interlocks=tuple(interlocks),
            feedback=feedback,
            timeout=timeout,
            doc=text(doc if doc is not None else (handler.__doc__ or "").strip() or None),
            label=text(label),
        )
        handler.__cityvisor_command__ = spec  # type: ignore[attr-defined]
        return handler

    return decorate
