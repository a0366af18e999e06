"""The site: the deployment's name, language, time zone and map, as the HMI needs them."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from aiohttp import web

from ..routing import ApiError, Routes
from ..visibility import visibility
from .common import _hub, _json

# --------------------------------------------------------------------------- site


ROUTES = Routes()
"""The routes of the site (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""

log = logging.getLogger(__name__)


def plugin_pages(hub: Any) -> list[dict[str, Any]]:
    """The plugins' screens (hook ``cityvisor_web_pages``), those that fit, in order."""
    pages: list[dict[str, Any]] = []
    for plugin_name, declared in hub.plugins.call_each("cityvisor_web_pages", hub=hub):
        for page in declared or ():
            label = page.get("label") if isinstance(page, dict) else None
            if not (
                isinstance(page, dict)
                and isinstance(page.get("name"), str)
                and isinstance(page.get("path"), str)
                and page["path"].startswith("/plugins/")
                and isinstance(label, dict)
                and all(isinstance(label.get(k), str) and label[k] for k in ("fr", "en"))
            ):
                log.error(
                    "plugin %s: a page needs name, a path under /plugins/ and a label "
                    "with fr and en (got %r)",
                    plugin_name,
                    page,
                )
                continue
            pages.append({"name": page["name"], "path": page["path"], "label": dict(label)})
    return pages


@ROUTES.route(
    "GET", "/api/v1/site", summary="The deployment: name, time zone, zones, map", tag="site"
)
async def site(request: web.Request) -> web.StreamResponse:
    """What the screens need to know about the deployment (never a device's config)."""
    config = _hub(request).config
    seen = visibility(request)
    return _json(
        {
            "name": config.site.name,
            "timezone": config.site.timezone,
            "language": config.site.language,
            "latitude": config.site.latitude,
            "longitude": config.site.longitude,
            "zones": [
                {"id": z.id, "name": z.name, "label": dict(z.label)}
                for z in config.zones
                if seen.sees_zone(z.id)
            ],
            "families": sorted(
                {d.family for d in _hub(request).devices.values() if seen.sees_zone(d.zone)}
            ),
            "tile_url": config.web.tile_url,
            "basemap": config.web.basemap is not None,
            "pages": plugin_pages(_hub(request)),
        }
    )


@ROUTES.route(
    "GET",
    "/api/v1/basemap",
    summary="The map's offline background: the GeoJSON of [web] basemap",
    tag="site",
    responses={
        200: "a GeoJSON document (served as application/json)",
        404: "no basemap configured",
    },
)
async def basemap(request: web.Request) -> web.StreamResponse:
    """The GeoJSON the map draws under the equipment (outlines of the communes...)."""
    path = _hub(request).config.web.basemap
    if path is None:
        raise ApiError(404, "no_basemap", "no [web] basemap is configured")
    try:
        body = await anyio.Path(path).read_bytes()
    except OSError as error:
        raise ApiError(404, "no_basemap", f"the basemap cannot be read: {error.strerror}") from None
    return web.Response(body=body, content_type="application/json")
