"""One alarm at run time, and the records it produces: transitions, procedures, maintenance windows."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..declarations import AlarmSpec, Priority, text
from .states import _ACK, _NORMAL, AlarmState, AlarmStatus

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# =========================================================================== runtime objects


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class Transition:
    """One thing that happened to an alarm: what, when, who, why, from which state to which.

    ``kind`` is ``raised``, ``cleared``, ``acknowledged``, ``shelved``,
    ``unshelved``, ``suppressed``, ``unsuppressed``, ``out_of_service``,
    ``in_service``, ``maintenance_started``, ``maintenance_ended`` or
    ``procedure_step``; for events that concern no single alarm (``alarm_id``
    is empty): ``flood_started``, ``flood_ended``, ``maintenance_added``,
    ``maintenance_removed``. ``annunciated`` is False when it happened to a
    hidden alarm (raised while suppressed, in maintenance...). ``user`` is
    None for what the system did by itself.
    """

    kind: str
    alarm_id: str
    ts: int
    user: str | None = None
    comment: str = ""
    from_state: str = ""
    to_state: str = ""
    value: Any = None
    annunciated: bool = True
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the API and the journal."""
        return {
            "kind": self.kind,
            "alarm": self.alarm_id,
            "ts": self.ts,
            "user": self.user,
            "comment": self.comment,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "value": _json_value(self.value),
            "annunciated": self.annunciated,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Procedure:
    """An operating procedure: the checklist an operator follows for an alarm.

    Procedures are data (Dijon has about 600): the config file or a plugin
    provides them, alarm declarations name one by ``id``. ``version`` goes to
    the journal with every ticked step, so one can tell which text was followed.
    """

    id: str
    version: int
    title: Mapping[str, str]
    steps: Sequence[Mapping[str, str]]

    @classmethod
    def create(
        cls,
        id: str,
        title: str | Mapping[str, str],
        steps: Iterable[str | Mapping[str, str]],
        version: int = 1,
    ) -> Procedure:
        """Build a procedure from plain or translated text."""
        normalised = [text(step) for step in steps]
        if not normalised:
            raise ValueError(f"procedure {id!r} has no steps")
        return cls(id, version, text(title), normalised)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "version": self.version,
            "title": dict(self.title),
            "steps": [dict(step) for step in self.steps],
        }


@dataclass(frozen=True)
class MaintenanceWindow:
    """Planned maintenance: alarms of a device, or of a whole zone, are not annunciated.

    Set *before* the work starts; between ``start_ms`` and ``end_ms`` the
    alarms concerned keep tracking their condition but are shown as in
    maintenance, and what happens to them is journaled as such.
    """

    id: str
    device_id: str | None
    zone: str | None
    start_ms: int
    end_ms: int
    reason: str
    created_by: str
    created_at: int

    def covers(self, alarm: Alarm) -> bool:
        """True if the window is about this alarm's device or zone."""
        if self.device_id is not None:
            return alarm.device_id == self.device_id
        return alarm.zone == self.zone

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "zone": self.zone,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


