"""The web HMI and its API, as a built-in plugin: ``cityvisor run`` serves them.

The hub runs the :class:`~cityvisor.web.app.WebServer` this plugin returns
from ``cityvisor_startup`` as one of its services, on ``[web] host`` and
``port``. A deployment without operators on this node (an edge node)
turns it off with ``[plugins] disabled = ["web"]``. The core never imports
the web package: this plugin is the only link.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sniffio

from cityvisor import hookimpl

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub
    from cityvisor.web.app import WebServer

log = logging.getLogger(__name__)


@hookimpl
def cityvisor_startup(hub: Hub) -> WebServer | None:
    """Return the web server as a service of the hub (asyncio only: aiohttp needs it)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "none"
    if library != "asyncio":
        log.warning("the web server needs asyncio (running on %s): the HMI is not served", library)
        return None
    from cityvisor.web.app import WebServer

    return WebServer(hub)
