"""Rules and playbooks over HTTP: rules with their last firing, enabled or disabled by a supervisor; playbook runs.

Every route is behind the web server's session check; enabling and
disabling are journaled with the user and the comment. The two screens
(the rules list, the playbook runner) are files of this package served
under ``/plugins/automation/``; they follow a run by asking for it twice a
second while it goes.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from cityvisor.web.routing import ApiError, json_body

from .playbooks import PlaybookError, PlaybookRun

if TYPE_CHECKING:
    from .engine import RuleEngine
    from .playbooks import PastRun, Playbooks
    from .rules import Rule

__all__ = ["STATIC", "AutomationRoutes"]

MAX_COMMENT = 500

STATIC = {
    "rules": ("rules.html", "text/html"),
    "playbooks": ("playbooks.html", "text/html"),
    "automation.js": ("automation.js", "text/javascript"),
    "rules.js": ("rules.js", "text/javascript"),
    "playbooks.js": ("playbooks.js", "text/javascript"),
    "automation.css": ("automation.css", "text/css"),
    "i18n/fr.json": ("i18n/fr.json", "application/json"),
    "i18n/en.json": ("i18n/en.json", "application/json"),
}
"""The screens' files: the name in the URL -> the file of ``static/`` and its type."""


class AutomationRoutes:
    """``/api/v1/automation/...`` of one hub's rule engine."""

    def __init__(self, engine: RuleEngine, playbooks: Playbooks | None = None) -> None:
        self.engine = engine
        self.playbooks = playbooks

    def routes(self) -> list[web.RouteDef]:
        """The route table."""
        return [
            web.get("/api/v1/automation/rules", self.list_rules),
            web.get("/api/v1/automation/rules/{name}", self.one_rule),
            web.post("/api/v1/automation/rules/{name}/enable", self.enable),
            web.post("/api/v1/automation/rules/{name}/disable", self.disable),
            web.get("/api/v1/automation/playbooks", self.list_playbooks),
            web.get("/api/v1/automation/playbooks/{name}/dry-run", self.dry_run),
            web.post("/api/v1/automation/playbooks/{name}/run", self.start_run),
            web.get("/api/v1/automation/runs/{id}", self.one_run),
            web.post("/api/v1/automation/runs/{id}/{action}", self.act_on_run),
            web.get("/plugins/automation/{name:" + _alternatives() + "}", self.static),
        ]

    async def static(self, request: web.Request) -> web.Response:
        """The screens: ``rules``, ``playbooks``, their scripts, style sheet and texts (fr, en)."""
        name, content_type = STATIC[request.match_info["name"]]
        body = (resources.files(__package__) / "static" / name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8")

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

    # -- playbooks -----------------------------------------------------------

    def _books(self) -> Playbooks:
        if self.playbooks is None:
            raise ApiError(404, "no_playbooks", "no playbook is configured")
        return self.playbooks

    def _playbook_name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in self._books().playbooks:
            raise ApiError(404, "unknown_playbook", f"unknown playbook {name!r}")
        return name

    def _run(self, request: web.Request) -> PlaybookRun | PastRun:
        text = request.match_info["id"]
        run = self._books().runs.get(int(text)) if text.isdigit() else None
        if run is None:
            raise ApiError(404, "unknown_run", f"unknown run {text!r}")
        return run

    async def list_playbooks(self, request: web.Request) -> web.Response:
        """The playbooks and their runs."""
        books = self._books()
        return web.json_response(
            {
                "playbooks": [
                    {"name": p.name, "title": p.title, "steps": [s.as_json() for s in p.steps]}
                    for p in books.playbooks.values()
                ],
                "runs": [run.as_json() for run in reversed(books.runs.values())],
            }
        )

    async def dry_run(self, request: web.Request) -> web.Response:
        """What each step would do and touch; nothing is sent."""
        return web.json_response({"steps": self._books().dry_run(self._playbook_name(request))})

    async def start_run(self, request: web.Request) -> web.Response:
        """Start a run (an operator)."""
        name = self._playbook_name(request)
        try:
            run = self._books().start(name, request["user"])
        except PermissionError as error:
            raise ApiError(403, "not_permitted", str(error)) from None
        except PlaybookError as error:
            raise ApiError(409, "conflict", str(error)) from None
        return web.json_response(run.as_json(), status=201)

    async def one_run(self, request: web.Request) -> web.Response:
        """A run's state and every target's outcome."""
        return web.json_response(self._run(request).as_json())

    async def act_on_run(self, request: web.Request) -> web.Response:
        """``pause``, ``resume``, ``abort``, ``check``, ``approve`` or ``undo`` a run."""
        run = self._run(request)
        action = request.match_info["action"]
        user = request["user"]
        try:
            if action == "undo":
                await self._books().undo(run, user)
            elif action in ("pause", "resume", "abort", "check", "approve"):
                getattr(run, action)(user)
                if isinstance(run, PlaybookRun):
                    await run.record(action, user)
            else:
                raise ApiError(
                    404,
                    "unknown_action",
                    f"unknown action {action!r} (pause, resume, abort, check, approve, undo)",
                )
        except PermissionError as error:
            raise ApiError(403, "not_permitted", str(error)) from None
        except PlaybookError as error:
            raise ApiError(409, "conflict", str(error)) from None
        return web.json_response(run.as_json())


def _alternatives() -> str:
    return "|".join(name.replace(".", "\\.") for name in STATIC)
