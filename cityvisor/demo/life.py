"""Life in the demo city: what happens in the street, so that operators have work.

:class:`Life` acts on the simulators as the world does on real equipment:
lamps fail (and a crew replaces them a few minutes later), cabinet doors are
opened by maintenance, fibre links drop and come back, ports count errors,
vehicles stop on bollard loops, a bollard's PLC faults, badges are presented
(enrolled or not) and doors opened, held open or forced, cameras see motion
or are masked, a camera or a reader drops off the network for a while.

The hub only sees the consequences, through the same protocols as in a real
city: point changes, alarms, journal entries. Events come from a seeded
random generator at ``rate`` events per minute; what an event starts is
undone by a later, scheduled step (a heap, not a task per event), so one
task owns the whole life and nothing grows without bound. Caps keep the city
from falling apart when nobody acknowledges or repairs anything for hours.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .city import BADGES, CRITICAL_PORTS, UNKNOWN_BADGES, Reader, SimulatedCity

__all__ = ["Life"]

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None] | None]


@dataclass(order=True)
class _Later:
    due: float
    order: int
    step: Step = field(compare=False)
    what: str = field(compare=False, default="")


class Life:
    """Random events in a :class:`SimulatedCity`, ``rate`` per minute, repeatable with ``seed``.

    The first event comes ``first_after`` seconds after :meth:`run` starts and
    is always one that raises an alarm (a lamp failure), so that a newcomer
    sees the alarm list move within the first minute.
    """

    def __init__(
        self,
        city: SimulatedCity,
        *,
        rate: float = 3.0,
        seed: int = 0,
        first_after: float = 5.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("the life rate is a number of events per minute, > 0")
        self.city = city
        self.rate = rate
        self.random = random.Random(seed)
        self.first_after = first_after
        self.events = 0
        """Events started so far (for tests and logs)."""
        self._later: list[_Later] = []
        self._order = itertools.count()
        self._busy: set[str] = set()
        """Things an event is acting on (a door, a port) until its scheduled end."""
        self._events: list[tuple[float, Callable[[], Awaitable[bool] | bool]]] = [
            (4, self.lamp_failure),
            (3, self.badge),
            (3, self.motion),
            (2, self.link_down),
            (1, self.cabinet_door),
            (1, self.port_errors),
            (1, self.vehicle),
            (0.5, self.door_forced),
            (0.5, self.bollard_fault),
            (0.3, self.camera_tampered),
            (0.3, self.camera_offline),
            (0.3, self.reader_offline),
        ]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Make things happen until cancelled."""
        task_status.started()
        next_event = anyio.current_time() + self.first_after
        first = True
        while True:
            due = min(next_event, self._later[0].due) if self._later else next_event
            await anyio.sleep_until(due)
            now = anyio.current_time()
            while self._later and self._later[0].due <= now:
                later = heapq.heappop(self._later)
                await self._do(later.step, later.what)
            if now >= next_event:
                if first:
                    await self._do(self.lamp_failure, "lamp failure")
                    first = False
                else:
                    await self._one_event()
                # Poisson arrivals: exponential gaps with the given mean.
                next_event = now + self.random.expovariate(self.rate / 60.0)

    async def _one_event(self) -> None:
        weights = [weight for weight, _ in self._events]
        for _attempt in range(5):  # an event may not apply right now (everything busy): redraw
            (_, event) = self.random.choices(self._events, weights)[0]
            if await self._do(event, event.__name__.replace("_", " ")):
                return

    async def _do(self, step: Callable[[], Any], what: str) -> bool:
        try:
            result = step()
            if isinstance(result, Awaitable):
                result = await result
        except Exception:  # the demo's life must go on whatever a simulator says
            log.exception("life: %s failed", what)
            return False
        if result is not False:
            self.events += 1
        return result is not False

    def later(self, seconds: float, step: Step, what: str = "") -> None:
        """Do ``step`` in ``seconds`` (the end of something an event started)."""
        due = anyio.current_time() + seconds
        heapq.heappush(self._later, _Later(due, next(self._order), step, what))

    def _claim(self, key: str, seconds: float, release: Step | None = None) -> bool:
        """Mark ``key`` busy for ``seconds`` (then run ``release``); False if it is busy."""
        if key in self._busy:
            return False
        self._busy.add(key)

        async def free() -> None:
            self._busy.discard(key)
            if release is not None:
                result = release()
                if isinstance(result, Awaitable):
                    await result

        self.later(seconds, free, f"end of {key}")
        return True

    # ------------------------------------------------------------------ events

    def lamp_failure(self) -> bool:
        """A lamp fails; the lighting crew replaces it a few minutes later."""
        if not self.city.cabinets:
            return False
        cabinet = self.random.choice(self.city.cabinets)
        circuit = self.random.randint(1, cabinet.circuits)
        key = f"{cabinet.id}/c{circuit}"
        repair_in = self.random.uniform(180, 480)
        if not self._claim(key, repair_in, lambda: cabinet.simulator.repair(cabinet.unit, circuit)):
            return False
        cabinet.simulator.fail_lamps(cabinet.unit, circuit, self.random.randint(1, 2))
        log.info("life: lamp failure at %s circuit %d", cabinet.id, circuit)
        return True

    def cabinet_door(self) -> bool:
        """Maintenance opens a cabinet, and closes it again after a while."""
        if not self.city.cabinets:
            return False
        cabinet = self.random.choice(self.city.cabinets)
        simulator, unit = cabinet.simulator, cabinet.unit
        if not self._claim(
            cabinet.id, self.random.uniform(30, 120), lambda: simulator.set_door(unit, False)
        ):
            return False
        simulator.set_door(unit, True)
        log.info("life: cabinet %s opened", cabinet.id)
        return True

    def link_down(self) -> bool:
        """A fibre uplink drops (works in the street) and comes back."""
        if not self.city.switches:
            return False
        switch_id = self.random.choice(sorted(self.city.switches))
        switch = self.city.switches[switch_id]
        port = self.random.choice(CRITICAL_PORTS)
        if not self._claim(
            f"{switch_id}/p{port}", self.random.uniform(20, 90), lambda: switch.set_link(port, True)
        ):
            return False
        switch.set_link(port, False)
        log.info("life: link down on %s port %d", switch_id, port)
        return True

    def port_errors(self) -> bool:
        """A dirty connector: a burst of errors on a port."""
        if not self.city.switches:
            return False
        switch = self.city.switches[self.random.choice(sorted(self.city.switches))]
        port = self.random.randint(1, len(switch.ports))
        switch.add_errors(port, in_errors=self.random.randint(200, 2000))
        log.info("life: errors on %s port %d", switch.name, port)
        return True

    def vehicle(self) -> bool:
        """A delivery van waits on a bollard's loop."""
        simulator = self.city.bollards
        if simulator is None or not simulator.units:
            return False
        unit = self.random.choice(simulator.units)
        if simulator.bollard(unit).vehicle or not self._claim(
            f"bollard-{unit}/vehicle",
            self.random.uniform(20, 60),
            lambda: simulator.vehicle_leaves(unit),
        ):
            return False
        simulator.vehicle_arrives(unit)
        log.info("life: a vehicle waits at %s", self.city.bollard_ids[unit])
        return True

    def bollard_fault(self) -> bool:
        """A bollard's hydraulics fault; a technician clears it later if no operator reset it."""
        simulator = self.city.bollards
        if simulator is None:
            return False
        faulted = [u for u in simulator.units if simulator.bollard(u).fault_code]
        healthy = [u for u in simulator.units if not simulator.bollard(u).fault_code]
        if len(faulted) >= 2 or not healthy:
            return False
        unit = self.random.choice(healthy)

        def technician() -> None:
            simulator.bollard(unit).fault_code = 0

        if not self._claim(f"bollard-{unit}/fault", self.random.uniform(300, 600), technician):
            return False
        simulator.inject_fault(unit, self.random.choice((1, 2, 3)))
        log.info("life: %s in fault", self.city.bollard_ids[unit])
        return True

    def badge(self) -> bool:
        """Someone presents a badge (now and then one nobody enrolled) and goes in if let in."""
        reader = self._reader()
        if reader is None:
            return False
        if self.random.random() < 0.2:
            number = self.random.choice(UNKNOWN_BADGES)
        else:
            number = self.random.choice(BADGES).number
        if not self._claim(reader.device_id, 40):
            return False
        reader.reader.present_card(number)
        held = self.random.random() < 0.1

        def enter() -> None:
            # The strike is released only if the hub granted the badge.
            if reader.reader.relay:
                reader.reader.set_door(True)
                self.later(
                    35.0 if held else self.random.uniform(2, 6),
                    lambda: reader.reader.set_door(False),
                    "door closes",
                )

        self.later(1.5, enter, "walk in")
        log.info("life: badge %s at %s", number, reader.device_id)
        return True

    def door_forced(self) -> bool:
        """A door is opened without a badge."""
        reader = self._reader()
        if reader is None or not self._claim(
            reader.device_id, self.random.uniform(8, 20), lambda: reader.reader.set_door(False)
        ):
            return False
        reader.reader.set_door(True)
        log.info("life: door %s forced", reader.device_id)
        return True

    def reader_offline(self) -> bool:
        """A reader loses its line for a while."""
        reader = self._reader()
        if reader is None or not self._claim(
            reader.device_id, self.random.uniform(30, 90), reader.reader.plug
        ):
            return False
        reader.reader.unplug()
        log.info("life: reader of %s unplugged", reader.device_id)
        return True

    def motion(self) -> bool:
        """Something moves in front of a camera (an alarm where the building is watched)."""
        camera_id = self._camera()
        if camera_id is None:
            return False
        camera = self.city.cameras[camera_id]
        if not self._claim(
            f"{camera_id}/motion", self.random.uniform(5, 15), lambda: camera.set_motion(False)
        ):
            return False
        camera.set_motion(True)
        log.info("life: motion at %s", camera_id)
        return True

    def camera_tampered(self) -> bool:
        """Someone masks a camera; the picture comes back later."""
        camera_id = self._camera()
        if camera_id is None:
            return False
        camera = self.city.cameras[camera_id]
        if not self._claim(
            f"{camera_id}/tamper", self.random.uniform(20, 60), lambda: camera.set_tamper(False)
        ):
            return False
        camera.set_tamper(True)
        log.info("life: %s tampered with", camera_id)
        return True

    async def camera_offline(self) -> bool:
        """A camera drops off the network for a while."""
        camera_id = self._camera()
        if camera_id is None:
            return False
        camera = self.city.cameras[camera_id]
        if not self._claim(camera_id, self.random.uniform(30, 90), camera.start):
            return False
        await camera.stop()
        log.info("life: %s offline", camera_id)
        return True

    def _reader(self) -> Reader | None:
        free = [r for r in self.city.readers if r.device_id not in self._busy]
        return self.random.choice(free) if free else None

    def _camera(self) -> str | None:
        free = [c for c in sorted(self.city.cameras) if c not in self._busy]
        return self.random.choice(free) if free else None
