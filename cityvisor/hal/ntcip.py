"""NTCIP 1202 (Actuated Signal Controller) objects on top of the SNMP HAL, and junction profiles.

A traffic signal controller speaks SNMP with the NTCIP 1202 MIB (under
``1.3.6.1.4.1.1206.4.2.1``, the ``asc`` node). This module knows the objects
a central uses, so the signals family never handles an OID:

* phase status groups (reds, yellows, greens of 8 phases per group) and the
  phase control groups (hold), as bitmaps decoded into phase numbers;
* unit status: control source (``unitControlStatus``: central, timebase,
  local manual...) and flash (``unitFlashStatus``);
* coordination: the running pattern (``coordPatternStatus``) and the
  pattern the central calls (``systemPatternControl``: 1-253 a timing plan,
  254 free, 255 flash, 0 standby = back to the controller's own schedule);
* vehicle detectors: occupancy (``volumeOccupancyTable``) and the alarm
  bitmaps of the detector status groups;
* a bus priority request in the manner of NTCIP 1211 (vehicle, phase of
  its approach, time of service desired), written as one SET.

:class:`NtcipController` is the conversation with one controller, over an
:class:`~cityvisor.hal.snmp.SnmpClient`: :meth:`~NtcipController.read_status`
returns one :class:`ControllerStatus` read in a single GET.

A :class:`Junction` is the layout of a junction, from a profile file: its
phases (name, approach), the **conflict table** (phases that must never be
green together) and the stages (sets of compatible phases served in turn),
and the timing plans the controller holds. The central checks every phase
command against that table before it sends anything.

The priority request objects (:data:`PRIORITY_ENTRY`) follow the shape of
NTCIP 1211's request (an id, the vehicle, its class, the phase to serve and
the time of service desired, and a status) under NTCIP 1211's node; the
column numbering is the one cityvisor's simulator serves. Check a vendor's
1211 MIB before pointing the family at real equipment.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic

from .snmp import SnmpClient, SnmpProtocolError, SnmpValue

__all__ = [
    "ASC",
    "COORD_PATTERN_STATUS",
    "MAX_PHASES",
    "PATTERN_FLASH",
    "PATTERN_FREE",
    "PATTERN_STANDBY",
    "PHASE_CONTROL_HOLD",
    "PHASE_STATUS_GREENS",
    "PHASE_STATUS_REDS",
    "PHASE_STATUS_YELLOWS",
    "PRIORITY_ENTRY",
    "SYSTEM_PATTERN_CONTROL",
    "UNIT_CONTROL_STATUS",
    "UNIT_FLASH_STATUS",
    "ControllerStatus",
    "Junction",
    "JunctionError",
    "NtcipController",
    "PriorityStatus",
    "UnitControlStatus",
    "UnitFlashStatus",
    "bitmap",
    "load_junction",
    "phases_of",
]

# --------------------------------------------------------------------------- objects

ASC = "1.3.6.1.4.1.1206.4.2.1"
"""The NTCIP 1202 ``asc`` node."""
MAX_PHASES = f"{ASC}.1.1.0"
MAX_PHASE_GROUPS = f"{ASC}.1.3.0"
PHASE_STATUS_REDS = f"{ASC}.1.4.1.2"
"""phaseStatusGroupReds.<group>: bit n-1 is phase 8*(group-1)+n (the same for every group)."""
PHASE_STATUS_YELLOWS = f"{ASC}.1.4.1.3"
PHASE_STATUS_GREENS = f"{ASC}.1.4.1.4"
PHASE_CONTROL_HOLD = f"{ASC}.1.5.1.4"
"""phaseControlGroupHold.<group>: the phases the central holds green (writable)."""
DETECTOR_STATUS_ALARMS = f"{ASC}.2.4.1.3"
"""vehicleDetectorStatusGroupAlarms.<group>: detectors in fault, 8 per group."""
DETECTOR_OCCUPANCY = f"{ASC}.2.5.4.1.2"
"""detectorOccupancy.<detector>: 0-200 is 0-100 % in half percents; above, a fault code."""
UNIT_CONTROL_STATUS = f"{ASC}.3.5.0"
UNIT_FLASH_STATUS = f"{ASC}.3.6.0"
COORD_PATTERN_STATUS = f"{ASC}.4.10.0"
SYSTEM_PATTERN_CONTROL = f"{ASC}.4.14.0"
PRIORITY_ENTRY = "1.3.6.1.4.1.1206.4.2.11.1.2.1"
"""The priority request table (NTCIP 1211 node); ``.<column>.<request id>``, see above."""
PRIORITY_COLUMNS = {"vehicle": 2, "vehicle_class": 3, "phase": 4, "eta": 5, "status": 6}
PRIORITY_SLOTS = 16
"""Request ids 1..16: a new request takes the slot ``request_id % 16 + 1``."""

PATTERN_STANDBY = 0
PATTERN_FREE = 254
PATTERN_FLASH = 255


class UnitControlStatus(enum.IntEnum):
    """What controls the unit (``unitControlStatus``)."""

    OTHER = 1
    SYSTEM_CONTROL = 2
    SYSTEM_STANDBY = 3
    BACKUP_MODE = 4
    MANUAL = 5
    TIMEBASE = 6
    INTERCONNECT = 7
    INTERCONNECT_BACKUP = 8


class UnitFlashStatus(enum.IntEnum):
    """Why the unit flashes, or that it does not (``unitFlashStatus``)."""

    OTHER = 1
    NOT_FLASH = 2
    AUTOMATIC = 3
    LOCAL_MANUAL = 4
    FAULT_MONITOR = 5
    MMU = 6
    STARTUP = 7
    PREEMPT = 8


class PriorityStatus(enum.IntEnum):
    """The state of one priority request in the controller."""

    IDLE = 1
    QUEUED = 2
    ACTIVE = 3
    SERVED = 4
    CANCELLED = 5
    REJECTED = 6


def bitmap(phases: Iterable[int], group: int) -> int:
    """The bitmap of ``phases`` that fall in phase group ``group`` (1: phases 1-8)."""
    low = 8 * (group - 1)
    return sum(1 << (p - low - 1) for p in phases if low < p <= low + 8)


def phases_of(value: int, group: int) -> set[int]:
    """The phase numbers set in one group's bitmap."""
    low = 8 * (group - 1)
    return {low + bit + 1 for bit in range(8) if value >> bit & 1}


