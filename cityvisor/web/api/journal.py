"""The journal: alarm transitions, acknowledgements, commands and logins, filtered and paged."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from ...core.points import now_ms
from ...core.store import verify_store
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
    from ...core.store import Store

CHAIN_STATE_MAX_AGE = 30.0
"""Seconds a walk of the chain is reused before ``GET /api/v1/journal/chain`` walks again."""


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


class _ChainCheck:
    """The last walk of one store's chain: one walk at a time, reused for a while."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.result: dict[str, Any] | None = None
        self.when = 0.0

    async def state(self, store: Store) -> dict[str, Any]:
        async with self.lock:
            if self.result is None or time.monotonic() - self.when > CHAIN_STATE_MAX_AGE:
                state = await verify_store(store)
                self.result = {**state.as_json(), "checked_at": now_ms()}
                self.when = time.monotonic()
            return self.result


_CHECKS: weakref.WeakKeyDictionary[Any, _ChainCheck] = weakref.WeakKeyDictionary()


@ROUTES.route(
    "GET",
    "/api/v1/journal/chain",
    summary="Whether the journal's hash chain holds, and where it breaks",
    tag="journal",
)
async def journal_chain(request: web.Request) -> web.StreamResponse:
    """The state of the journal's hash chain: ``ok``, ``rows`` checked, ``head_id``,
    ``head_hash``, ``broken`` (null, or the first broken row's ``id`` and ``reason``) and
    ``checked_at`` (epoch ms; a walk is reused for 30 s)."""
    hub = _hub(request)
    check = _CHECKS.setdefault(hub, _ChainCheck())
    return _json(await check.state(hub.store))
