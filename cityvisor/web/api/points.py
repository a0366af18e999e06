"""Points: current values by pattern, and history (raw or bucketed trends)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from aiohttp import web

from ...core.patterns import MAX_LENGTH, MAX_WILDCARDS, PatternError, compile_pattern
from ...core.points import UnknownPointError, now_ms
from ...core.store import TrendBucket
from ..routing import (
    Query,
    Routes,
    integer_schema,
    invalid,
    parse_duration_ms,
    query_int,
    query_str,
    query_time,
    text_schema,
    time_schema,
)
from ..visibility import visibility
from .common import _hub, _json
from .devices import _point_json

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- points


ROUTES = Routes()
"""The routes of the points (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


LISTING_CHUNK = 500
"""Points encoded and written in one step of a listing (a few ms), before the loop gets a turn."""


@ROUTES.route(
    "GET",
    "/api/v1/points",
    summary="Points matching a glob pattern, with their current values, a page at a time",
    tag="points",
    query=[
        Query(
            "pattern",
            text_schema(MAX_LENGTH, default="**"),
            "glob over point ids: * within a level, ** as a level: any levels; "
            f"at most {MAX_WILDCARDS} wildcards",
        ),
        Query(
            "limit",
            integer_schema(1, 100_000, default=10_000),
            "most points in this page",
        ),
        Query(
            "cursor",
            text_schema(1000),
            "the `next` of the previous page: the listing goes on after it",
        ),
    ],
)
async def points(request: web.Request) -> web.StreamResponse:
    """Points whose id matches ``pattern`` (``centre/demo/**``), with value, quality
    and timestamps, a page of at most ``limit`` at a time, branch by branch.

    ``truncated`` says that more points follow: ask again with ``cursor`` set
    to the page's ``next`` (the id of its last point). The page is streamed
    as it is encoded, so a listing of the whole city holds nothing else up.
    """
    hub = _hub(request)
    pattern = query_str(request, "pattern", max_length=MAX_LENGTH) or "**"
    limit = query_int(request, "limit", default=10_000, minimum=1, maximum=100_000)
    assert limit is not None
    cursor = query_str(request, "cursor", max_length=1000)
    try:
        compiled = compile_pattern(pattern)
    except PatternError as error:
        raise invalid([f"pattern: {error}"]) from None
    if cursor is not None and not compiled.matches(cursor):
        raise invalid([f"cursor: {cursor!r} is not a point of pattern {pattern!r}"])
    seen = visibility(request)
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    await response.write(b'{"points":[')
    count = 0
    examined = 0
    last: str | None = None
    truncated = False
    chunk: list[str] = []
    for point in hub.points.iterate(compiled, after=cursor):
        examined += 1
        if examined % LISTING_CHUNK == 0:
            await _write(response, chunk, count - len(chunk))
            chunk = []
        if not seen.sees_point(point):
            continue
        if count >= limit:
            truncated = True
            break
        chunk.append(_dumps(_point_json(point)))
        last = point.id
        count += 1
    await _write(response, chunk, count - len(chunk))
    tail = {"truncated": truncated, "next": last if truncated else None, "count": count}
    await response.write(b"]," + _dumps(tail)[1:].encode())
    await response.write_eof()
    return response


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


async def _write(response: web.StreamResponse, chunk: list[str], before: int) -> None:
    """Write encoded points (after ``before`` already written), then give the loop a turn."""
    if chunk:
        text = ",".join(chunk)
        await response.write((("," if before else "") + text).encode())
    await anyio.lowlevel.checkpoint()


@ROUTES.route(
    "GET",
    "/api/v1/points/{id:.+}/history",
    summary="A point's history: raw values, or min/max/avg per bucket",
    tag="points",
    query=[
        Query(
            "from", time_schema("start"), "start (epoch ms or ISO 8601; default: 24 h before `to`)"
        ),
        Query("to", time_schema("end"), "end, excluded (default: now)"),
        Query(
            "bucket",
            text_schema(40),
            "bucket width: ms, or 500ms, 30s, 5m, 1h, 1d (at most 36600 d); absent: raw values",
        ),
        Query("limit", integer_schema(1, 10_000, default=10_000), "most rows returned"),
    ],
    responses={200: "OK", 404: "unknown point", 422: "bad range or bucket"},
)
async def history(request: web.Request) -> web.StreamResponse:
    """History of one point. Point ids contain slashes: put the id in the path as it
    is (``/api/v1/points/centre/demo/tank-a/level/history``) or percent-encoded.

    With ``bucket``, good-quality values are aggregated per bucket (min, max,
    avg, last; empty buckets are left out); without it, raw values come with
    their quality. At most 10,000 buckets per query.
    """
    hub = _hub(request)
    point_id = request.match_info["id"]
    point = hub.points.get(point_id)
    if not visibility(request).sees_point(point):
        raise UnknownPointError(point_id)
    end = query_time(request, "to")
    end = now_ms() + 1 if end is None else end
    start = query_time(request, "from")
    start = end - 86_400_000 if start is None else start
    limit = query_int(request, "limit", default=10_000, minimum=1, maximum=10_000)
    assert limit is not None
    if end <= start:
        raise invalid(["to must be after from"])
    bucket_text = query_str(request, "bucket")
    bucket_ms: int | None = None
    if bucket_text is not None:
        try:
            bucket_ms = parse_duration_ms(bucket_text)
        except ValueError as error:
            raise invalid([f"bucket: {error}"]) from None
        if bucket_ms <= 0:
            raise invalid(["bucket must be at least 1 ms"])
        if (end - start) / bucket_ms > 10_000:
            raise invalid(["more than 10000 buckets: widen the bucket or narrow the range"])
        if not point.spec.dtype.numeric:
            raise invalid([f"{point_id} holds text: it has no min/max/avg, ask without bucket"])
    # What was measured a moment ago belongs on the trend too.
    await hub.store.flush_history()
    rows = await hub.store.history(point_id, start, end, bucket_ms=bucket_ms, limit=limit)
    body: dict[str, Any] = {"point": point_id, "from": start, "to": end, "bucket_ms": bucket_ms}
    if bucket_ms is None:
        body["values"] = [r.as_json() for r in rows if not isinstance(r, TrendBucket)]
    else:
        body["buckets"] = [
            {
                "start": r.start,
                "count": r.count,
                "min": r.minimum,
                "max": r.maximum,
                "avg": r.average,
                "last": r.last,
            }
            for r in rows
            if isinstance(r, TrendBucket)
        ]
    return _json(body)
