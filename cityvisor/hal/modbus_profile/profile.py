"""Modbus profiles: a vendor's register map read from a TOML file, checked, and laid out per member."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic

from cityvisor.core.points import Scaling

from .registers import MAX_READ_BITS, MAX_READ_REGISTERS, RegisterSpec, Table, ValueType, WordOrder

# --------------------------------------------------------------------------- profile files


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key


_Strict = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProfileInfo(pydantic.BaseModel):
    """The ``[profile]`` table: identity and the defaults of the register map."""

    model_config = _Strict

    name: str
    description: str = ""
    vendor: str = ""
    model: str = ""
    word_order: WordOrder = "big"
    """Default order of the words of 32/64-bit values."""
    byte_order: WordOrder = "big"
    """Default order of the bytes inside a register."""
    max_gap: int = pydantic.Field(8, ge=0, le=MAX_READ_REGISTERS)
    """Unused registers (or bits) a block read may span to join two neighbours.

    0 for devices that refuse reads touching unmapped addresses.
    """
    max_registers: int = pydantic.Field(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    """Registers per read request (some devices accept fewer than 125)."""
    max_bits: int = pydantic.Field(MAX_READ_BITS, ge=1, le=MAX_READ_BITS)
    """Bits per read request of coils or discrete inputs."""


class MemberGroup(pydantic.BaseModel):
    """A ``[members.<kind>]`` table: a repeated part of the device (circuits, doors)."""

    model_config = _Strict

    prefix: str | None = None
    """Relative ids are ``<prefix><n>/<point>``; the kind's name by default."""
    first: int = pydantic.Field(1, ge=0)
    """The number of the first member (``c1`` with 1)."""
    max: int = pydantic.Field(64, ge=1)
    """How many members the device can have at most."""
    stride: int = pydantic.Field(1, ge=0)
    """Address distance between two members, unless a point says otherwise."""


