"""The web HMI and API: aiohttp, REST under ``/api/v1``, a WebSocket, sessions and roles.

- :mod:`cityvisor.web.app`: :func:`build_app` and the :class:`WebServer`
  service (started by the built-in plugin ``cityvisor.plugins.web``);
- :mod:`cityvisor.web.state`: what the handlers share (:class:`~cityvisor.web.state.WebState`)
  and the application keys they read it from;
- :mod:`cityvisor.web.api`: the REST routes, one module per resource;
  :mod:`cityvisor.web.ws`: the WebSocket;
- :mod:`cityvisor.web.auth`: accounts, argon2 hashes, sessions, login rate limits;
- :mod:`cityvisor.web.visibility`: what a user may read (``[security] zone_reading``),
  for every route and feed;
- :mod:`cityvisor.web.guard`: connections per client address and the request-head
  deadline (slow-loris);
- :mod:`cityvisor.web.metrics`, :mod:`cityvisor.web.openapi`: ``/metrics`` and
  ``/api/v1/openapi.json``;
- :mod:`cityvisor.web.cli`: ``cityvisor users``.

Imports go one way: ``app`` builds the application from the handlers
(``api``, ``ws``, ``metrics``), which read the hub and the shared state from
``request.app`` and never import ``app``.

docs/api.md describes the API and the WebSocket protocol, docs/security.md
the threat model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .app import WebServer, build_app

if TYPE_CHECKING:
    from ..core.hub import Hub

__all__ = ["WebServer", "build_app", "find_server"]


def find_server(hub: Hub) -> WebServer | None:
    """The web server the hub runs as a service, if any (tests, the benchmark)."""
    for service in hub.services.values():
        if isinstance(service, WebServer):
            return service
    return None