# --------------------------------------------------------------------------- junction profiles


class JunctionError(ValueError):
    """A junction profile that cannot be used; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key


class _Phase(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    approach: str = ""
    """Where the vehicles this phase serves come from (``north``, ``avenue-est``...)."""
    bus: bool = False
    """A bus lane is served by this phase: priority requests may call it."""


class _Plan(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    greens: list[pydantic.PositiveFloat]
    """Green seconds of each stage, in the order of ``stages``."""


class _JunctionFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    junction: dict[str, str] = {}
    phases: dict[int, _Phase]
    conflicts: dict[int, list[int]]
    stages: list[list[int]]
    plans: dict[int, _Plan]
    yellow: pydantic.PositiveFloat = 3.0
    all_red: pydantic.NonNegativeFloat = 2.0


@dataclass(frozen=True)
class Junction:
    """A junction's layout: phases, the conflict table, stages and timing plans.

    ``conflicts`` is symmetric: ``conflicts[2]`` holds every phase that may
    never be green while phase 2 is. ``stages`` are the sets of phases green
    together, in the order the controller serves them (its ring diagram).
    """

    name: str
    phases: Mapping[int, Mapping[str, Any]]
    conflicts: Mapping[int, frozenset[int]]
    stages: tuple[frozenset[int], ...]
    plans: Mapping[int, Mapping[str, Any]]
    yellow: float = 3.0
    all_red: float = 2.0
    description: str = ""

    def conflicting(self, phase: int, others: Iterable[int]) -> list[int]:
        """The phases among ``others`` that conflict with ``phase``, sorted."""
        return sorted(self.conflicts.get(phase, frozenset()) & set(others))

    def stage_of(self, phase: int) -> int:
        """The index of the first stage that serves ``phase``."""
        return next(i for i, stage in enumerate(self.stages) if phase in stage)

    @property
    def bus_phases(self) -> list[int]:
        """Phases that serve a bus lane."""
        return sorted(p for p, info in self.phases.items() if info.get("bus"))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> Junction:
        """Parse and check a junction profile."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise JunctionError(source, "", f"not valid TOML: {exc}") from None
        try:
            parsed = _JunctionFile.model_validate(data)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            raise JunctionError(source, key, error["msg"]) from None
        return cls._checked(parsed, source)

    @classmethod
    def _checked(cls, parsed: _JunctionFile, source: str) -> Junction:
        phases = set(parsed.phases)
        if not phases or not all(1 <= p <= 32 for p in phases):
            raise JunctionError(source, "phases", "phases are numbered 1 to 32")
        conflicts: dict[int, set[int]] = {p: set() for p in phases}
        for phase, others in parsed.conflicts.items():
            unknown = sorted({phase, *others} - phases)
            if unknown:
                raise JunctionError(source, f"conflicts.{phase}", f"unknown phase(s) {unknown}")
            if phase in others:
                raise JunctionError(
                    source, f"conflicts.{phase}", "a phase cannot conflict with itself"
                )
            for other in others:  # declared once, true both ways
                conflicts[phase].add(other)
                conflicts[other].add(phase)
        for number, stage in enumerate(parsed.stages):
            unknown = sorted(set(stage) - phases)
            if unknown:
                raise JunctionError(source, f"stages[{number}]", f"unknown phase(s) {unknown}")
            for phase in stage:
                if clash := sorted(conflicts[phase] & set(stage)):
                    raise JunctionError(
                        source,
                        f"stages[{number}]",
                        f"phase {phase} conflicts with {clash} in the same stage",
                    )
        if missing := sorted(phases - {p for stage in parsed.stages for p in stage}):
            raise JunctionError(source, "stages", f"phase(s) {missing} are in no stage")
        for number, plan in parsed.plans.items():
            if not 1 <= number <= 253:
                raise JunctionError(source, f"plans.{number}", "plans are numbered 1 to 253")
            if len(plan.greens) != len(parsed.stages):
                raise JunctionError(
                    source,
                    f"plans.{number}.greens",
                    f"expected one green time per stage ({len(parsed.stages)})",
                )
        if not parsed.plans:
            raise JunctionError(source, "plans", "at least one timing plan is needed")
        return cls(
            name=parsed.junction.get("name", Path(source).stem),
            description=parsed.junction.get("description", ""),
            phases={p: info.model_dump() for p, info in sorted(parsed.phases.items())},
            conflicts={p: frozenset(c) for p, c in sorted(conflicts.items())},
            stages=tuple(frozenset(stage) for stage in parsed.stages),
            plans={n: plan.model_dump() for n, plan in sorted(parsed.plans.items())},
            yellow=parsed.yellow,
            all_red=parsed.all_red,
        )


