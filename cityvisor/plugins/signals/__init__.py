"""Traffic signal controllers over SNMP (NTCIP 1202): phases, plans, flash, holds, bus priority.

Each controller runs one junction, described by a junction profile
(``crossroads`` by default, a file otherwise: docs/families/signals.md):
its phases, the **conflict table** (phases that must never be green
together), its stages and its timing plans. Points are per phase (``p2``:
its colour, whether the central holds it) and per detector (``d1``:
occupancy, fault), plus the unit's control source, flash state and running
plan, read in one GET each ``poll_period`` (:mod:`cityvisor.hal.ntcip`).

Commands: select a timing plan, go to flash, return to the controller's own
schedule, hold and release a phase, and send a bus priority request (NTCIP
1211 style). A hold is refused by its interlock when a conflicting phase is
already held (the ``hold_conflict`` point names it), and checked once more
against a fresh read just before the SET; the controller's own conflict
monitor is the last line. Bus priority can be switched off and on per
junction, or for a whole commune with a group order on the zone.
"""

from __future__ import annotations

from typing import Any

from cityvisor import DeviceType, hookimpl

from .controller import CONTROL, FLASH, NOT_LOCAL, PHASE_STATES, SignalConfig, SignalController

__all__ = [
    "CONTROL",
    "FLASH",
    "NOT_LOCAL",
    "PHASE_STATES",
    "SignalConfig",
    "SignalController",
    "cityvisor_device_types",
    "cityvisor_web_routes",
]


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The signals family's device types."""
    return [SignalController]


@hookimpl
def cityvisor_web_routes(hub: Any) -> list[Any]:
    """``GET /api/v1/signals/{id}/ring`` and the ring diagram page ``/plugins/signals/ring``."""
    from .web import routes

    return routes(hub)
