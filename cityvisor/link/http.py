"""The link over HTTP: its state (``GET /api/v1/link``) and, at a central, commands to edges.

Every route is behind the web server's session check. A command needs the
operator role in the zone of the remote device (the zone its birth
declared); the central journals it with the user, the edge runs it
through its own command bus (interlocks, approval, audit) and the answer
is the edge's result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from cityvisor.core.users import Role
from cityvisor.web.routing import ApiError, json_body

from .central import Central, LinkCommandError

if TYPE_CHECKING:
    from .edge import EdgeNode

__all__ = ["LinkRoutes"]

MAX_COMMENT = 500


class LinkRoutes:
    """``/api/v1/link...`` of one hub's edge node or central."""

    def __init__(self, role: EdgeNode | Central) -> None:
        self.role = role

    def routes(self) -> list[web.RouteDef]:
        """The route table (commands only at a central)."""
        routes = [web.get("/api/v1/link", self.state)]
        if isinstance(self.role, Central):
            routes.append(
                web.post(
                    "/api/v1/link/nodes/{group}/{node}/devices/{device}/commands/{command}",
                    self.command,
                )
            )
        return routes

    async def state(self, request: web.Request) -> web.Response:
        """The role, the connection, and at a central every node with its devices."""
        role = self.role
        if isinstance(role, Central):
            return web.json_response(
                {
                    "role": "central",
                    "host_id": role.host_id,
                    "active": role.active,
                    "connected": role.connected,
                    "sequence_gaps": role.gaps,
                    "rebirths": role.rebirths,
                    "nodes": [
                        {
                            "group": node.group,
                            "node": node.node,
                            "online": node.alive,
                            "devices": sorted(node.devices),
                        }
                        for node in role.nodes.values()
                    ],
                }
            )
        return web.json_response(
            {
                "role": "edge",
                "group": role.group,
                "node": role.node,
                "connected": role.connected,
                "births": role.births,
                "buffered": len(role.buffer),
                "dropped": role.buffer.dropped,
                "commands": role.commands,
            }
        )

    async def command(self, request: web.Request) -> web.Response:
        """Order a command to an edge's device (``{"arguments", "member", "comment", "confirmation"}``)."""
        central = self.role
        assert isinstance(central, Central)
        info = request.match_info
        group, node_id, device_id = info["group"], info["node"], info["device"]
        node = central.nodes.get((group, node_id))
        device = None if node is None else node.devices.get(device_id)
        if node is None or device is None:
            raise ApiError(404, "unknown_device", f"no device {device_id!r} on {group}/{node_id}")
        zone = next((p.zone for p in device.by_name.values()), "")
        user = request["user"]
        if not user.may(Role.OPERATOR, zone):
            raise ApiError(403, "not_permitted", f"an operator of zone {zone!r} may command this")
        body = await json_body(request, required=False)
        arguments, member = body.get("arguments", {}), body.get("member")
        comment, confirmation = body.get("comment", ""), body.get("confirmation")
        problems = [
            key
            for key, ok in (
                ("arguments", isinstance(arguments, dict)),
                ("member", member is None or isinstance(member, str)),
                ("comment", isinstance(comment, str) and len(comment) <= MAX_COMMENT),
                ("confirmation", confirmation is None or isinstance(confirmation, str)),
            )
            if not ok
        ]
        if problems:
            raise ApiError(
                422, "invalid_request", "invalid " + ", ".join(problems), problems=problems
            )
        try:
            result: dict[str, Any] = await central.command(
                group,
                node_id,
                device_id,
                info["command"],
                arguments,
                member,
                user=user,
                comment=comment,
                confirmation=confirmation,
            )
        except LinkCommandError as error:
            raise ApiError(503, "link_unavailable", str(error)) from None
        return web.json_response(result)