class Alarm:
    """The run-time state of one alarm instance (one declaration x one device x one member).

    The alarm manager owns it and is the only one that changes it; read it
    freely, or take :meth:`as_json` for the API.
    """

    __slots__ = (
        "_delay_gen",
        "_evaluate",
        "_shelve_gen",
        "acked_at",
        "acked_by",
        "active",
        "checklist",
        "checklist_version",
        "cleared_at",
        "condition",
        "counts",
        "device_id",
        "family",
        "id",
        "latched",
        "maintenance",
        "member",
        "out_of_service",
        "out_of_service_by",
        "out_of_service_reason",
        "point_id",
        "raised_at",
        "shelve_reason",
        "shelved",
        "shelved_by",
        "shelved_until",
        "spec",
        "state",
        "suppressed",
        "value",
        "zone",
    )

    def __init__(
        self,
        alarm_id: str,
        spec: AlarmSpec,
        point_id: str,
        *,
        device_id: str = "",
        zone: str = "",
        family: str = "",
        member: str | None = None,
    ) -> None:
        self.id = alarm_id
        self.spec = spec
        self.point_id = point_id
        self.device_id = device_id
        self.zone = zone
        self.family = family
        self.member = member
        self.state = AlarmState.NORMAL
        self.active = False
        """The condition, after its on/off delays."""
        self.condition = False
        """The condition as last evaluated, before delays (it drives the hysteresis)."""
        self.latched = False
        self.shelved = False
        self.shelved_until: int | None = None
        self.shelve_reason = ""
        self.shelved_by: str | None = None
        self.suppressed = False
        self.maintenance = False
        self.out_of_service = False
        self.out_of_service_reason = ""
        self.out_of_service_by: str | None = None
        self.raised_at: int | None = None
        self.cleared_at: int | None = None
        self.acked_at: int | None = None
        self.acked_by: str | None = None
        self.value: Any = None
        self.counts: Counter[str] = Counter()
        """Transitions of this alarm by kind since it was created (for KPIs)."""
        self.checklist: dict[int, dict[str, Any]] = {}
        """Procedure steps ticked during the current occurrence: index -> done, by, ts."""
        self.checklist_version: int | None = None
        self._evaluate = spec.condition.evaluate
        self._delay_gen = 0
        self._shelve_gen = 0

    # -- read-only views ---------------------------------------------------

    @property
    def name(self) -> str:
        """The declaration's name (``high_water``)."""
        return self.spec.name

    @property
    def priority(self) -> Priority:
        """The alarm's priority."""
        return self.spec.priority

    @property
    def message(self) -> Mapping[str, str]:
        """What the operator reads, ``{"fr": ..., "en": ...}``.

        ``{value}`` in a message stands for the point's value (the exception a
        device answers with); it is left out while the value is empty.
        """
        message = self.spec.message
        if not any("{value}" in m for m in message.values()):
            return message
        value = "" if self.value is None else str(self.value)
        filled = {lang: m.replace("{value}", value) for lang, m in message.items()}
        return filled if value else {lang: m.rstrip(" :") for lang, m in filled.items()}

    @property
    def procedure(self) -> str | None:
        """Id of the operating procedure to follow."""
        return self.spec.procedure

    @property
    def acked(self) -> bool:
        """True when nothing waits for an acknowledgement."""
        return self.state is _NORMAL or self.state is _ACK

    @property
    def hidden(self) -> bool:
        """True when shelved, suppressed, out of service or in maintenance."""
        return self.shelved or self.suppressed or self.out_of_service or self.maintenance

    @property
    def annunciated(self) -> bool:
        """True when the operator should see it: not normal and not hidden."""
        return self.state is not _NORMAL and not self.hidden

    @property
    def status(self) -> AlarmStatus:
        """The part of the state the state machine decides on."""
        return AlarmStatus(
            self.state,
            self.active,
            self.latched,
            self.shelved,
            self.suppressed,
            self.out_of_service,
            self.maintenance,
        )

    def _set_status(self, status: AlarmStatus) -> None:
        self.state = status.state
        self.active = status.active
        self.latched = status.latched
        self.shelved = status.shelved
        self.suppressed = status.suppressed
        self.out_of_service = status.out_of_service
        self.maintenance = status.maintenance

    @property
    def display_state(self) -> str:
        """One word for the HMI: the hiding reason if hidden, else the ISA state."""
        if self.out_of_service:
            return "out_of_service"
        if self.shelved:
            return "shelved"
        if self.maintenance:
            return "maintenance"
        if self.suppressed:
            return "suppressed"
        return self.state.value

    def as_json(self) -> dict[str, Any]:
        """Everything the API shows about the alarm, JSON-ready."""
        return {
            "id": self.id,
            "name": self.name,
            "device_id": self.device_id,
            "zone": self.zone,
            "family": self.family,
            "member": self.member,
            "point_id": self.point_id,
            "priority": str(self.priority),
            "priority_level": int(self.priority),
            "message": dict(self.message),
            "condition": self.spec.condition.describe(),
            "procedure": self.procedure,
            "state": self.state.value,
            "display_state": self.display_state,
            "active": self.active,
            "acked": self.acked,
            "annunciated": self.annunciated,
            "latching": self.spec.latching,
            "latched": self.latched,
            "shelved": self.shelved,
            "shelved_until": self.shelved_until,
            "shelve_reason": self.shelve_reason,
            "shelved_by": self.shelved_by,
            "suppressed": self.suppressed,
            "maintenance": self.maintenance,
            "out_of_service": self.out_of_service,
            "out_of_service_reason": self.out_of_service_reason,
            "out_of_service_by": self.out_of_service_by,
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "acked_at": self.acked_at,
            "acked_by": self.acked_by,
            "value": _json_value(self.value),
            "counts": dict(self.counts),
            "checklist": {
                "procedure": self.procedure,
                "version": self.checklist_version,
                "steps": {str(k): dict(v) for k, v in sorted(self.checklist.items())},
            },
        }

    # -- persistence -------------------------------------------------------

    def _persisted(self) -> dict[str, Any]:
        """What survives a restart (suppression and maintenance are recomputed instead)."""
        return {
            "state": self.state.value,
            "active": self.active,
            "latched": self.latched,
            "shelved": self.shelved,
            "shelved_until": self.shelved_until,
            "shelve_reason": self.shelve_reason,
            "shelved_by": self.shelved_by,
            "out_of_service": self.out_of_service,
            "out_of_service_reason": self.out_of_service_reason,
            "out_of_service_by": self.out_of_service_by,
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "acked_at": self.acked_at,
            "acked_by": self.acked_by,
            "value": _json_value(self.value),
            "counts": dict(self.counts),
            "checklist": {str(k): v for k, v in self.checklist.items()},
            "checklist_version": self.checklist_version,
        }

    def _restore(self, saved: Mapping[str, Any]) -> None:
        try:
            self.state = AlarmState(saved.get("state", "normal"))
        except ValueError:
            log.warning("alarm %s: unknown saved state %r, starting normal", self.id, saved)
            return
        self.active = self.condition = bool(saved.get("active", False))
        self.latched = bool(saved.get("latched", False))
        self.shelved = bool(saved.get("shelved", False))
        self.shelved_until = saved.get("shelved_until")
        self.shelve_reason = saved.get("shelve_reason") or ""
        self.shelved_by = saved.get("shelved_by")
        self.out_of_service = bool(saved.get("out_of_service", False))
        self.out_of_service_reason = saved.get("out_of_service_reason") or ""
        self.out_of_service_by = saved.get("out_of_service_by")
        self.raised_at = saved.get("raised_at")
        self.cleared_at = saved.get("cleared_at")
        self.acked_at = saved.get("acked_at")
        self.acked_by = saved.get("acked_by")
        self.value = saved.get("value")
        self.counts = Counter(saved.get("counts") or {})
        self.checklist = {int(k): dict(v) for k, v in (saved.get("checklist") or {}).items()}
        self.checklist_version = saved.get("checklist_version")

    def __repr__(self) -> str:
        return f"<Alarm {self.id} {self.display_state} active={self.active}>"
