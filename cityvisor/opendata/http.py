"""``GET /opendata/...``: the public, read-only, rate-limited, cacheable open data routes.

They are a plugin's routes (hook ``cityvisor_web_routes``) marked
:func:`~cityvisor.core.hookspecs.public`: no session, no cookie, nothing
but GET. Each client address may make ``[opendata] rate_limit`` requests a
minute (a 429 with ``Retry-After`` past it); every answer carries an
``ETag``, ``Last-Modified`` and ``Cache-Control: public, max-age=...`` and
a conditional request that matches gets a 304. A file is rendered at most
once per ``cache_seconds``, whatever the number of clients.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import hdrs, web

from cityvisor.core.hookspecs import public

from .files import CATALOGUE, FILES, Rendered, catalogue, render
from .publish import Publication, digest
from .values import LiveValues

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub

__all__ = ["OpenDataRoutes", "RateLimiter"]

log = logging.getLogger(__name__)

MAX_BUCKET_MS = 31 * 86_400_000
MIN_BUCKET_MS = 60_000
RENDER_TIMEOUT = 30.0
"""Seconds a request may wait for its file (behind the others being rendered) before a 503."""
MAX_BUCKETS = 10_000
"""Buckets one history request may span (a range and a bucket that would make more are refused)."""


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests, refilled continuously.

    Bounded: past ``max_clients`` addresses the one seen least recently is
    forgotten (it starts again with a full bucket, which only helps it).
    """

    def __init__(self, per_minute: int, *, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """Take one request's token; return 0, or the seconds to wait when there is none."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class QueryError(Exception):
    """A query the routes cannot answer: status and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": code, "message": message},
        status=status,
        headers={"Access-Control-Allow-Origin": "*", **headers},
    )


