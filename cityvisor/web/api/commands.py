"""Commands: send, confirm, group orders, approvals and confirmations waiting, approve, reject, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...core.commands import CommandRequest
from ...core.text import text_problem
from ..routing import (
    Fields,
    Routes,
    json_body,
    text_schema,
)
from .common import _hub, _json, _user

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- commands

ROUTES = Routes()
"""The routes of the commands (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


_RESULT_RESPONSES = {
    200: "the command ran: `outcome` says how it ended (succeeded, failed, timed_out...)",
    202: "waiting: `token` to confirm it, or `approval_id` for a second person",
    403: "not permitted (role or zone)",
    404: "unknown device or command",
    409: "interlocked (the reason says why), or a confirmation problem",
    422: "invalid arguments: `problems` lists every one",
    503: "device offline or busy",
}


def _result(result: Any) -> web.Response:
    outcome = result.outcome
    return _json(result.as_json(), status=202 if outcome.pending else 200)


@ROUTES.route(
    "POST",
    "/api/v1/devices/{id}/commands/{name}",
    summary="Send a command to a device",
    tag="commands",
    body={
        "type": "object",
        "properties": {
            "arguments": {"type": "object", "description": "the command's parameters"},
            "member": {
                **text_schema(100),
                "type": ["string", "null"],
                "description": "circuit, port... for a per-member command",
            },
            "comment": text_schema(500, multiline=True),
            "confirmation": text_schema(100, description="a selection's token: operate it now"),
        },
    },
    responses=_RESULT_RESPONSES,
)
async def send_command(request: web.Request) -> web.StreamResponse:
    """Send a command in the user's name. The command bus validates the arguments,
    checks the user's role and zone, the device's state and the interlocks, then runs
    it and waits for its feedback, or parks it for confirmation (select before operate)
    or for a second person's approval. Every attempt is journaled."""
    body = await json_body(request, required=False)
    fields = Fields(body, allowed=["arguments", "member", "comment", "confirmation"])
    arguments = fields.mapping("arguments")
    member = fields.text("member", max_length=100)
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    confirmation = fields.text("confirmation", max_length=100)
    fields.done()
    request_ = CommandRequest(
        request.match_info["id"],
        request.match_info["name"],
        arguments,
        member,
        _user(request),
        comment,
        "api",
        confirmation=confirmation,
    )
    return _result(await _hub(request).commands.execute(request_))


@ROUTES.route(
    "POST",
    "/api/v1/commands/confirm/{token}",
    summary="Confirm (operate) a selected command",
    tag="commands",
    responses=_RESULT_RESPONSES | {410: "the selection expired"},
)
async def confirm_command(request: web.Request) -> web.StreamResponse:
    """Operate a command selected earlier (its answer carried ``token``). Only the user
    who selected it may confirm, before it expires; everything is checked again."""
    return _result(
        await _hub(request).commands.confirm(request.match_info["token"], _user(request))
    )


@ROUTES.route(
    "POST",
    "/api/v1/commands/group",
    summary="Send one command to every device of a zone, family or tag",
    tag="commands",
    body={
        "type": "object",
        "required": ["command"],
        "properties": {
            "command": text_schema(100, min_length=1),
            "arguments": {"type": "object"},
            "zone": text_schema(100),
            "family": text_schema(100),
            "tag": text_schema(100),
            "type": text_schema(100),
            "members": {
                "oneOf": [
                    {"const": "all"},
                    {"type": "array", "items": text_schema(100), "maxItems": 10_000},
                ]
            },
            "comment": text_schema(500, multiline=True),
        },
    },
    responses=_RESULT_RESPONSES,
)
async def group_command(request: web.Request) -> web.StreamResponse:
    """One order to every device matching the selector (at least one of zone, family,
    tag, type), with one result per target: targets outside the user's zones are
    refused one by one. A group needing confirmation or approval is parked once."""
    body = await json_body(request)
    fields = Fields(
        body,
        allowed=["command", "arguments", "zone", "family", "tag", "type", "members", "comment"],
    )
    name = fields.text("command", required=True, max_length=100, nonempty=True)
    arguments = fields.mapping("arguments")
    selector = {key: fields.text(key, max_length=100) for key in ("zone", "family", "tag", "type")}
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    members = body.get("members", "all")
    if not (
        members == "all" or (isinstance(members, list) and all(isinstance(m, str) for m in members))
    ):
        fields.problems.append('members must be "all" or a list of member names')
    elif isinstance(members, list):
        if len(members) > 10_000:
            fields.problems.append("members lists at most 10000 names")
        fields.problems.extend(
            problem
            for member in members[:10_000]
            if (problem := text_problem("members", member, max_length=100))
        )
    fields.done()
    assert name is not None
    result = await _hub(request).commands.execute_group(
        name,
        arguments,
        _user(request),
        zone=selector["zone"],
        family=selector["family"],
        tag=selector["tag"],
        type_name=selector["type"],
        members=members,
        comment=comment,
    )
    return _result(result)


@ROUTES.route(
    "GET",
    "/api/v1/commands/approvals",
    summary="Commands waiting for a second person",
    tag="commands",
)
async def approvals(request: web.Request) -> web.StreamResponse:
    """``approvals``: requests this user may approve or reject (not their own, in their
    zones, with the role); ``requested``: the user's own requests still waiting."""
    bus = _hub(request).commands
    user = _user(request)
    return _json(
        {
            "approvals": [p.as_json() for p in bus.pending_approvals(user)],
            "requested": [
                p.as_json() for p in bus.pending_approvals() if p.requested_by.name == user.name
            ],
        }
    )


@ROUTES.route(
    "GET",
    "/api/v1/commands/confirmations",
    summary="The user's selected commands waiting for confirmation",
    tag="commands",
)
async def confirmations(request: web.Request) -> web.StreamResponse:
    """The user's own selections (select before operate) that are still open."""
    bus = _hub(request).commands
    return _json(
        {"confirmations": [p.as_json() for p in bus.pending_confirmations(_user(request))]}
    )


_COMMENT_BODY = {
    "type": "object",
    "properties": {"comment": text_schema(500, multiline=True)},
}


async def _comment(request: web.Request) -> str:
    fields = Fields(await json_body(request, required=False), allowed=["comment"])
    comment = fields.text("comment", default="", max_length=500, multiline=True) or ""
    fields.done()
    return comment


@ROUTES.route(
    "POST",
    "/api/v1/commands/approvals/{id}/approve",
    summary="Approve (and so run) a command",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES | {410: "expired"},
)
async def approve(request: web.Request) -> web.StreamResponse:
    """Approve a command waiting for a second person: it runs now, in the author's name,
    with the approver journaled. The approver must not be its author."""
    comment = await _comment(request)
    result = await _hub(request).commands.approve(request.match_info["id"], _user(request), comment)
    return _result(result)


@ROUTES.route(
    "POST",
    "/api/v1/commands/approvals/{id}/reject",
    summary="Reject a command waiting for approval",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES,
)
async def reject(request: web.Request) -> web.StreamResponse:
    """Reject a command waiting for approval (its author rejecting it cancels it)."""
    comment = await _comment(request)
    result = await _hub(request).commands.reject(request.match_info["id"], _user(request), comment)
    return _result(result)


@ROUTES.route(
    "POST",
    "/api/v1/commands/pending/{id}/cancel",
    summary="Withdraw a selection or an approval request",
    tag="commands",
    body=_COMMENT_BODY,
    responses=_RESULT_RESPONSES,
)
async def cancel(request: web.Request) -> web.StreamResponse:
    """Withdraw a selected command or an approval request (its author, or an admin)."""
    comment = await _comment(request)
    result = await _hub(request).commands.cancel(request.match_info["id"], _user(request), comment)
    return _result(result)
