"""The Sparkplug B link as a built-in plugin: this hub as an edge node or as the central.

Nothing happens unless the deployment says ``[plugins.link] role = "edge"``
or ``"central"``. The service returned by ``cityvisor_startup`` runs the
role (:class:`cityvisor.link.edge.EdgeNode` or
:class:`cityvisor.link.central.Central`) for the hub's lifetime;
``cityvisor_web_routes`` serves ``/api/v1/link``;
``cityvisor_check_config`` names the keys a role lacks. See docs/link.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from cityvisor import hookimpl
from cityvisor.link.settings import LinkSettings, settings_problems

if TYPE_CHECKING:
    from cityvisor.core.config import Config
    from cityvisor.core.hub import Hub
    from cityvisor.link.central import Central
    from cityvisor.link.edge import EdgeNode

NAME = "link"

_ROLES: weakref.WeakKeyDictionary[Any, EdgeNode | Central] = weakref.WeakKeyDictionary()


def role(hub: Hub) -> EdgeNode | Central | None:
    """The hub's edge node or central (one per hub), or None when the link is off."""
    settings = hub.config.settings(NAME)
    if settings is None or settings.role == "off":
        return None
    found = _ROLES.get(hub)
    if found is None:
        if settings.role == "edge":
            from cityvisor.link.edge import EdgeNode

            found = EdgeNode(hub, settings)
        else:
            from cityvisor.link.central import Central

            found = Central(hub, settings)
        _ROLES[hub] = found
    return found


@hookimpl
def cityvisor_settings() -> type[Any]:
    """``[plugins.link]``."""
    return LinkSettings


@hookimpl
def cityvisor_web_routes(hub: Hub) -> list[Any]:
    """``/api/v1/link``: the link's state; at a central, commands to the edges' devices."""
    found = role(hub)
    if found is None:
        return []
    from cityvisor.link.http import LinkRoutes

    return LinkRoutes(found).routes()


@hookimpl
def cityvisor_startup(hub: Hub) -> Callable[[], Awaitable[None]] | None:
    """Run the edge node or the central for the hub's lifetime."""
    found = role(hub)
    return None if found is None else found.run


@hookimpl
def cityvisor_check_config(config: Config) -> Sequence[str]:
    """The keys the chosen role needs, the password's variable, the TLS files."""
    settings = config.settings(NAME)
    if settings is None:
        return []
    return settings_problems(settings, config)
