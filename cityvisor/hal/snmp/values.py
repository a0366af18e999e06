"""SNMP values: what an agent answers, converted to Python, and what a set sends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

from pyasn1.type import univ
from pysnmp.proto import rfc1905
from pysnmp.proto.rfc1902 import (
    Integer32,
    IpAddress,
    OctetString,
    TimeTicks,
)

# --------------------------------------------------------------------------- values

SnmpValue: TypeAlias = int | float | str | None
"""A value read from an agent, converted by :func:`to_python`."""


TableIndex: TypeAlias = int | tuple[int, ...]
"""A table row's index: an ``int`` for single-integer indexes (ifIndex), else the sub-identifiers."""


_ABSENT = (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)


def _text_or_hex(raw: bytes) -> str:
    # Agents pad strings with NULs and some send MACs or binary in OCTET STRING:
    # printable UTF-8 is text, anything else is shown as hex the way operators read MACs.
    trimmed = raw.rstrip(b"\x00")
    try:
        text = trimmed.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex(":")
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return text
    return raw.hex(":")


def to_python(value: Any) -> SnmpValue:
    """Convert a pysnmp value to plain Python (see the module docstring for the mapping)."""
    if isinstance(value, _ABSENT):
        return None
    if isinstance(value, TimeTicks):
        return int(value) / 100.0
    if isinstance(value, IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, univ.OctetString):
        return _text_or_hex(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return ".".join(str(n) for n in value)
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.Null):
        return None
    return str(value)


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().lstrip(".").split("."))


def _oid_text(oid: Iterable[int]) -> str:
    return ".".join(str(n) for n in oid)


def _set_value(value: Any) -> Any:
    # Python int -> Integer32 (enumerations such as ifAdminStatus are INTEGER);
    # text -> OCTET STRING; anything else must already be a typed pysnmp value.
    if isinstance(value, bool):
        raise TypeError("SNMP has no boolean: use an enumeration value (int)")
    if isinstance(value, int):
        return Integer32(value)
    if isinstance(value, str | bytes):
        return OctetString(value)
    if isinstance(value, univ.Integer | univ.OctetString | univ.ObjectIdentifier):
        return value
    raise TypeError(f"cannot SET a {type(value).__name__}: pass an int, str or a typed value")
