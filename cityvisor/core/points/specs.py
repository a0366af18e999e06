"""What a point is: its data type, scaling, deadband and the rest of its immutable spec."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- declarations


class DataType(enum.Enum):
    """The data types a point can hold."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    ENUM = "enum"

    # Members are singletons compared by identity: hash them by identity too.
    # Enum's own __hash__ is Python code, and every point update looks its type up.
    __hash__ = object.__hash__

    @classmethod
    def of(cls, python_type: Any) -> DataType:
        """Map ``bool``/``int``/``float``/``str`` (or a DataType or its name) to a DataType."""
        if isinstance(python_type, DataType):
            return python_type
        if isinstance(python_type, str):
            return cls(python_type)
        mapping = {bool: cls.BOOL, int: cls.INT, float: cls.FLOAT, str: cls.STR}
        try:
            return mapping[python_type]
        except KeyError:
            raise TypeError(f"unsupported point type {python_type!r}") from None

    @property
    def numeric(self) -> bool:
        """True for types whose history can be aggregated (min/max/avg)."""
        return self in (DataType.INT, DataType.FLOAT, DataType.BOOL, DataType.ENUM)


@dataclass(frozen=True, slots=True)
class Scaling:
    """A declared linear conversion from the equipment's raw value to engineering units.

    ``engineering = raw * factor + offset``. Build it from two known pairs with
    :meth:`linear` (``Scaling.linear(raw=(0, 1000), eng=(0.0, 100.0))``).
    """

    factor: float = 1.0
    offset: float = 0.0

    @classmethod
    def linear(cls, raw: tuple[float, float], eng: tuple[float, float]) -> Scaling:
        """The scaling that maps ``raw[0] -> eng[0]`` and ``raw[1] -> eng[1]``."""
        if raw[1] == raw[0]:
            raise ValueError("scaling needs two different raw values")
        factor = (eng[1] - eng[0]) / (raw[1] - raw[0])
        return cls(factor, eng[0] - raw[0] * factor)

    def to_engineering(self, raw: float) -> float:
        """Raw equipment value -> engineering value."""
        return raw * self.factor + self.offset

    def to_raw(self, engineering: float) -> float:
        """Engineering value -> raw equipment value (for writes)."""
        return (engineering - self.offset) / self.factor


@dataclass(frozen=True, slots=True)
class Deadband:
    """How much a numeric value must move before the change is reported.

    ``kind`` is ``"absolute"`` (in the point's unit) or ``"percent"`` (of the
    point's declared range ``maximum - minimum``, as OPC UA's percent deadband;
    of the previous value's magnitude when no range is declared).
    """

    amount: float
    kind: str = "absolute"

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "percent"):
            raise ValueError(f"deadband kind must be 'absolute' or 'percent', not {self.kind!r}")
        if self.amount < 0:
            raise ValueError("deadband must not be negative")

    @classmethod
    def percent(cls, amount: float) -> Deadband:
        """A deadband of ``amount`` % of the point's range."""
        return cls(amount, "percent")


@dataclass(frozen=True, slots=True)
class PointSpec:
    """The declaration of one point: what it is, not what it currently holds.

    Device types declare these with :func:`cityvisor.point`; the HMI, the API
    schema, ``cityvisor plugins`` and the history recorder are generated from
    them.
    """

    name: str
    dtype: DataType = DataType.FLOAT
    unit: str = ""
    writable: bool = False
    doc: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[int, str] | None = None
    deadband: Deadband | None = None
    scaling: Scaling | None = None
    minimum: float | None = None
    maximum: float | None = None
    per: str | None = None
    history: str = "default"

    def label(self, value: Any) -> str | None:
        """The label of an enum value (``None`` if the point is not an enum)."""
        if self.labels is None or value is None:
            return None
        return self.labels.get(value, str(value))

    def coerce(self, value: Any) -> Any:
        """Convert a driver's value to the point's type; raise ValueError if impossible."""
        if value is None:
            return None
        dtype = self.dtype
        if dtype is DataType.FLOAT:
            return float(value)
        if dtype is DataType.INT:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{self.name}: {value!r} is not an integer")
            return int(value)
        if dtype is DataType.BOOL:
            return bool(value)
        if dtype is DataType.ENUM:
            if isinstance(value, str) and self.labels:
                for raw, text in self.labels.items():
                    if text == value:
                        return raw
                raise ValueError(
                    f"{self.name}: {value!r} is not one of {list(self.labels.values())}"
                )
            return int(value)
        return str(value)

    def passes_deadband(self, old: Any, new: Any) -> bool:
        """True when ``new`` differs enough from ``old`` to be reported."""
        if old is None or new is None:
            return old is not new
        deadband = self.deadband
        if deadband is None or self.dtype not in (DataType.FLOAT, DataType.INT):
            return old != new
        delta = abs(new - old)
        if deadband.kind == "absolute":
            return delta > deadband.amount or (delta > 0 and deadband.amount == 0)
        if self.minimum is not None and self.maximum is not None:
            span = abs(self.maximum - self.minimum)
        else:
            span = abs(old)
        if span == 0:
            return delta > 0
        return delta * 100.0 > deadband.amount * span