_JUNCTIONS = "cityvisor.hal.junctions"


def load_junction(name_or_path: str | Path) -> Junction:
    """A bundled junction profile by name (``"crossroads"``), or a profile file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(text)
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise JunctionError(text, "", f"cannot read: {exc.strerror or exc}") from None
        return Junction.from_toml(content, source=text)
    resource = resources.files(_JUNCTIONS) / f"{text}.toml"
    if not resource.is_file():
        bundled = sorted(
            entry.name.removesuffix(".toml")
            for entry in resources.files(_JUNCTIONS).iterdir()
            if entry.name.endswith(".toml")
        )
        raise JunctionError(text, "", f"no bundled junction of that name (bundled: {bundled})")
    return Junction.from_toml(resource.read_text(encoding="utf-8"), source=f"{text}.toml")


# --------------------------------------------------------------------------- the controller


@dataclass(frozen=True)
class ControllerStatus:
    """One reading of a controller's state."""

    greens: frozenset[int]
    yellows: frozenset[int]
    reds: frozenset[int]
    holds: frozenset[int]
    control: UnitControlStatus | int
    flash: UnitFlashStatus | int
    pattern: int
    occupancy: Mapping[int, float | None]
    """Detector -> occupancy %, None when the detector reports a fault code."""
    detector_faults: frozenset[int]

    @property
    def flashing(self) -> bool:
        """Whether the unit is in flash (for any reason)."""
        return self.flash != UnitFlashStatus.NOT_FLASH

    def phase_state(self, phase: int) -> str:
        """``green``, ``yellow``, ``red`` or ``dark`` (no output: flash or unknown)."""
        if phase in self.greens:
            return "green"
        if phase in self.yellows:
            return "yellow"
        if phase in self.reds:
            return "red"
        return "dark"


