"""The REST API under ``/api/v1``: one module of routes per resource, mounted in order.

Each resource module (``pages``, ``sessions``, ``site``, ``devices``,
``points``, ``commands``, ``alarms``, ``maintenance``, ``journal``, ``meta``)
declares its handlers in its own ``ROUTES`` table (method, path,
documentation); :data:`ROUTES` puts them together in matching order;
:func:`cityvisor.web.app.build_app` mounts them and
:mod:`cityvisor.web.openapi` documents them from the same declarations.
Handlers find the hub in ``request.app[HUB]`` and the logged-in user in
``request["user"]``; every action is done in that user's name, so the
command bus and the alarm manager check their role and zones and journal
who did it.
"""

from __future__ import annotations

from ..routing import Routes
from . import alarms, commands, devices, journal, maintenance, meta, pages, points, sessions, site
from .pages import STATIC_ROOT

__all__ = ["ROUTES", "STATIC_ROOT"]

ROUTES = Routes()
"""Every route of the core API, in matching order."""
for _resource in (
    pages,
    sessions,
    site,
    devices,
    points,
    commands,
    alarms,
    maintenance,
    journal,
    meta,
):
    ROUTES.routes.extend(_resource.ROUTES)
