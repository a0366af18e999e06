"""Operations as a built-in plugin: procedures, incidents, crews, citizen reports, crisis cell.

Nothing happens unless the deployment says ``[plugins.ops] enabled = true``.
The routes reach the web server through ``cityvisor_web_routes``; the
service returned by ``cityvisor_startup`` opens the tables, loads the
procedure files and serves the trackers' port. See docs/operations.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cityvisor import hookimpl
from cityvisor.ops.settings import OpsSettings

if TYPE_CHECKING:
    from cityvisor.core.config import Config
    from cityvisor.core.devices import DeviceType
    from cityvisor.core.hub import Hub
    from cityvisor.core.plugins import PluginManager
    from cityvisor.ops.operations import Operations

NAME = "ops"

_OPERATIONS: weakref.WeakKeyDictionary[Any, Operations] = weakref.WeakKeyDictionary()


def operations(hub: Hub) -> Operations | None:
    """The hub's operations layer (one per hub), or None when it is not enabled."""
    settings = hub.config.settings(NAME)
    if settings is None or not settings.enabled:
        return None
    found = _OPERATIONS.get(hub)
    if found is None:
        from cityvisor.ops.operations import Operations

        found = _OPERATIONS[hub] = Operations(hub, settings)
    return found


@hookimpl
def cityvisor_settings() -> type[Any]:
    """``[plugins.ops]``."""
    return OpsSettings


@hookimpl
def cityvisor_web_routes(hub: Hub) -> list[Any]:
    """``/api/v1/ops/...``, ``/plugins/ops/`` and the public ``/open311/v2/...``."""
    ops = operations(hub)
    if ops is None:
        return []
    from cityvisor.ops.http import OpsRoutes

    return OpsRoutes(ops).routes()


@hookimpl
def cityvisor_web_pages(hub: Hub) -> list[dict[str, Any]]:
    """The operations screen (incidents, crews, reports, crisis) in the HMI's navigation."""
    if operations(hub) is None:
        return []
    return [
        {
            "name": "ops",
            "path": "/plugins/ops/",
            "label": {"fr": "Opérations", "en": "Operations"},
        }
    ]


@hookimpl
def cityvisor_startup(hub: Hub) -> Callable[[], Awaitable[None]] | None:
    """Open the tables, load the procedures, serve the trackers' port."""
    ops = operations(hub)
    return None if ops is None else ops.run


@hookimpl
def cityvisor_check_config(
    config: Config, device_types: Mapping[str, type[DeviceType]], plugins: PluginManager
) -> Sequence[str]:
    """Procedure files are valid, and every alarm names a procedure that exists."""
    from cityvisor.ops.checks import config_problems

    settings = config.settings(NAME)
    if settings is None or not settings.enabled:
        return []
    return config_problems(config, settings, device_types)
