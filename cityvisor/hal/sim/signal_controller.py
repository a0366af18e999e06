"""A traffic signal controller simulator: an SNMP agent serving NTCIP 1202 objects.

:class:`SimulatedController` runs a junction (a :class:`~cityvisor.hal.ntcip.Junction`
profile) in real time: stages of compatible phases turn green in order for
the running timing plan's green times, each followed by yellow and all-red
clearance. It answers SNMP v2c on its own UDP port, as a central (cityvisor,
or net-snmp's ``snmpget``/``snmpset``) expects a controller to:

* phase status groups (reds, yellows, greens) and phase control groups
  (``phaseControlGroupHold``, writable: a held phase is served next and
  stays green while held);
* ``unitControlStatus`` (systemControl while the central calls a pattern,
  timebase on its own schedule, manual under local control) and
  ``unitFlashStatus``;
* ``coordPatternStatus`` and ``systemPatternControl`` (writable: a plan,
  254 free, 255 flash, 0 back to the schedule);
* vehicle detectors: occupancy and the alarm bitmaps of their status groups;
* the NTCIP 1211-style priority request table (:data:`~cityvisor.hal.ntcip.PRIORITY_ENTRY`):
  a queued request for a phase is served at its arrival time by extending
  that phase's green or calling it early.

Its **conflict monitor** watches what it is told and what it shows: holds of
two conflicting phases (a central that skipped the conflict table), or two
conflicting greens, put the unit in flash (``faultMonitor``) until
:meth:`SimulatedController.reset_fault`, as a real conflict monitor latches
until a technician resets it.

Under local manual control (:meth:`~SimulatedController.set_local_control`)
the unit ignores the central: SETs of patterns, holds and priority requests
are refused with ``wrongValue``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskStatus
from pysnmp.proto import rfc1902

from cityvisor.hal import ntcip
from cityvisor.hal.ntcip import (
    Junction,
    PriorityStatus,
    UnitControlStatus,
    UnitFlashStatus,
    load_junction,
)
from cityvisor.hal.sim.snmp_agent import Apply, LiveMib, SnmpAgent, bound, integer, oid, text_of

__all__ = ["PriorityRequest", "SimulatedController", "main", "simulated_controllers"]

log = logging.getLogger(__name__)

_WRAP32 = 1 << 32
_MIN_GREEN = 1.0
"""Seconds a green lasts at least before a hold or a priority call may cut it short."""
_PRIORITY_LEAD = 5.0
"""Seconds before a bus's arrival time from which its request acts on the phases."""
_PRIORITY_WINDOW = 5.0
"""Seconds after the arrival time during which the bus's phase is kept green."""
OCCUPANCY_FAULT = 212
"""The occupancy a detector in fault reports (above 200: a fault code, not a percentage)."""


@dataclass
class PriorityRequest:
    """One row of the priority request table."""

    vehicle: str = ""
    vehicle_class: int = 1
    phase: int = 0
    eta: int = 0
    status: PriorityStatus = PriorityStatus.IDLE
    arrives_at: float = 0.0
    """Clock time of the time of service desired (set when the request is queued)."""


