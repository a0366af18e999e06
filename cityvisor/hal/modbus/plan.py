"""The request planner and decoder: the block reads that cover a profile's points, and what a poll returns."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cityvisor.core.points import Quality

from ..modbus_profile import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    Decoder,
    Profile,
    RegisterSpec,
    Table,
)
from .errors import ModbusError, ModbusExceptionError

# --------------------------------------------------------------------------- read plans


# A read of each table: its function code, pymodbus's client method, bits or registers.
_READS: dict[Table, tuple[int, str, bool]] = {
    Table.COIL: (1, "read_coils", True),
    Table.DISCRETE_INPUT: (2, "read_discrete_inputs", True),
    Table.HOLDING: (3, "read_holding_registers", False),
    Table.INPUT: (4, "read_input_registers", False),
}


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` items of one table from ``address``, and the points in it."""

    table: Table
    address: int
    count: int
    points: tuple[tuple[str, RegisterSpec], ...]
    _decoders: tuple[tuple[str, int, Decoder], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _by_item: tuple[tuple[tuple[str, int, Decoder], ...], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    request: tuple[int, str, bool] = field(init=False, repr=False, compare=False)
    """The read's function code, pymodbus's client method for it, and whether it reads bits."""

    def __post_init__(self) -> None:
        # Resolved once per plan, never per poll: see RegisterSpec.decoder().
        decoders = tuple(
            (point_id, spec.address - self.address, spec.decoder())
            for point_id, spec in self.points
        )
        object.__setattr__(self, "_decoders", decoders)
        # For each item of the block, the points that use it (none in a gap).
        by_item: list[list[tuple[str, int, Decoder]]] = [[] for _ in range(self.count)]
        for (_point_id, spec), decoder in zip(self.points, decoders, strict=True):
            start = spec.address - self.address
            for item in range(start, start + spec.width):
                by_item[item].append(decoder)
        object.__setattr__(self, "_by_item", tuple(tuple(users) for users in by_item))
        object.__setattr__(self, "request", _READS[self.table])

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> dict[str, Any]:
        """The value of every point of the block, from the block's raw items."""
        return {point_id: decode(raw, start) for point_id, start, decode in self._decoders}

    def decode_changes(
        self, before: Sequence[int] | Sequence[bool], raw: Sequence[int] | Sequence[bool]
    ) -> dict[str, Any]:
        """The value of the points whose items differ between two reads of the block.

        Decoding is a pure function of a point's items: the others would
        decode as they did from ``before``. Comparing items costs less than
        decoding them, and what is not decoded is not offered either.
        """
        by_item = self._by_item
        # The changed items' indexes, found without a Python step per item.
        changed = itertools.compress(range(self.count), map(operator.ne, before, raw))
        return {
            point_id: decode(raw, start)
            for item in changed
            for point_id, start, decode in by_item[item]
        }


class ReadPlan:
    """The block reads that cover a set of points, neighbours merged.

    Points of one table are sorted by address and joined into one block while
    the hole between them is at most ``max_gap`` items (registers read for
    nothing, a good trade against a round trip) and the block stays within
    ``max_registers`` registers (``max_bits`` bits for coils and discrete
    inputs). Points that share a register (bits of a status word) share it.
    Build a plan once per profile and member count; reuse it for every poll
    and every unit of that model.
    """

    def __init__(
        self,
        specs: Mapping[str, RegisterSpec],
        *,
        max_gap: int = 8,
        max_registers: int = MAX_READ_REGISTERS,
        max_bits: int = MAX_READ_BITS,
    ) -> None:
        if not 1 <= max_registers <= MAX_READ_REGISTERS:
            raise ValueError(f"max_registers must be within 1..{MAX_READ_REGISTERS}")
        if not 1 <= max_bits <= MAX_READ_BITS:
            raise ValueError(f"max_bits must be within 1..{MAX_READ_BITS}")
        self.max_gap = max_gap
        self.max_registers = max_registers
        self.max_bits = max_bits
        blocks: list[Block] = []
        for table in Table:
            entries = sorted(
                ((pid, spec) for pid, spec in specs.items() if spec.table is table),
                key=lambda item: (item[1].address, item[1].end),
            )
            blocks.extend(self._coalesce(table, entries))
        self.blocks: tuple[Block, ...] = tuple(blocks)

    @classmethod
    def for_profile(
        cls,
        profile: Profile,
        members: Mapping[str, int | Sequence[str]] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> ReadPlan:
        """The plan of a profile, with the profile's gap and size limits.

        Plans are kept on the profile: every unit of one model with the same
        members shares one plan, computed once.
        """
        wanted = None if only is None else tuple(only)
        key = (
            tuple(
                (kind, count if isinstance(count, int) else tuple(count))
                for kind, count in sorted((members or {}).items())
            ),
            wanted,
        )
        cached = profile.cache.get(key)
        if isinstance(cached, ReadPlan):
            return cached
        specs = profile.resolve(members)
        if wanted is not None:
            missing = [p for p in wanted if p not in specs]
            if missing:
                raise KeyError(f"profile {profile.name} has no points {missing}")
            specs = {p: specs[p] for p in wanted}
        info = profile.info
        plan = cls(
            specs,
            max_gap=info.max_gap,
            max_registers=info.max_registers,
            max_bits=info.max_bits,
        )
        profile.cache[key] = plan
        return plan

    def _coalesce(self, table: Table, entries: list[tuple[str, RegisterSpec]]) -> list[Block]:
        limit = self.max_bits if table.is_bit else self.max_registers
        blocks: list[Block] = []
        start = end = 0
        members: list[tuple[str, RegisterSpec]] = []
        for point_id, spec in entries:
            if spec.width > limit:
                raise ValueError(f"{point_id} is wider than one read ({spec.width} > {limit})")
            if (
                members
                and spec.address - end <= self.max_gap
                and max(end, spec.end) - start <= limit
            ):
                end = max(end, spec.end)
                members.append((point_id, spec))
                continue
            if members:
                blocks.append(Block(table, start, end - start, tuple(members)))
            start, end, members = spec.address, spec.end, [(point_id, spec)]
        if members:
            blocks.append(Block(table, start, end - start, tuple(members)))
        return blocks

    @property
    def points(self) -> int:
        """How many points the plan reads."""
        return sum(len(b.points) for b in self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return f"<ReadPlan {self.points} points in {len(self.blocks)} requests>"


# --------------------------------------------------------------------------- poll results


class PollResult(dict[str, Any]):
    """``{relative_id: value}``, where a point that could not be read holds its bad Quality.

    ``good`` and ``bad`` split it; :meth:`by_quality` groups the failed ids
    for ``DeviceType.mark``. ``requests`` counts the requests the poll sent.

    ``changed`` holds the good values whose registers changed since the
    device's previous poll (every good value on the first poll, after its
    block failed, and for a poll of a plan other than the device's own): a
    value not in it read exactly as it did last time. ``failed``
    is :meth:`by_quality`, filled as the poll went.
    """

    requests: int = 0
    errors: list[ModbusError]
    changed: dict[str, Any]
    failed: dict[Quality, list[str]]

    def __init__(self) -> None:
        super().__init__()
        self.errors = []
        self.changed = {}
        self.failed = {}

    @property
    def good(self) -> dict[str, Any]:
        """The points that were read, with their values."""
        return {k: v for k, v in self.items() if not isinstance(v, Quality)}

    @property
    def bad(self) -> dict[str, Quality]:
        """The points that were not read, with the reason."""
        return {k: v for k, v in self.items() if isinstance(v, Quality)}

    def by_quality(self) -> dict[Quality, list[str]]:
        """The failed points grouped by quality (``{Quality.bad("comm_failure:timeout"): [...]}``)."""
        groups: dict[Quality, list[str]] = {}
        for point_id, value in self.items():
            if isinstance(value, Quality):
                groups.setdefault(value, []).append(point_id)
        return groups

    @property
    def answered(self) -> bool:
        """True if the unit answered at least one request validly (even with an exception).

        Timeouts and replies that are not Modbus (garbage, truncated frames,
        a reply to another request) are not answers: a unit that gives only
        those is as good as gone.
        """
        failed = self.failed
        if not failed:
            return True
        if sum(map(len, failed.values())) < len(self):
            return True
        return any(not q.reason.startswith("comm_failure") for q in failed)

    @property
    def device_fault(self) -> ModbusExceptionError | None:
        """The exception the unit answered when it refused every point of the poll, else None.

        A unit that answers every request with an exception (server device
        failure, busy...) is reachable but useless: its driver raises the
        device's fault alarm instead of its communication alarm.
        """
        failed, errors = self.failed, self.errors
        if not failed or not errors or sum(map(len, failed.values())) < len(self):
            return None
        if not all(isinstance(error, ModbusExceptionError) for error in errors):
            return None  # a timeout or a garbled reply among them: not the device's answer
        first = errors[0]
        assert isinstance(first, ModbusExceptionError)
        return first