class NtcipController:
    """The conversation with one NTCIP 1202 controller over an SNMP client.

    ``phases`` and ``detectors`` are the numbers to read (from the junction
    profile and the device's config); every read is one GET.
    """

    def __init__(self, client: SnmpClient, phases: Sequence[int], detectors: Sequence[int] = ()):
        self.client = client
        self.phases = sorted(phases)
        self.detectors = sorted(detectors)
        self.groups = sorted({(p - 1) // 8 + 1 for p in self.phases})

    def _status_oids(self) -> list[str]:
        oids = [UNIT_CONTROL_STATUS, UNIT_FLASH_STATUS, COORD_PATTERN_STATUS]
        for group in self.groups:
            oids += [
                f"{column}.{group}"
                for column in (
                    PHASE_STATUS_REDS,
                    PHASE_STATUS_YELLOWS,
                    PHASE_STATUS_GREENS,
                    PHASE_CONTROL_HOLD,
                )
            ]
        detector_groups = sorted({(d - 1) // 8 + 1 for d in self.detectors})
        oids += [f"{DETECTOR_STATUS_ALARMS}.{g}" for g in detector_groups]
        oids += [f"{DETECTOR_OCCUPANCY}.{d}" for d in self.detectors]
        return oids

    async def read_status(self) -> ControllerStatus:
        """Read phases, holds, unit status, pattern and detectors in one GET.

        Raises :class:`~cityvisor.hal.snmp.SnmpProtocolError` when the
        controller lacks an object or answers with the wrong type, and the
        client's errors (timeout: ``comm_failure``).
        """
        values = await self.client.get(*self._status_oids())

        def integer(oid: str) -> int:
            value = values.get(oid)
            if not isinstance(value, int):
                raise SnmpProtocolError(f"{self.client.agent}: {oid} is {value!r}, not an integer")
            return value

        def phase_set(column: str) -> frozenset[int]:
            found: set[int] = set()
            for group in self.groups:
                found |= phases_of(integer(f"{column}.{group}"), group)
            return frozenset(found & set(self.phases))

        faults: set[int] = set()
        for group in sorted({(d - 1) // 8 + 1 for d in self.detectors}):
            faults |= phases_of(integer(f"{DETECTOR_STATUS_ALARMS}.{group}"), group)
        occupancy: dict[int, float | None] = {}
        for detector in self.detectors:
            raw = integer(f"{DETECTOR_OCCUPANCY}.{detector}")
            occupancy[detector] = raw / 2 if 0 <= raw <= 200 else None
        return ControllerStatus(
            greens=phase_set(PHASE_STATUS_GREENS),
            yellows=phase_set(PHASE_STATUS_YELLOWS),
            reds=phase_set(PHASE_STATUS_REDS),
            holds=phase_set(PHASE_CONTROL_HOLD),
            control=_enum(UnitControlStatus, integer(UNIT_CONTROL_STATUS)),
            flash=_enum(UnitFlashStatus, integer(UNIT_FLASH_STATUS)),
            pattern=integer(COORD_PATTERN_STATUS),
            occupancy=occupancy,
            detector_faults=frozenset(faults & set(self.detectors)),
        )

    async def call_pattern(self, pattern: int) -> None:
        """SET systemPatternControl: a plan (1-253), free (254), flash (255), standby (0)."""
        if not 0 <= pattern <= 255:
            raise ValueError(f"pattern {pattern} is not 0-255")
        await self.client.set(SYSTEM_PATTERN_CONTROL, pattern)

    async def set_holds(self, phases: Iterable[int]) -> None:
        """SET phaseControlGroupHold of every group: exactly ``phases`` are held."""
        held = set(phases)
        pairs = [(f"{PHASE_CONTROL_HOLD}.{g}", bitmap(held, g)) for g in self.groups]
        await self.client.set_many(pairs)

    async def request_priority(
        self, request_id: int, *, vehicle: str, phase: int, eta: int, vehicle_class: int = 1
    ) -> int:
        """Write a priority request (one SET of its row) and return its slot in the table.

        ``eta`` is the time of service desired, in seconds from now.
        """
        slot = request_id % PRIORITY_SLOTS + 1
        row = {
            "vehicle": vehicle,
            "vehicle_class": vehicle_class,
            "phase": phase,
            "eta": eta,
            "status": int(PriorityStatus.QUEUED),
        }
        await self.client.set_many(
            [(f"{PRIORITY_ENTRY}.{PRIORITY_COLUMNS[k]}.{slot}", v) for k, v in row.items()]
        )
        return slot

    async def priority_statuses(self) -> dict[int, SnmpValue]:
        """The status of every priority request slot (``{slot: PriorityStatus value}``)."""
        column = f"{PRIORITY_ENTRY}.{PRIORITY_COLUMNS['status']}"
        rows = await self.client.walk_table({"status": column})
        return {
            int(index): row.get("status") for index, row in rows.items() if isinstance(index, int)
        }


def _enum(kind: type[enum.IntEnum], value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        return value
