"""Modbus registers: tables, value types, one register's spec and the decoder that reads it."""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cityvisor.core.points import Scaling

MAX_READ_REGISTERS = 125
"""The Modbus limit on registers per read request (function codes 3 and 4)."""


MAX_READ_BITS = 2000
"""The Modbus limit on bits per read request (function codes 1 and 2)."""


WordOrder = Literal["big", "little"]


class Table(enum.StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bit(self) -> bool:
        """True for the single-bit tables (coils and discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def is_writable(self) -> bool:
        """True for the tables a client can write (coils and holding registers)."""
        return self in (Table.COIL, Table.HOLDING)

    @property
    def read_function(self) -> int:
        """The function code that reads this table."""
        return _READ_FUNCTION[self]

    @property
    def max_read(self) -> int:
        """How many items one read request may ask for."""
        return MAX_READ_BITS if self.is_bit else MAX_READ_REGISTERS


_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}


class ValueType(enum.StrEnum):
    """How a point's value is stored: a bit, or an integer/float over 1 to 4 registers."""

    BOOL = "bool"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"

    @property
    def width(self) -> int:
        """Registers used (1 for a bool: a coil, or one bit of one register)."""
        return _TYPE_FORMAT[self][1]

    @property
    def is_float(self) -> bool:
        """True for IEEE 754 types."""
        return self in (ValueType.F32, ValueType.F64)


# struct format and width in registers
_TYPE_FORMAT: dict[ValueType, tuple[str, int]] = {
    ValueType.BOOL: ("", 1),
    ValueType.U16: ("H", 1),
    ValueType.I16: ("h", 1),
    ValueType.U32: ("I", 2),
    ValueType.I32: ("i", 2),
    ValueType.U64: ("Q", 4),
    ValueType.I64: ("q", 4),
    ValueType.F32: ("f", 2),
    ValueType.F64: ("d", 4),
}


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where one point lives and how its raw words become a value.

    ``word_order`` is the order of the 16-bit words of a 32/64-bit value
    (``"big"``: most significant word first, the Modbus habit; ``"little"``:
    least significant first). ``byte_order`` is the order of the two bytes
    inside each word (``"little"`` swaps them). ``bit`` selects one bit (0 =
    least significant) of a register for a ``bool`` kept in a register.
    """

    table: Table
    address: int
    type: ValueType = ValueType.U16
    bit: int | None = None
    scaling: Scaling | None = None
    word_order: WordOrder = "big"
    byte_order: WordOrder = "big"
    writable: bool = False
    unit: str = ""
    labels: tuple[str, ...] | None = None

    @property
    def width(self) -> int:
        """How many items (registers, or bits in the bit tables) the point occupies."""
        return 1 if self.table.is_bit else self.type.width

    @property
    def end(self) -> int:
        """The first address after the point."""
        return self.address + self.width

    # -- decoding ---------------------------------------------------------

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> bool | int | float:
        """Convert the point's raw items (``width`` of them) into its value.

        Integers without scaling stay ``int``; a scaling makes the value a
        ``float`` in engineering units.
        """
        if self.table.is_bit:
            return bool(raw[0])
        words = [int(w) for w in raw[: self.width]]
        if self.type is ValueType.BOOL:
            return bool((words[0] >> (self.bit or 0)) & 1)
        number = struct.unpack(">" + _TYPE_FORMAT[self.type][0], self._words_to_bytes(words))[0]
        if self.scaling is not None:
            return self.scaling.to_engineering(number)
        return number

    def decoder(self) -> Decoder:
        """A function ``(raw, start) -> value``: :meth:`decode` of ``raw[start:start + width]``.

        Built once per spec and kept: the poll path decodes thousands of points a
        second, and resolving the type, orders and scaling at each call costs
        more than the decoding itself. It gives exactly what :meth:`decode` gives.
        """
        return _decoder(self)

    def _words_to_bytes(self, words: list[int]) -> bytes:
        if self.word_order == "little":
            words = words[::-1]
        data = b"".join(w.to_bytes(2, "big") for w in words)
        if self.byte_order == "little":
            data = _swap_bytes(data)
        return data

    # -- encoding ---------------------------------------------------------

    def encode(self, value: Any, current: int = 0) -> list[int] | list[bool]:
        """Convert a value into the raw items to write (``width`` of them).

        ``current`` is the register's present content, needed to change one
        bit of a register without touching the others. Raises ValueError when
        the value does not fit the type (after scaling).
        """
        if self.table.is_bit:
            return [bool(value)]
        if self.type is ValueType.BOOL:
            mask = 1 << (self.bit or 0)
            return [(current | mask) if value else (current & ~mask & 0xFFFF)]
        raw: int | float = int(value) if isinstance(value, bool) else value
        if self.scaling is not None:
            raw = self.scaling.to_raw(float(raw))
        fmt = _TYPE_FORMAT[self.type][0]
        if self.type.is_float:
            data = struct.pack(">" + fmt, float(raw))
        else:
            # Integers stay exact (a u64 does not survive a trip through float).
            integer = raw if isinstance(raw, int) else round(raw)
            low, high = _INT_RANGE[self.type]
            if not low <= integer <= high:
                raise ValueError(
                    f"{value!r} does not fit a {self.type.value} register (raw {integer})"
                )
            data = struct.pack(">" + fmt, integer)
        if self.byte_order == "little":
            data = _swap_bytes(data)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        if self.word_order == "little":
            words.reverse()
        return words


Decoder = Callable[[Sequence[Any], int], Any]
"""``(raw items, index of the point's first item) -> value``."""


@functools.lru_cache(maxsize=4096)
def _decoder(spec: RegisterSpec) -> Decoder:
    if spec.table.is_bit:
        return lambda raw, i: bool(raw[i])
    vtype = spec.type
    if vtype is ValueType.BOOL:
        mask = 1 << (spec.bit or 0)
        return lambda raw, i: bool(int(raw[i]) & mask)
    code, width = _TYPE_FORMAT[vtype]
    scaling = spec.scaling
    if vtype is ValueType.U16 and spec.byte_order == "big":
        if scaling is None:
            return lambda raw, i: int(raw[i])
        factor, offset = scaling.factor, scaling.offset
        return lambda raw, i: int(raw[i]) * factor + offset
    # Words packed in the byte order of each word, unpacked as one big-endian value:
    # the byte swap and the word swap cost nothing more than the packing itself.
    pack = struct.Struct(("<" if spec.byte_order == "little" else ">") + "H" * width).pack
    unpack = struct.Struct(">" + code).unpack
    reverse = spec.word_order == "little"

    def number(raw: Sequence[Any], i: int) -> Any:
        words = raw[i : i + width]
        return unpack(pack(*(reversed(words) if reverse else words)))[0]

    if scaling is None:
        return number
    factor, offset = scaling.factor, scaling.offset
    return lambda raw, i: number(raw, i) * factor + offset


_INT_RANGE = {
    ValueType.U16: (0, 0xFFFF),
    ValueType.I16: (-0x8000, 0x7FFF),
    ValueType.U32: (0, 0xFFFF_FFFF),
    ValueType.I32: (-0x8000_0000, 0x7FFF_FFFF),
    ValueType.U64: (0, 0xFFFF_FFFF_FFFF_FFFF),
    ValueType.I64: (-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}


def _swap_bytes(data: bytes) -> bytes:
    swapped = bytearray(data)
    swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
    return bytes(swapped)