class PointEntry(pydantic.BaseModel):
    """A ``[points.<name>]`` table: one point of the register map."""

    model_config = _Strict

    table: Table
    address: int = pydantic.Field(ge=0, le=0xFFFF)
    """Address (0-based, as on the wire) of the point, of the first member for ``per`` points."""
    type: ValueType | None = None
    """Data type; ``bool`` for coils, discrete inputs and ``bit``, ``u16`` otherwise."""
    bit: int | None = pydantic.Field(None, ge=0, le=15)
    scale: float = 1.0
    """Engineering value = raw * scale + offset."""
    offset: float = 0.0
    word_order: WordOrder | None = None
    byte_order: WordOrder | None = None
    writable: bool | None = None
    """Defaults to true for coils and holding registers."""
    per: str | None = None
    """The member kind the point repeats for (a key of ``[members]``)."""
    stride: int | None = pydantic.Field(None, ge=0)
    """Address distance between members for this point (overrides the group's)."""
    bit_stride: int | None = pydantic.Field(None, ge=1, le=16)
    """Bit distance between members whose bits share a register: member n's bit
    (from 0) is ``bit + n * bit_stride``, carried into the next register past
    bit 15. The point's ``stride`` then defaults to 0."""
    unit: str = ""
    labels: list[str] | None = None
    """Names of an enum's values, from 0 (documentation and simulators)."""
    doc: str = ""

    @property
    def value_type(self) -> ValueType:
        """The declared type, or its default for the table."""
        if self.type is not None:
            return self.type
        if self.table.is_bit or self.bit is not None:
            return ValueType.BOOL
        return ValueType.U16


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class Profile(pydantic.BaseModel):
    """A device's register map (a validated profile file).

    Load one with :func:`load_profile` (a bundled name or a path),
    :meth:`from_file` or :meth:`from_toml`; turn it into register specs
    for one device with :meth:`resolve`.
    """

    model_config = _Strict

    info: ProfileInfo = pydantic.Field(alias="profile")
    members: dict[str, MemberGroup] = {}
    points: dict[str, PointEntry]

    _source: str = pydantic.PrivateAttr("<profile>")
    _cache: dict[Any, Any] = pydantic.PrivateAttr(default_factory=dict)

    # -- loading ----------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> Profile:
        """Parse and validate a profile from TOML text."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(source, "", f"not valid TOML: {exc}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> Profile:
        """Read and validate a profile file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
        return cls.from_toml(text, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Profile:
        """Validate a profile already parsed into a mapping."""
        try:
            profile = cls.model_validate(data)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ProfileError(source, key, error["msg"] + more) from None
        profile._source = source
        profile._check()
        return profile

    def _check(self) -> None:
        """Checks that span several keys; each error names the key at fault."""
        for kind in self.members:
            if not _NAME.match(kind):
                raise ProfileError(self.source, f"members.{kind}", "not a valid member kind name")
        for name, entry in self.points.items():
            key = f"points.{name}"
            if not _NAME.match(name):
                raise ProfileError(
                    self.source, key, "a point name holds letters, digits, '_', '-', '.'"
                )
            vtype = entry.value_type
            if entry.table.is_bit:
                if vtype is not ValueType.BOOL:
                    raise ProfileError(
                        self.source, f"{key}.type", f"a {entry.table.value} holds a bool"
                    )
                if entry.bit is not None:
                    raise ProfileError(
                        self.source,
                        f"{key}.bit",
                        f"bit is for registers, not a {entry.table.value}",
                    )
            elif vtype is ValueType.BOOL and entry.bit is None:
                raise ProfileError(
                    self.source, f"{key}.bit", "a bool in a register needs the bit number"
                )
            elif entry.bit is not None and vtype is not ValueType.BOOL:
                raise ProfileError(self.source, f"{key}.type", "a bit of a register is a bool")
            if vtype is ValueType.BOOL and (entry.scale != 1.0 or entry.offset != 0.0):
                raise ProfileError(self.source, f"{key}.scale", "a bool cannot be scaled")
            if entry.scale == 0:
                raise ProfileError(self.source, f"{key}.scale", "scale must not be 0")
            if entry.writable and not entry.table.is_writable:
                raise ProfileError(
                    self.source, f"{key}.writable", f"a {entry.table.value} cannot be written"
                )
            if entry.per is not None and entry.per not in self.members:
                raise ProfileError(
                    self.source,
                    f"{key}.per",
                    f"no [members.{entry.per}] table (known: {sorted(self.members) or 'none'})",
                )
            if entry.per is None and entry.stride is not None:
                raise ProfileError(self.source, f"{key}.stride", "stride needs per")
            if entry.bit_stride is not None and (entry.per is None or entry.bit is None):
                raise ProfileError(
                    self.source,
                    f"{key}.bit_stride",
                    "bit_stride is for a bit of a register repeated per member: it needs bit and per",
                )
            width = 1 if entry.table.is_bit else vtype.width
            last = entry.address + width - 1
            if entry.per is not None:
                group = self.members[entry.per]
                last = self._member_address(entry, group.max - 1)[0] + width - 1
            if last > 0xFFFF:
                raise ProfileError(
                    self.source, f"{key}.address", "the point (or its last member) ends past 65535"
                )

    # -- use --------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where the profile was read from (for error messages)."""
        return self._source

    @property
    def cache(self) -> dict[Any, Any]:
        """Values derived from the profile (read plans), computed once and kept here."""
        return self._cache

    @property
    def name(self) -> str:
        """The profile's name."""
        return self.info.name

    def member_names(self, kind: str, members: int | Sequence[str]) -> list[str]:
        """The member names for ``members`` (a count, or the names themselves in address order)."""
        group = self.members[kind]
        if isinstance(members, int):
            prefix = kind if group.prefix is None else group.prefix
            names = [f"{prefix}{group.first + i}" for i in range(members)]
        else:
            names = [str(m) for m in members]
        if len(names) > group.max:
            raise ProfileError(
                self.source,
                f"members.{kind}.max",
                f"{len(names)} {kind}s asked, the device has at most {group.max}",
            )
        return names

    def resolve(
        self, members: Mapping[str, int | Sequence[str]] | None = None
    ) -> dict[str, RegisterSpec]:
        """The register spec of every point of one device, by relative id.

        ``members`` gives, per member kind, how many there are (``{"circuit":
        8}`` -> ``c1 .. c8`` with the profile's prefix) or their names in
        address order (``{"circuit": ["north", "south"]}``), so the ids match
        the device type's ``members()``.
        """
        members = dict(members or {})
        unknown = set(members) - set(self.members)
        if unknown:
            raise ProfileError(self.source, "members", f"unknown member kinds {sorted(unknown)}")
        specs: dict[str, RegisterSpec] = {}
        names = {kind: self.member_names(kind, count) for kind, count in members.items()}
        for name, entry in self.points.items():
            if entry.per is None:
                specs[name] = self._spec(entry, entry.address)
                continue
            if entry.per not in names:
                raise ProfileError(
                    self.source,
                    f"points.{name}.per",
                    f"say how many {entry.per}s the device has (members={{{entry.per!r}: n}})",
                )
            for index, member in enumerate(names[entry.per]):
                specs[f"{member}/{name}"] = self._spec(entry, *self._member_address(entry, index))
        return specs

    def _member_address(self, entry: PointEntry, index: int) -> tuple[int, int | None]:
        """The address and bit of member ``index`` (from 0) of a per-member point."""
        assert entry.per is not None
        group = self.members[entry.per]
        if entry.stride is not None:
            stride = entry.stride
        else:  # bits packed by bit_stride share their registers, whatever the group's stride
            stride = 0 if entry.bit_stride is not None else group.stride
        address = entry.address + index * stride
        if entry.bit_stride is None or entry.bit is None:
            return address, entry.bit
        carry, bit = divmod(entry.bit + index * entry.bit_stride, 16)
        return address + carry, bit

    def _spec(self, entry: PointEntry, address: int, bit: int | None = None) -> RegisterSpec:
        vtype = entry.value_type
        scaling = None
        if vtype is not ValueType.BOOL and (entry.scale != 1.0 or entry.offset != 0.0):
            scaling = Scaling(entry.scale, entry.offset)
        return RegisterSpec(
            table=entry.table,
            address=address,
            type=vtype,
            bit=entry.bit if bit is None else bit,
            scaling=scaling,
            word_order=entry.word_order or self.info.word_order,
            byte_order=entry.byte_order or self.info.byte_order,
            writable=entry.table.is_writable if entry.writable is None else entry.writable,
            unit=entry.unit,
            labels=tuple(entry.labels) if entry.labels is not None else None,
        )

    def with_defaults(self, **changes: Any) -> Profile:
        """A copy with some ``[profile]`` settings changed (``word_order="little"``)."""
        info = self.info.model_copy(update=changes)
        changed = self.model_copy(update={"info": info})
        changed._cache = {}  # plans derived from the old settings do not apply
        return changed


# --------------------------------------------------------------------------- bundled profiles

_PROFILES = "cityvisor.hal.profiles"


def bundled_profiles() -> list[str]:
    """The names of the profiles shipped with cityvisor (``"lighting_cabinet"``...)."""
    files: Iterable[Any] = resources.files(_PROFILES).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a bundled profile by name (``"bollard_plc"``) or a profile file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        return Profile.from_file(name_or_path)
    resource = resources.files(_PROFILES) / f"{text}.toml"
    if not resource.is_file():
        raise ProfileError(
            text, "", f"no bundled profile of that name (bundled: {bundled_profiles()})"
        )
    return Profile.from_toml(resource.read_text(encoding="utf-8"), source=f"{text}.toml")
