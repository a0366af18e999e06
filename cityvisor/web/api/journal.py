"""The journal: alarm transitions, acknowledgements, commands and logins, filtered and paged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...core.text import MAX_INTEGER
from ..routing import (
    Query,
    Routes,
    integer_schema,
    query_int,
    query_list,
    query_str,
    query_time,
    text_schema,
    time_schema,
)
from ..visibility import visibility
from .common import _hub, _json

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- journal


ROUTES = Routes()
"""The routes of the journal (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


@ROUTES.route(
    "GET",
    "/api/v1/journal",
    summary="The journal, newest first, filtered and paged",
    tag="journal",
    query=[
        Query(
            "kind",
            text_schema(2000),
            "comma-separated kinds (alarm, ack, command, login...), at most 50",
        ),
        Query("device", text_schema(200), "only this device"),
        Query("user", text_schema(200), "only what this user did"),
        Query("alarm", text_schema(200), "only this alarm"),
        Query("from", time_schema("from"), "from this time (epoch ms or ISO 8601)"),
        Query("to", time_schema("to"), "before this time"),
        Query("search", text_schema(200), "text in the message or the details"),
        Query("limit", integer_schema(1, 1000, default=100), "entries per page"),
        Query(
            "before_id",
            integer_schema(1, MAX_INTEGER),
            "next page: the previous page's next_before_id",
        ),
    ],
)
async def journal(request: web.Request) -> web.StreamResponse:
    """Journal entries, newest first. Page through with ``before_id`` set to the previous
    answer's ``next_before_id`` (null on the last page)."""
    limit = query_int(request, "limit", default=100, minimum=1, maximum=1000)
    assert limit is not None
    entries = await _hub(request).store.query_journal(
        kinds=query_list(request, "kind"),
        device=query_str(request, "device"),
        user=query_str(request, "user"),
        alarm=query_str(request, "alarm"),
        since=query_time(request, "from"),
        until=query_time(request, "to"),
        search=query_str(request, "search"),
        limit=limit,
        before_id=query_int(request, "before_id", minimum=1),
        scope=visibility(request).journal_scope(),
    )
    next_before = entries[-1].id if len(entries) == limit else None
    return _json({"entries": [e.as_json() for e in entries], "next_before_id": next_before})
