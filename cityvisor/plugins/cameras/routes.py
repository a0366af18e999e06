"""The plugin's web routes: snapshots and stored evidence, for the users whose zones they are in.

The routes answer logged-in users only (the web server's session check is
in front of every plugin route) and only for the zones the user may see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .evidence import CameraServices


# --------------------------------------------------------------------------- routes


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _may_see(request: web.Request, zone: str | None) -> bool:
    user = request.get("user")
    if user is None:
        return False
    if zone is None:  # evidence of a device that no longer exists: for users of every zone
        return "*" in user.zones
    return bool(user.in_zone(zone))


# CCTV pictures are personal data: no browser or proxy keeps a copy.
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def routes(services: CameraServices) -> list[web.RouteDef]:
    """The plugin's web routes (mounted behind the web server's session check)."""
    hub = services.hub

    async def snapshot(request: web.Request) -> web.StreamResponse:
        try:
            camera = services.camera(request.match_info["id"])
        except KeyError:
            return _error(404, "not_found", "no such camera")
        if not _may_see(request, camera.zone):
            return _error(403, "forbidden", "this camera is outside your zones")
        try:
            picture = await services.snapshots.get(camera.id)
        except Exception as error:  # offline, timed out, refused: the browser shows why
            return _error(503, "camera_unavailable", str(error) or type(error).__name__)
        headers = {**_NO_STORE, "X-Snapshot-Time": str(picture.taken_at)}
        return web.Response(body=picture.jpeg, content_type="image/jpeg", headers=headers)

    async def evidence_list(request: web.Request) -> web.StreamResponse:
        alarm_id = request.query.get("alarm")
        camera_id = request.query.get("camera")
        if not alarm_id and not camera_id:
            return _error(422, "invalid_request", "give alarm=<alarm id> or camera=<camera id>")
        rows = await services.evidence.list(alarm_id=alarm_id, camera_id=camera_id)
        return web.json_response(
            {"evidence": [row for row in rows if _may_see(request, _zone(hub, row))]},
            headers=_NO_STORE,
        )

    async def evidence_image(request: web.Request) -> web.StreamResponse:
        try:
            evidence_id = int(request.match_info["evidence_id"])
        except ValueError:
            return _error(404, "not_found", "no such evidence")
        found = await services.evidence.image(evidence_id)
        if found is None or not _may_see(request, _zone(hub, found[1])):
            return _error(404, "not_found", "no such evidence")
        image, details = found
        if image is None:
            return _error(404, "no_image", "the camera gave no picture for this alarm")
        headers = {**_NO_STORE, "X-Snapshot-Time": str(details["ts"])}
        return web.Response(body=image, content_type="image/jpeg", headers=headers)

    return [
        web.get("/api/v1/cameras/{id}/snapshot", snapshot),
        web.get("/api/v1/cameras/evidence", evidence_list),
        web.get("/api/v1/cameras/evidence/{evidence_id}", evidence_image),
    ]


def _zone(hub: Any, row: dict[str, Any]) -> str | None:
    """The zone evidence belongs to: its camera's, else its alarm's; None if neither is known."""
    device = hub.devices.get(row.get("camera"))
    if device is not None:
        return str(device.zone)
    alarm_id = row.get("alarm")
    if alarm_id and alarm_id in hub.alarms:
        return str(hub.alarms.get(alarm_id).zone)
    return None
