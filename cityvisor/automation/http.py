"""The rules over HTTP: list them with their last firing, enable or disable one (a supervisor).

Every route is behind the web server's session check; enabling and
disabling are journaled with the user and the comment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from cityvisor.web.routing import ApiError, json_body

if TYPE_CHECKING:
    from .engine import RuleEngine
    from .rules import Rule

__all__ = ["AutomationRoutes"]

MAX_COMMENT = 500


class AutomationRoutes:
    """``/api/v1/automation/...`` of one hub's rule engine."""

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine

    def routes(self) -> list[web.RouteDef]:
        """The route table."""
        return [
            web.get("/api/v1/automation/rules", self.list_rules),
            web.get("/api/v1/automation/rules/{name}", self.one_rule),
            web.post("/api/v1/automation/rules/{name}/enable", self.enable),
            web.post("/api/v1/automation/rules/{name}/disable", self.disable),
        ]

    def _rule(self, request: web.Request) -> Rule:
        name = request.match_info["name"]
        rule = self.engine.rules.get(name)
        if rule is None:
            raise ApiError(404, "unknown_rule", f"unknown rule {name!r}")
        return rule

    async def list_rules(self, request: web.Request) -> web.Response:
        """Every rule, with whether it is enabled, holding, failing, and its last firing."""
        return web.json_response({"rules": [rule.as_json() for rule in self.engine.rules.values()]})

    async def one_rule(self, request: web.Request) -> web.Response:
        """One rule."""
        return web.json_response(self._rule(request).as_json())

    async def enable(self, request: web.Request) -> web.Response:
        """Enable a rule (``{"comment": ...}`` optional; a supervisor)."""
        return await self._switch(request, True)

    async def disable(self, request: web.Request) -> web.Response:
        """Disable a rule (``{"comment": ...}`` optional; a supervisor)."""
        return await self._switch(request, False)

    async def _switch(self, request: web.Request, enabled: bool) -> web.Response:
        rule = self._rule(request)
        body = await json_body(request, required=False)
        comment = body.get("comment", "")
        if (
            not isinstance(comment, str)
            or len(comment) > MAX_COMMENT
            or any(ord(c) < 32 and c not in "\n\t" for c in comment)
        ):
            raise ApiError(
                422,
                "invalid_request",
                f"comment: expected a text of at most {MAX_COMMENT} characters",
                problems=["comment"],
            )
        try:
            await self.engine.set_enabled(rule.name, enabled, request["user"], comment)
        except PermissionError as error:
            raise ApiError(403, "not_permitted", str(error)) from None
        return web.json_response(rule.as_json())