class SimulatedController:
    """A signal controller running ``junction`` (a profile name, path or :class:`Junction`).

    ``time_scale`` divides every green and clearance time (10 runs a 30 s
    green in 3 s, for tests and the demo). ``detectors`` maps detector
    numbers to the phase they call. ``clock`` is the time source (seconds;
    :func:`time.monotonic` by default). Use as ``async with
    SimulatedController(...) as controller:``; ``port=0`` picks a free UDP
    port, :attr:`address` tells which.
    """

    def __init__(
        self,
        name: str = "tsc-01",
        junction: str | Junction = "crossroads",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        community: str = "public",
        write_community: str = "private",
        time_scale: float = 1.0,
        detectors: Mapping[int, int] | None = None,
        schedule_pattern: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.junction = junction if isinstance(junction, Junction) else load_junction(junction)
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.clock = clock
        phases = self.junction.phases
        self.detectors = dict(detectors) if detectors is not None else {p: p for p in phases}
        if unknown := sorted(set(self.detectors.values()) - set(phases)):
            raise ValueError(f"detectors call unknown phase(s) {unknown}")
        self.schedule_pattern = schedule_pattern or min(self.junction.plans)
        self.called_pattern = ntcip.PATTERN_STANDBY
        self.holds: set[int] = set()
        self.flash_status = UnitFlashStatus.NOT_FLASH
        self.local_control = False
        self.detector_faults: set[int] = set()
        self.requests = {slot: PriorityRequest() for slot in range(1, ntcip.PRIORITY_SLOTS + 1)}
        self.conflicts_detected = 0
        #: (clock time, greens) of each green change, for tests (bounded).
        self.green_history: collections.deque[tuple[float, frozenset[int]]] = collections.deque(
            maxlen=1000
        )
        self._random = random.Random(seed)
        self._started = clock()
        self._stage = 0
        self._interval = "green"
        self._green_started = self._started
        self._interval_end = self._started + self._green_time(0)
        self.green_history.append((self._started, self.junction.stages[0]))
        self._max_phase = max(phases)
        self._groups = range(1, (self._max_phase - 1) // 8 + 2)
        self._detector_groups = range(1, (max(self.detectors, default=1) - 1) // 8 + 2)
        self.mib = self._build_mib()
        self.agent = SnmpAgent(
            self.mib,
            host=host,
            port=port,
            community=community,
            write_community=write_community,
        )

    def __repr__(self) -> str:
        return f"SimulatedController({self.name!r}, {self.junction.name}, {self.address})"

    # -- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the agent answers on."""
        return self.agent.address

    async def __aenter__(self) -> Self:
        await self.agent.start()
        log.info("simulated controller %s answering on %s:%d", self.name, *self.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.agent.stop()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (for ``task_group.start``)."""
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    # -- the state, brought up to date on demand

    @property
    def running_pattern(self) -> int:
        """coordPatternStatus: the plan running, 254 free, 255 flash."""
        if self.flash_status is not UnitFlashStatus.NOT_FLASH:
            return ntcip.PATTERN_FLASH
        if self.local_control or self.called_pattern == ntcip.PATTERN_STANDBY:
            return self.schedule_pattern
        return self.called_pattern

    @property
    def control_status(self) -> UnitControlStatus:
        """unitControlStatus: who drives the unit."""
        if self.local_control:
            return UnitControlStatus.MANUAL
        if self.called_pattern == ntcip.PATTERN_STANDBY and not self.holds:
            return UnitControlStatus.TIMEBASE
        return UnitControlStatus.SYSTEM_CONTROL

    def phase_colours(self) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
        """(greens, yellows, reds) now. In flash every output is off (all three empty)."""
        self.advance()
        phases = frozenset(self.junction.phases)
        if self.flash_status is not UnitFlashStatus.NOT_FLASH:
            return frozenset(), frozenset(), frozenset()
        current = self.junction.stages[self._stage]
        if self._interval == "green":
            return current, frozenset(), phases - current
        if self._interval == "yellow":
            return frozenset(), current, phases - current
        return frozenset(), frozenset(), phases

    def _plan_greens(self) -> list[float]:
        plans = self.junction.plans
        pattern = self.running_pattern
        plan = plans.get(pattern) or plans[min(plans)]  # free (254) runs the first plan's greens
        return list(plan["greens"])

    def _green_time(self, stage: int) -> float:
        return self._plan_greens()[stage] / self.time_scale

    def _wanted_stage(self) -> int | None:
        """The stage a hold or an acting priority request calls for, if any."""
        for phase in sorted(self.holds):
            return self.junction.stage_of(phase)
        for request in self.requests.values():
            if request.status is PriorityStatus.ACTIVE:
                return self.junction.stage_of(request.phase)
        return None

    def _kept_green(self, now: float) -> bool:
        """Whether the current green must go on (a held phase, a bus about to pass)."""
        current = self.junction.stages[self._stage]
        if self.holds & current:
            return True
        return any(
            r.status is PriorityStatus.ACTIVE
            and r.phase in current
            and now < r.arrives_at + _PRIORITY_WINDOW / self.time_scale
            for r in self.requests.values()
        )

    def _update_requests(self, now: float) -> None:
        lead, window = _PRIORITY_LEAD / self.time_scale, _PRIORITY_WINDOW / self.time_scale
        green = self.junction.stages[self._stage] if self._interval == "green" else frozenset()
        for request in self.requests.values():
            if request.status is PriorityStatus.QUEUED and now >= request.arrives_at - lead:
                request.status = PriorityStatus.ACTIVE
            if request.status is PriorityStatus.ACTIVE and now >= request.arrives_at + window:
                # Served if the bus found its phase green at some point of its window.
                request.status = (
                    PriorityStatus.SERVED if request.phase in green else PriorityStatus.REJECTED
                )
            if (
                request.status is PriorityStatus.ACTIVE
                and request.phase in green
                and now >= request.arrives_at
            ):
                request.status = PriorityStatus.SERVED

    def advance(self) -> None:
        """Bring phases and requests up to the clock (called before every answer)."""
        now = self.clock()
        for _ in range(10_000):  # a clock far ahead: never loop without bound
            self._update_requests(min(now, self._interval_end))
            if self.flash_status is not UnitFlashStatus.NOT_FLASH:
                return
            if self._interval == "green":
                wanted = self._wanted_stage()
                if wanted is not None and wanted != self._stage and not self._kept_green(now):
                    # A call elsewhere cuts the green short, once it has lasted its minimum.
                    cut = self._green_started + _MIN_GREEN / self.time_scale
                    self._interval_end = min(self._interval_end, cut)
            if now < self._interval_end:
                return
            t = self._interval_end
            if self._interval == "green":
                if self._kept_green(now):
                    self._interval_end = now + 0.05 / self.time_scale
                    return
                self._interval, self._interval_end = (
                    "yellow",
                    t + self.junction.yellow / self.time_scale,
                )
            elif self._interval == "yellow":
                self._interval, self._interval_end = (
                    "red",
                    t + self.junction.all_red / self.time_scale,
                )
            else:
                wanted = self._wanted_stage()
                self._stage = (
                    wanted if wanted is not None else (self._stage + 1) % len(self.junction.stages)
                )
                self._interval = "green"
                self._green_started = t
                self._interval_end = t + self._green_time(self._stage)
                greens = self.junction.stages[self._stage]
                self.green_history.append((t, greens))
                self._monitor(greens)

    def _monitor(self, greens: frozenset[int]) -> None:
        """The conflict monitor: two conflicting greens, or two conflicting holds, mean flash."""
        for together in (greens, frozenset(self.holds)):
            if any(self.junction.conflicting(phase, together) for phase in together):
                self.conflicts_detected += 1
                self.flash_status = UnitFlashStatus.FAULT_MONITOR
                log.warning(
                    "controller %s: conflict monitor tripped on phases %s",
                    self.name,
                    sorted(together),
                )
                return

    # -- the world acting on the controller

    def set_local_control(self, local: bool) -> None:
        """A technician takes (or gives back) control at the cabinet: the central is ignored."""
        self.advance()
        self.local_control = local

    def set_detector_fault(self, detector: int, fault: bool = True) -> None:
        """A loop breaks (or is repaired): its alarm bit, and occupancy reads a fault code."""
        if detector not in self.detectors:
            raise KeyError(f"{self.name} has no detector {detector}")
        (self.detector_faults.add if fault else self.detector_faults.discard)(detector)

    def reset_fault(self) -> None:
        """Reset the conflict monitor (clears holds): the unit resumes its cycle at stage 1."""
        self.holds.clear()
        if self.flash_status is UnitFlashStatus.FAULT_MONITOR:
            self.flash_status = UnitFlashStatus.NOT_FLASH
            self._restart_cycle()

    def _restart_cycle(self) -> None:
        now = self.clock()
        self._stage, self._interval, self._green_started = 0, "green", now
        self._interval_end = now + self._green_time(0)
        self.green_history.append((now, self.junction.stages[0]))

    # -- what a central's SETs do

    def _central(self) -> None:
        if self.local_control:
            raise ValueError("under local control")

    def _set_pattern(self, value: Any) -> Apply:
        pattern = integer(value)
        self._central()
        if not 0 <= pattern <= 255 or (1 <= pattern <= 253 and pattern not in self.junction.plans):
            raise ValueError(f"no pattern {pattern}")

        def apply() -> None:
            self.advance()
            was_flashing = self.flash_status is not UnitFlashStatus.NOT_FLASH
            self.called_pattern = pattern
            if pattern == ntcip.PATTERN_FLASH:
                if self.flash_status is UnitFlashStatus.NOT_FLASH:
                    self.flash_status = UnitFlashStatus.AUTOMATIC
            elif self.flash_status is UnitFlashStatus.AUTOMATIC:
                self.flash_status = UnitFlashStatus.NOT_FLASH
            if was_flashing and self.flash_status is UnitFlashStatus.NOT_FLASH:
                self._restart_cycle()

        return apply

    def _set_holds(self, group: int) -> Callable[[Any], Apply]:
        def setter(value: Any) -> Apply:
            bits = integer(value)
            self._central()
            if not 0 <= bits <= 255:
                raise ValueError("a group bitmap is 0-255")
            held = ntcip.phases_of(bits, group)
            if unknown := held - set(self.junction.phases):
                raise ValueError(f"no phase {sorted(unknown)}")

            def apply() -> None:
                self.advance()
                low = 8 * (group - 1)
                self.holds = {p for p in self.holds if not low < p <= low + 8} | held
                # What the monitor sees at once: holds that can never be green together.
                self._monitor(frozenset())

            return apply

        return setter

    def _set_request(self, slot: int, column: str) -> Callable[[Any], Apply]:
        request = self.requests[slot]

        def setter(value: Any) -> Apply:
            self._central()
            if column == "vehicle":
                if not isinstance(value, rfc1902.OctetString):
                    raise TypeError("vehicle is an OCTET STRING")
                vehicle = text_of(value)
                return lambda: setattr(request, "vehicle", vehicle)
            number = integer(value)
            if column == "phase" and number not in self.junction.phases:
                raise ValueError(f"no phase {number}")
            if column == "eta" and not 0 <= number <= 3600:
                raise ValueError("eta is 0-3600 s")
            if column == "vehicle_class":
                return lambda: setattr(request, "vehicle_class", number)
            if column in ("phase", "eta"):
                return lambda: setattr(request, column, number)
            status = PriorityStatus(number) if number in PriorityStatus._value2member_map_ else None
            if status not in (PriorityStatus.QUEUED, PriorityStatus.CANCELLED):
                raise ValueError("a central writes queued (2) or cancelled (5)")

            def apply() -> None:
                self.advance()
                if status is PriorityStatus.QUEUED and request.phase not in self.junction.phases:
                    request.status = PriorityStatus.REJECTED
                    return
                request.status = status
                request.arrives_at = self.clock() + request.eta / self.time_scale

            return apply

        return setter

    # -- the MIB

    def _build_mib(self) -> LiveMib:
        asc = oid(ntcip.ASC)
        mib = LiveMib(
            tables=(
                (*asc, 1, 4, 1),
                (*asc, 1, 5, 1),
                (*asc, 2, 4, 1),
                (*asc, 2, 5, 4, 1),
                oid(ntcip.PRIORITY_ENTRY),
            ),
            on_request=self.advance,
        )
        system = (1, 3, 6, 1, 2, 1, 1)
        mib.add(
            (*system, 1, 0),
            lambda: rfc1902.OctetString(
                f"cityvisor simulated NTCIP 1202 controller, {self.junction.name}"
            ),
        )
        mib.add((*system, 2, 0), lambda: rfc1902.ObjectIdentifier(ntcip.ASC))
        mib.add(
            (*system, 3, 0),
            lambda: rfc1902.TimeTicks(int((self.clock() - self._started) * 100) % _WRAP32),
        )
        mib.add((*system, 5, 0), lambda: rfc1902.OctetString(self.name))
        mib.add(oid(ntcip.MAX_PHASES), lambda: rfc1902.Integer32(self._max_phase))
        mib.add(oid(ntcip.MAX_PHASE_GROUPS), lambda: rfc1902.Integer32(len(self._groups)))
        for group in self._groups:
            mib.add((*asc, 1, 4, 1, 1, group), _constant(group))
            for column, colour in (
                (ntcip.PHASE_STATUS_REDS, 2),
                (ntcip.PHASE_STATUS_YELLOWS, 1),
                (ntcip.PHASE_STATUS_GREENS, 0),
            ):
                mib.add((*oid(column), group), self._colour_getter(colour, group))
            mib.add((*asc, 1, 5, 1, 1, group), _constant(group))
            mib.add(
                (*oid(ntcip.PHASE_CONTROL_HOLD), group),
                bound(lambda g: rfc1902.Integer32(ntcip.bitmap(self.holds, g)), group),
                self._set_holds(group),
            )
        for group in self._detector_groups:
            mib.add((*asc, 2, 4, 1, 1, group), _constant(group))
            mib.add(
                (*asc, 2, 4, 1, 2, group),
                bound(lambda g: rfc1902.Integer32(ntcip.bitmap(self._present(), g)), group),
            )
            mib.add(
                (*oid(ntcip.DETECTOR_STATUS_ALARMS), group),
                bound(lambda g: rfc1902.Integer32(ntcip.bitmap(self.detector_faults, g)), group),
            )
        for detector in sorted(self.detectors):
            mib.add(
                (*asc, 2, 5, 4, 1, 1, detector),
                bound(lambda d: rfc1902.Integer32(self._volume(d)), detector),
            )
            mib.add(
                (*oid(ntcip.DETECTOR_OCCUPANCY), detector),
                bound(lambda d: rfc1902.Integer32(self._occupancy(d)), detector),
            )
        mib.add(oid(ntcip.UNIT_CONTROL_STATUS), lambda: rfc1902.Integer32(int(self.control_status)))
        mib.add(oid(ntcip.UNIT_FLASH_STATUS), lambda: rfc1902.Integer32(int(self.flash_status)))
        mib.add(oid(ntcip.COORD_PATTERN_STATUS), lambda: rfc1902.Integer32(self.running_pattern))
        mib.add(
            oid(ntcip.SYSTEM_PATTERN_CONTROL),
            lambda: rfc1902.Integer32(self.called_pattern),
            self._set_pattern,
        )
        entry = oid(ntcip.PRIORITY_ENTRY)
        for slot, request in self.requests.items():
            mib.add((*entry, 1, slot), _constant(slot))
            mib.add(
                (*entry, 2, slot),
                bound(lambda r: rfc1902.OctetString(r.vehicle), request),
                self._set_request(slot, "vehicle"),
            )
            for column in ("vehicle_class", "phase", "eta"):
                mib.add(
                    (*entry, ntcip.PRIORITY_COLUMNS[column], slot),
                    bound(lambda r, c: rfc1902.Integer32(getattr(r, c)), request, column),
                    self._set_request(slot, column),
                )
            mib.add(
                (*entry, 6, slot),
                bound(lambda r: rfc1902.Integer32(int(r.status)), request),
                self._set_request(slot, "status"),
            )
        return mib

    def _colour_getter(self, colour: int, group: int) -> Callable[[], Any]:
        return lambda: rfc1902.Integer32(ntcip.bitmap(self.phase_colours()[colour], group))

    def _present(self) -> set[int]:
        greens, yellows, _reds = self.phase_colours()
        # A queue waits on red: the stop-line loops of red phases are occupied.
        return {d for d, phase in self.detectors.items() if phase not in greens | yellows}

    def _occupancy(self, detector: int) -> int:
        if detector in self.detector_faults:
            return OCCUPANCY_FAULT
        queued = detector in self._present()
        percent = self._random.uniform(70, 95) if queued else self._random.uniform(10, 45)
        return round(percent * 2)

    def _volume(self, detector: int) -> int:
        return 0 if detector in self._present() else self._random.randint(1, 6)


def _constant(value: int) -> Callable[[], Any]:
    return lambda: rfc1902.Integer32(value)


@asynccontextmanager
async def simulated_controllers(
    count: int, *, name_prefix: str = "tsc", **options: Any
) -> AsyncIterator[list[SimulatedController]]:
    """Run ``count`` controllers in this process, each on its own free UDP port."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                SimulatedController(f"{name_prefix}-{number:03d}", **options)
            )
            for number in range(1, count + 1)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    """``cityvisor sim signals``: serve a signal controller until interrupted."""
    parser = argparse.ArgumentParser(
        prog="cityvisor sim signals", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=16100, help="UDP port (0: any free port)")
    parser.add_argument("--name", default="tsc-01", help="sysName of the controller")
    parser.add_argument(
        "--junction", default="crossroads", help="junction profile: a bundled name or a file"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="run N times faster")
    parser.add_argument("--community", default="public", help="read community")
    parser.add_argument("--write-community", default="private", help="read-write community")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    controller = SimulatedController(
        args.name,
        args.junction,
        host=args.host,
        port=args.port,
        community=args.community,
        write_community=args.write_community,
        time_scale=args.time_scale,
    )
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(controller.run, backend="asyncio")
    return 0
