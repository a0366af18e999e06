"""Automation as a built-in plugin: rules in TOML files, evaluated inside the hub.

Nothing happens unless the deployment says ``[plugins.automation] enabled = true``.
The service returned by ``cityvisor_startup`` loads the rule files and runs
the rule engine; ``cityvisor_web_routes`` serves ``/api/v1/automation/...``; ``cityvisor_check_config`` checks the rules against the
deployment's points and devices. See docs/automation.md.
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
    from cityvisor.automation.playbooks import Playbooks
    from cityvisor.core.config import Config
    from cityvisor.core.devices import DeviceType
    from cityvisor.core.hub import Hub
    from cityvisor.core.plugins import PluginManager
    from cityvisor.ops.crisis import CrisisCell

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
        from cityvisor.automation.playbooks import Playbooks, load_playbooks
        from cityvisor.automation.rules import rules_directory

        directory = rules_directory(hub.config, settings.playbooks)
        found = _PLAYBOOKS[hub] = Playbooks(
            hub,
            loader=None if directory is None else (lambda: load_playbooks(directory)),
            concurrency=settings.concurrency,
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
        )
        if cell is not None:
            cell.listeners.append(found.crisis_changed)
    return found


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
    """``/api/v1/automation/rules...``: the rules, their last firing, enabling and disabling."""
    found = engine(hub)
    if found is None:
        return []
    from cityvisor.automation.http import AutomationRoutes

    return AutomationRoutes(found, playbooks(hub)).routes()


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
