"""Open data as a built-in plugin: the public ``/opendata/`` routes, the journal, the broker push.

Nothing happens unless the deployment says ``[opendata] enabled = true``.
The routes reach the web server through ``cityvisor_web_routes`` (marked
public: no session); the service returned by ``cityvisor_startup`` journals
what is published and, with ``[opendata.broker]``, pushes the entities to
an NGSI-LD context broker. See docs/opendata.md.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sniffio

from cityvisor import hookimpl
from cityvisor.opendata.models import collect_models
from cityvisor.opendata.publish import Publication, config_problems
from cityvisor.opendata.values import LiveValues

if TYPE_CHECKING:
    from cityvisor.core.config import Config
    from cityvisor.core.devices import DeviceType
    from cityvisor.core.hub import Hub
    from cityvisor.core.plugins import PluginManager

log = logging.getLogger(__name__)

_PUBLICATIONS: weakref.WeakKeyDictionary[Any, Publication] = weakref.WeakKeyDictionary()


def publication(hub: Hub) -> Publication:
    """The hub's publication (one per hub, shared by its routes and its service)."""
    found = _PUBLICATIONS.get(hub)
    if found is None:
        models = collect_models(hub.plugins.call_each("cityvisor_opendata_models"))
        found = _PUBLICATIONS[hub] = Publication(hub.config, hub.devices, models)
    return found


@hookimpl
def cityvisor_web_routes(hub: Hub) -> list[Any]:
    """``GET /opendata/...``, public and read-only, when open data is enabled."""
    if not hub.config.opendata.enabled:
        return []
    from cityvisor.opendata.http import OpenDataRoutes

    return OpenDataRoutes(hub, publication(hub)).routes()


@hookimpl
def cityvisor_startup(hub: Hub) -> Callable[[], Awaitable[None]] | None:
    """Journal what is published; push to the context broker if one is configured."""
    if not hub.config.opendata.enabled:
        return None
    published = publication(hub)
    broker = hub.config.opendata.broker
    client = None
    if broker is not None:
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = "none"
        if library == "asyncio":
            from cityvisor.opendata.broker import BrokerClient

            client = BrokerClient(broker, published, LiveValues(hub), hub.store)
        else:
            log.warning("the context broker push needs asyncio (running on %s)", library)

    async def service() -> None:
        await published.record(
            hub.store,
            f"open data published: {', '.join(published.datasets) or 'no dataset'}",
            {"via": "startup", "datasets": published.shape()},
        )
        if client is not None:
            await client()

    return service


@hookimpl
def cityvisor_check_config(
    config: Config, device_types: Mapping[str, type[DeviceType]], plugins: PluginManager
) -> Sequence[str]:
    """``[opendata]`` names families and points that exist and may be published."""
    if not config.opendata.enabled:
        return []
    models = collect_models(plugins.call_each("cityvisor_opendata_models"))
    return config_problems(config, device_types, models)
