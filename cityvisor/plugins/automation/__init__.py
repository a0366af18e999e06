"""Automation as a built-in plugin: rules in TOML files, evaluated inside the hub.

Nothing happens unless the deployment says ``[plugins.automation] enabled = true``.
The service returned by ``cityvisor_startup`` loads the rule files and runs
the rule engine; ``cityvisor_web_routes`` serves ``/api/v1/automation/...``
and the two screens (``/plugins/automation/rules`` and
``/plugins/automation/playbooks``); ``cityvisor_check_config`` checks the
rules against the deployment's points and devices. With the operations
layer on (``[plugins.ops]``), rules and playbooks open incidents and send
crews through its public API (:class:`OpsIncidentDesk`). See docs/automation.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from cityvisor import hookimpl
from cityvisor.automation.settings import AutomationSettings

if TYPE_CHECKING:
    from cityvisor.automation.engine import RuleEngine
    from cityvisor.automation.incidents import IncidentRequest, OpenedIncident
    from cityvisor.automation.playbooks import Playbooks
    from cityvisor.core.config import Config
    from cityvisor.core.devices import DeviceType
    from cityvisor.core.hub import Hub
    from cityvisor.core.plugins import PluginManager
    from cityvisor.core.users import User
    from cityvisor.ops.crisis import CrisisCell
    from cityvisor.ops.operations import Operations

NAME = "automation"

_ENGINES: weakref.WeakKeyDictionary[Any, RuleEngine] = weakref.WeakKeyDictionary()
_PLAYBOOKS: weakref.WeakKeyDictionary[Any, Playbooks] = weakref.WeakKeyDictionary()


def playbooks(hub: Hub) -> Playbooks | None:
    """The hub's playbooks (one per hub), or None when automation is not enabled."""
    settings = hub.config.settings(NAME)
    if settings is None or not settings.enabled:
        return None
    found = _PLAYBOOKS.get(hub)
    if found is None:
        from cityvisor.automation.playbooks import KEEP, Playbooks, load_playbooks
        from cityvisor.automation.rules import rules_directory
        from cityvisor.automation.runs import RunHistory

        directory = rules_directory(hub.config, settings.playbooks)
        found = _PLAYBOOKS[hub] = Playbooks(
            hub,
            loader=None if directory is None else (lambda: load_playbooks(directory)),
            concurrency=settings.concurrency,
            history=RunHistory(hub.store, KEEP),
            incidents=_incident_desk(hub),
            broadcaster=_broadcaster(hub),
        )
    return found


def engine(hub: Hub) -> RuleEngine | None:
    """The hub's rule engine (one per hub), or None when automation is not enabled."""
    settings = hub.config.settings(NAME)
    if settings is None or not settings.enabled:
        return None
    found = _ENGINES.get(hub)
    if found is None:
        from cityvisor.automation.engine import RuleEngine
        from cityvisor.automation.rules import load_directory, rules_directory

        directory = rules_directory(hub.config, settings.rules)
        cell = _crisis_cell(hub)
        found = _ENGINES[hub] = RuleEngine(
            hub,
            settings,
            loader=None if directory is None else (lambda: load_directory(directory)),
            crisis_open=(lambda: False) if cell is None else (lambda: cell.current is not None),
            incidents=_incident_desk(hub),
        )
        if cell is not None:
            cell.listeners.append(found.crisis_changed)
    return found


class OpsIncidentDesk:
    """Opens incidents and sends crews through the operations layer's public API."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    async def open_incident(
        self, request: IncidentRequest, user: User, comment: str
    ) -> OpenedIncident:
        """Open the incident as ``user``; send the nearest available crew with the skill if asked."""
        from cityvisor.automation.incidents import OpenedIncident
        from cityvisor.ops.incidents import IncidentError

        with anyio.move_on_after(10):
            await self.ops.ready.wait()
        device = self.ops.hub.devices.get(request.device or "")
        try:
            incident = await self.ops.book.create(
                user,
                title=request.title,
                zone=request.zone,
                priority=request.priority,
                location=None if device is None else device.info.location,
                source="automation",
                skill=request.skill,
                comment=comment,
            )
        except IncidentError as error:
            return OpenedIncident(None, problem=str(error))
        if not request.dispatch:
            return OpenedIncident(incident.id)
        try:
            proposals = self.ops.propose(incident, request.skill)
            if not proposals:
                return OpenedIncident(
                    incident.id, problem=f"no available crew with the skill {request.skill!r}"
                )
            crew = proposals[0].crew.id
            await self.ops.dispatch(incident.id, crew, user, comment)
        except IncidentError as error:
            return OpenedIncident(incident.id, problem=str(error))
        return OpenedIncident(incident.id, crew=crew)


def _incident_desk(hub: Hub) -> OpsIncidentDesk | None:
    """The desk of the operations layer, when that layer is enabled."""
    from cityvisor.plugins.ops import operations

    ops = operations(hub)
    return None if ops is None else OpsIncidentDesk(ops)


def _broadcaster(hub: Hub) -> Callable[[str, str, str, str], str | None]:
    """The flood alerts' broadcast (``[plugins.hydro.alerts]``), for playbooks' broadcast steps."""
    from cityvisor.plugins import hydro

    def broadcast(alert: str, device: str, stage: str, key: str) -> str | None:
        return hydro.broadcast(hub, alert, device, stage, key)

    return broadcast


def _crisis_cell(hub: Hub) -> CrisisCell | None:
    """The operations layer's crisis cell, when that layer is enabled."""
    from cityvisor.plugins.ops import operations

    ops = operations(hub)
    return None if ops is None else ops.cell


@hookimpl
def cityvisor_settings() -> type[Any]:
    """``[plugins.automation]``."""
    return AutomationSettings


@hookimpl
def cityvisor_web_routes(hub: Hub) -> list[Any]:
    """``/api/v1/automation/...`` (rules, playbooks, runs) and the screens ``/plugins/automation/...``."""
    found = engine(hub)
    if found is None:
        return []
    from cityvisor.automation.http import AutomationRoutes

    return AutomationRoutes(found, playbooks(hub)).routes()


@hookimpl
def cityvisor_web_pages(hub: Hub) -> list[dict[str, Any]]:
    """The rules list and the playbook runner, in the HMI's navigation."""
    if engine(hub) is None:
        return []
    return [
        {
            "name": "automation-rules",
            "path": "/plugins/automation/rules",
            "label": {"fr": "Règles", "en": "Rules"},
        },
        {
            "name": "automation-playbooks",
            "path": "/plugins/automation/playbooks",
            "label": {"fr": "Scénarios", "en": "Playbooks"},
        },
    ]


@hookimpl
def cityvisor_startup(hub: Hub) -> Callable[[], Awaitable[None]] | None:
    """Load the rule and playbook files, run the rule engine and own the playbooks' runs."""
    found, books = engine(hub), playbooks(hub)
    if found is None or books is None:
        return None

    async def service() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(found.run)
            tg.start_soon(books.serve)

    return service


@hookimpl
def cityvisor_check_config(
    config: Config, device_types: Mapping[str, type[DeviceType]], plugins: PluginManager
) -> Sequence[str]:
    """The rule files load; their points, devices, commands and selectors exist; types fit."""
    from cityvisor.automation.checks import config_problems

    settings = config.settings(NAME)
    if settings is None or not settings.enabled:
        return []
    return config_problems(config, settings, device_types)