class OpenDataRoutes:
    """The routes of one hub's publication, their cache and their rate limiter."""

    def __init__(self, hub: Hub, publication: Publication) -> None:
        self.hub = hub
        self.publication = publication
        self.settings = publication.settings
        self.values = LiveValues(hub)
        self.limiter = RateLimiter(self.settings.rate_limit)
        self._cache: OrderedDict[tuple[str, str], tuple[float, Rendered, str]] = OrderedDict()
        self._journaled: set[str] = set()
        self._rendering: anyio.Lock | None = None

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes (GET, and HEAD with it)."""
        return [
            web.get("/opendata/", public(self.index)),
            web.get(f"/opendata/{CATALOGUE}", public(self.catalogue)),
            web.get("/opendata/{dataset}/{file}", public(self.file)),
        ]

    # -- handlers -------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        """The datasets and their files."""
        limited = self._limited(request)
        if limited is not None:
            return limited
        body = {
            "catalogue": f"/opendata/{CATALOGUE}",
            "datasets": {
                name: [
                    f"/opendata/{name}/{file}"
                    for file in FILES
                    if file != "aggregates.csv" or dataset.aggregates
                ]
                for name, dataset in self.publication.datasets.items()
            },
        }
        return await self._answer(request, "index", lambda: self._static(body))

    async def catalogue(self, request: web.Request) -> web.StreamResponse:
        """The DCAT-AP catalogue."""
        limited = self._limited(request)
        if limited is not None:
            return limited
        # Without base_url the links are relative (to the catalogue's own URL): never built
        # from the request's Host header, which a client chooses.
        base = self.settings.base_url.rstrip("/")

        async def build() -> Rendered:
            document = catalogue(self.publication, f"{base}/opendata")
            body = json.dumps(document, ensure_ascii=False).encode()
            created = self.publication.created
            return Rendered(body, "application/ld+json", created, self.publication.shape())

        return await self._answer(request, f"catalogue {base}", build)

    async def file(self, request: web.Request) -> web.StreamResponse:
        """One file of one dataset."""
        limited = self._limited(request)
        if limited is not None:
            return limited
        name, file = request.match_info["dataset"], request.match_info["file"]
        dataset = self.publication.datasets.get(name)
        if dataset is None:
            known = ", ".join(self.publication.datasets) or "none"
            return _error(404, "unknown_dataset", f"no dataset {name[:40]!r} (datasets: {known})")
        if file not in FILES:
            return _error(404, "unknown_file", f"no file {file[:40]!r} (files: {', '.join(FILES)})")
        try:
            options = self._options(request, file)
        except QueryError as error:
            return _error(error.status, error.code, error.message)

        async def build() -> Rendered:
            return await render(self.publication, dataset, file, self.values, **options)

        key = f"{name}/{file}?{sorted(options.items())}"
        return await self._answer(request, key, build, dataset=name)

    # -- plumbing ----------------------------------------------------------------

    def _options(self, request: web.Request, file: str) -> dict[str, Any]:
        allowed = {"entities.jsonld": {"options"}}.get(file, set())
        if file in ("history.csv", "aggregates.csv"):
            allowed = {"start", "end"} | ({"bucket"} if file == "history.csv" else set())
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            expected = ", ".join(sorted(allowed)) or "none"
            raise QueryError(
                400,
                "unknown_parameter",
                f"unknown query parameter(s) {', '.join(unknown)} for {file} (expected: {expected})",
            )
        options: dict[str, Any] = {}
        if "options" in request.query:
            value = request.query["options"]
            if value not in ("keyValues", "normalized"):
                raise QueryError(
                    400, "bad_parameter", f"options must be keyValues or normalized, not {value!r}"
                )
            options["key_values"] = value == "keyValues"
        if "start" in allowed:
            end = _time(request, "end")
            # The default range ends on the minute: one rendering serves a minute of clients.
            end = _now_ms() // 60_000 * 60_000 if end is None else end
            start = _time(request, "start")
            start = end - 86_400_000 if start is None else start
            if end <= start:
                raise QueryError(400, "bad_range", "end must be after start")
            longest = self.settings.history_days * 86_400_000
            if end - start > longest:
                raise QueryError(
                    400,
                    "range_too_long",
                    f"at most {self.settings.history_days:g} days per request",
                )
            options.update(start=start, end=end)
        if "bucket" in allowed and "bucket" in request.query:
            text = request.query["bucket"]
            try:
                seconds = int(text)
            except ValueError:
                raise QueryError(
                    400, "bad_parameter", f"bucket must be whole seconds, not {text[:40]!r}"
                ) from None
            if not MIN_BUCKET_MS <= seconds * 1000 <= MAX_BUCKET_MS:
                raise QueryError(
                    400, "bad_parameter", "bucket must be 60 s to 31 days (in seconds)"
                )
            options["bucket_ms"] = seconds * 1000
        if file == "history.csv":
            buckets = (options["end"] - options["start"]) / options.get("bucket_ms", 3_600_000)
            if buckets > MAX_BUCKETS:
                raise QueryError(
                    400,
                    "too_many_buckets",
                    f"at most {MAX_BUCKETS} buckets per request: a longer bucket or a shorter range",
                )
        return options

    def _limited(self, request: web.Request) -> web.Response | None:
        """A 429 when the client's address has used its requests of the minute."""
        wait = self.limiter.take(request.remote or "unknown")
        if wait <= 0:
            return None
        return _error(
            429,
            "too_many_requests",
            f"at most {self.settings.rate_limit} requests per minute; retry later",
            **{hdrs.RETRY_AFTER: str(max(1, math.ceil(wait)))},
        )

    async def _static(self, body: Any) -> Rendered:
        return Rendered(
            json.dumps(body).encode(), "application/json", self.publication.created, None
        )

    async def _answer(
        self,
        request: web.Request,
        key: str,
        build: Any,
        *,
        dataset: str = "",
    ) -> web.StreamResponse:
        cache_key = (key, request.path)
        if self._rendering is None:
            self._rendering = anyio.Lock()
        # One rendering at a time: the public side never takes more than its share of the
        # store (which the journal and the HMI use too), and clients that arrive while a
        # file is rendered get that rendering from the cache.
        with anyio.move_on_after(RENDER_TIMEOUT):
            async with self._rendering:
                return await self._cached(request, cache_key, build, dataset)
        log.warning("open data: %s not rendered within %g s", request.path, RENDER_TIMEOUT)
        return _error(
            503,
            "busy",
            "the data could not be prepared in time; retry later",
            **{hdrs.RETRY_AFTER: "10"},
        )

    async def _cached(
        self, request: web.Request, cache_key: tuple[str, str], build: Any, dataset: str
    ) -> web.StreamResponse:
        key = cache_key[0]
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            _, rendered, etag = cached
        else:
            rendered = await build()
            etag = '"' + hashlib.sha256(rendered.body).hexdigest()[:32] + '"'
            self._cache[cache_key] = (
                time.monotonic() + self.settings.cache_seconds,
                rendered,
                etag,
            )
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
            if dataset:
                await self._journal(dataset, key, rendered)
        headers = {
            hdrs.ETAG: etag,
            hdrs.LAST_MODIFIED: email.utils.formatdate(rendered.modified / 1000, usegmt=True),
            hdrs.CACHE_CONTROL: f"public, max-age={self.settings.cache_seconds}",
            "Access-Control-Allow-Origin": "*",
        }
        if _not_modified(request, etag, rendered.modified):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=rendered.body,
            content_type=rendered.media_type.split(";")[0],
            charset="utf-8" if "charset" in rendered.media_type else None,
            headers=headers,
        )

    async def _journal(self, dataset: str, key: str, rendered: Rendered) -> None:
        """Journal a file the first time it publishes a given set of entities and attributes."""
        shape = digest([key.split("?")[0], rendered.shape])
        if shape in self._journaled:
            return
        if len(self._journaled) > 4096:
            self._journaled.clear()
        self._journaled.add(shape)
        file = key.split("?")[0].split("/", 1)[1]
        shown: dict[str, Any] = rendered.shape if isinstance(rendered.shape, dict) else {}
        entities = shown.get("entities") or shown.get("series") or []
        await self.publication.record(
            self.hub.store,
            f"open data: {dataset}/{file} published ({len(entities)} series)",
            {"dataset": dataset, "file": file, "via": "http", "shape": shape, "published": shown},
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _time(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    text = value.strip()
    if text.lstrip("-").isdigit() and len(text) <= 16:
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            400,
            "bad_parameter",
            f"{name} must be epoch milliseconds or ISO 8601, not {text[:40]!r}",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _not_modified(request: web.Request, etag: str, modified_ms: int) -> bool:
    match = request.headers.get(hdrs.IF_NONE_MATCH)
    if match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
        return etag in tags or "*" in tags
    since = request.headers.get(hdrs.IF_MODIFIED_SINCE)
    if since:
        try:
            moment = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        return int(modified_ms / 1000) <= int(moment.timestamp())
    return False
