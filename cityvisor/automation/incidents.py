"""Opening an incident from a rule or a playbook: what to open, and the desk that opens it.

The automation does not know the operations layer: it asks an
:class:`IncidentDesk` (the built-in plugin ``automation`` gives it one made
of ``cityvisor.ops``' public API when ``[plugins.ops]`` is enabled). A rule
action or a playbook step reads::

    incident = "Accident avenue Roland-Carraz"   # the incident's title
    zone = "chenove"
    priority = "high"          # critical, high, medium (default), low
    skill = "roads"            # the crew skill it needs (the dispatch looks for it)
    device = "carrefour-carraz"  # where it is: that device's location (optional)
    dispatch = true            # send the nearest available crew with the skill
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cityvisor.core.users import User

__all__ = ["INCIDENT_KEYS", "IncidentDesk", "IncidentRequest", "OpenedIncident", "incident_request"]

INCIDENT_KEYS = ("incident", "zone", "priority", "skill", "device", "dispatch")
PRIORITIES = ("critical", "high", "medium", "low")


@dataclass(frozen=True)
class IncidentRequest:
    """An incident to open: title, zone, priority, skill, where, and whether to send a crew."""

    title: str
    zone: str
    priority: str = "medium"
    skill: str | None = None
    device: str | None = None
    dispatch: bool = False

    def as_json(self) -> dict[str, Any]:
        """As the API shows it."""
        return {
            "title": self.title,
            "zone": self.zone,
            "priority": self.priority,
            "skill": self.skill,
            "device": self.device,
            "dispatch": self.dispatch,
        }


def incident_request(
    table: Mapping[str, Any], error: Callable[[str], Exception]
) -> IncidentRequest:
    """The :class:`IncidentRequest` of a rule action's or a step's table; ``error(message)`` names the key."""
    title = table.get("incident")
    if not isinstance(title, str) or not title.strip():
        raise error("incident: expected the incident's title")
    zone = table.get("zone")
    if not isinstance(zone, str) or not zone:
        raise error("zone: expected the zone the incident is in")
    priority = table.get("priority", "medium")
    if priority not in PRIORITIES:
        raise error(f"priority: expected one of {', '.join(PRIORITIES)} (got {priority!r})")
    skill, device = table.get("skill"), table.get("device")
    for key, value in (("skill", skill), ("device", device)):
        if value is not None and (not isinstance(value, str) or not value):
            raise error(f"{key}: expected a string")
    dispatch = table.get("dispatch", False)
    if not isinstance(dispatch, bool):
        raise error("dispatch: expected true or false")
    if dispatch and skill is None:
        raise error("skill: a dispatch needs the crew skill to look for")
    return IncidentRequest(title.strip(), zone, priority, skill, device, dispatch)


@dataclass(frozen=True)
class OpenedIncident:
    """What became of an :class:`IncidentRequest`: the incident, the crew sent, or why not."""

    incident_id: int | None
    crew: str | None = None
    problem: str = ""
    """Why the incident was not opened, or why no crew was sent."""

    def outcomes(self) -> dict[str, str]:
        """As a playbook step's outcomes: ``incident``, ``crew``, ``reason``."""
        found = {"incident": "refused" if self.incident_id is None else f"#{self.incident_id}"}
        if self.crew is not None:
            found["crew"] = self.crew
        if self.problem:
            found["reason"] = self.problem
        return found


class IncidentDesk(Protocol):
    """Opens incidents (and dispatches crews) for the automation, as a given user."""

    async def open_incident(
        self, request: IncidentRequest, user: User, comment: str
    ) -> OpenedIncident:
        """Open the incident as ``user``; dispatch the nearest crew if asked. Never raises
        for a refusal: the answer says what went wrong."""
        ...
