"""Modbus device profiles: a vendor's register map declared as data, and its codec.

A *profile* is a TOML file that says, for one model of equipment, which
register holds which point: its table (coil, discrete input, holding or
input register), address, data type, word and byte order and scaling. It maps
**relative point ids** (``"door_open"``, ``"c1/level"``, the ids a device type
publishes with ``self.publish({...})``) to :class:`RegisterSpec`. Points that
repeat per member (per circuit, per door...) are declared once with an
address *stride*.

The same file drives the client (:mod:`cityvisor.hal.modbus`) and the
simulators (:mod:`cityvisor.hal.sim`), so a register map has one source of
truth. The format is documented in ``docs/modbus-profiles.md``.

This package knows nothing of sockets: it validates profiles and converts
between Python values and register words.

Where each part lives: ``registers.py`` (tables, value types,
:class:`RegisterSpec` and its decoder) and ``profile.py`` (:class:`Profile`,
:func:`load_profile`, :func:`bundled_profiles`); the bundled files are in
``cityvisor/hal/profiles/``.
"""

from __future__ import annotations

from .profile import (
    MemberGroup,
    PointEntry,
    Profile,
    ProfileError,
    ProfileInfo,
    bundled_profiles,
    load_profile,
)
from .registers import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    Decoder,
    RegisterSpec,
    Table,
    ValueType,
    WordOrder,
)

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "Decoder",
    "MemberGroup",
    "PointEntry",
    "Profile",
    "ProfileError",
    "ProfileInfo",
    "RegisterSpec",
    "Table",
    "ValueType",
    "WordOrder",
    "bundled_profiles",
    "load_profile",
]
