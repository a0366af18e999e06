"""The signals family's web routes: a junction's ring diagram, as data and as a page.

``GET /api/v1/signals/{id}/ring`` answers the junction's layout (stages in
serving order, phases with their approach and bus lane, the conflict table)
with each phase's live colour and hold, the running plan and its green
times: what a ring diagram draws. ``GET /plugins/signals/ring?device={id}``
is a page that draws it and follows it live (its script and style sheet are
files of this package, served beside it). Every route is behind the web
server's session check, and a device outside the user's reading zones is a
``404`` like an unknown one.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from cityvisor.web.visibility import visibility

from .controller import PHASE_STATES, SignalController

__all__ = ["ring", "routes"]

_STATIC = {
    "ring": ("ring.html", "text/html"),
    "ring.js": ("ring.js", "text/javascript"),
    "ring.css": ("ring.css", "text/css"),
}


def ring(device: SignalController) -> dict[str, Any]:
    """The ring diagram of one controller, from its profile and its live points."""
    layout = device.config.layout

    def value(name: str) -> Any:
        current = device.point(name).current
        return None if current is None or not current.quality.is_good else current.value

    phases = []
    for number, info in layout.phases.items():
        state = value(f"p{number}/state")
        phases.append(
            {
                "number": number,
                "name": info["name"],
                "approach": info["approach"],
                "bus": info["bus"],
                "state": PHASE_STATES[state] if isinstance(state, int) else "unknown",
                "held": value(f"p{number}/held"),
                "conflicts": sorted(layout.conflicts[number]),
            }
        )
    plan = value("plan")
    greens = layout.plans.get(plan, {}).get("greens") if isinstance(plan, int) else None
    return {
        "device": device.id,
        "name": device.info.name or device.id,
        "junction": layout.name,
        "online": value("online") is True,
        "plan": plan,
        "plan_name": value("plan_name"),
        "flashing": value("flashing"),
        "central_control": value("central_control"),
        "stages": [sorted(stage) for stage in layout.stages],
        "greens": greens,
        "yellow": layout.yellow,
        "all_red": layout.all_red,
        "phases": phases,
    }


def routes(hub: Any) -> list[web.RouteDef]:
    """The family's routes (mounted behind the web server's session check)."""

    async def ring_data(request: web.Request) -> web.Response:
        """A junction's ring diagram: stages, phases with live colour and hold, plan, flash."""
        device = visibility(request).device_or_404(request.match_info["id"])
        if not isinstance(device, SignalController):
            from cityvisor.web.routing import ApiError

            raise ApiError(404, "not_a_junction", f"{device.id} is not a signal controller")
        return web.json_response(ring(device))

    async def static(request: web.Request) -> web.Response:
        """The ring diagram page (``?device=<id>``), its script and its style sheet."""
        name, content_type = _STATIC[request.match_info["name"]]
        body = (resources.files(__package__) / "static" / name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return [
        web.get("/api/v1/signals/{id}/ring", ring_data),
        web.get("/plugins/signals/{name:ring|ring\\.js|ring\\.css}", static),
    ]
