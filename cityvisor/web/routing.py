"""Route declarations, API errors and the checking of what a client sends.

Every route of the core API is declared once with :meth:`Routes.route`,
with what the OpenAPI document needs (summary, query parameters, body
schema, answers) next to the handler, so the document and the router
cannot drift apart. Handlers raise :class:`ApiError` for a client's mistake;
the error middleware turns it into ``{"error": code, "message": ...}``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "ApiError",
    "Query",
    "Route",
    "Routes",
    "json_body",
    "parse_duration_ms",
    "parse_time_ms",
    "query_int",
    "query_list",
    "query_str",
    "query_time",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = "public"
"""Answered without a session (login, the login page and its static assets)."""
SESSION = "session"
"""Needs a logged-in session (the default)."""
METRICS = "metrics"
"""Needs a session, or the ``[web] metrics_token`` as a bearer token."""


class ApiError(Exception):
    """A client's mistake, answered with ``status`` and ``{"error": code, "message": ...}``.

    ``problems`` lists every problem found in a request's body or query, so a
    client can fix them all at once.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})
        self.extra = extra

    def as_json(self) -> dict[str, Any]:
        """The error as the API returns it."""
        body: dict[str, Any] = {"error": self.code, "message": self.message, **self.extra}
        if self.problems:
            body["problems"] = self.problems
        return body


def invalid(problems: Sequence[str]) -> ApiError:
    """A 422 listing every problem of a request."""
    return ApiError(422, "invalid_request", "; ".join(problems), problems=problems)


@dataclass(frozen=True)
class Query:
    """A documented query parameter."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One route of the API, with its documentation."""

    method: str
    path: str
    """The aiohttp path (``/api/v1/points/{id:.+}/history``)."""
    handler: Handler
    summary: str
    auth: str = SESSION
    query: tuple[Query, ...] = ()
    body: Mapping[str, Any] | None = None
    """JSON schema of the request body (None: no body)."""
    responses: Mapping[int, str] = field(default_factory=dict)
    """Status -> description of the answers beyond the errors every route has."""
    response_schema: Mapping[str, Any] | None = None
    tag: str = ""

    @property
    def description(self) -> str:
        """The handler's docstring: what the route does, for the OpenAPI document."""
        return (self.handler.__doc__ or "").strip()

    @property
    def openapi_path(self) -> str:
        """The path as OpenAPI writes it (``{id:.+}`` -> ``{id}``)."""
        return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", self.path)


class Routes:
    """An ordered table of :class:`Route` declarations (like aiohttp's RouteTableDef)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        auth: str = SESSION,
        query: Sequence[Query] = (),
        body: Mapping[str, Any] | None = None,
        responses: Mapping[int, str] | None = None,
        response_schema: Mapping[str, Any] | None = None,
        tag: str = "",
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as ``method path``."""

        def decorate(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    auth,
                    tuple(query),
                    body,
                    dict(responses or {200: "OK"}),
                    response_schema,
                    tag,
                )
            )
            handler.__cityvisor_auth__ = auth  # type: ignore[attr-defined]
            return handler

        return decorate

    def __iter__(self) -> Any:
        return iter(self.routes)


# --------------------------------------------------------------------------- bodies


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; ``{}`` for an empty body when not ``required``."""
    if not request.body_exists:
        if required:
            raise ApiError(400, "missing_body", "this request needs a JSON object as its body")
        return {}
    try:
        text = await request.text()
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "the body is not UTF-8 text") from None
    if not text.strip():
        if required:
            raise ApiError(400, "missing_body", "this request needs a JSON object as its body")
        return {}
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    return body


class Fields:
    """Reads the fields of a JSON body, collecting every problem before raising.

    ::

        fields = Fields(body)
        comment = fields.text("comment", default="", max_length=1000)
        duration = fields.number("duration", minimum=0, exclusive=True)
        fields.done()          # raises one 422 listing every problem
    """

    def __init__(self, body: Mapping[str, Any], allowed: Sequence[str] | None = None) -> None:
        self.body = body
        self.problems: list[str] = []
        if allowed is not None:
            unknown = sorted(set(body) - set(allowed))
            if unknown:
                self.problems.append("unknown field(s): " + ", ".join(unknown))

    def text(
        self,
        name: str,
        *,
        default: str | None = None,
        required: bool = False,
        max_length: int = 1000,
        strip: bool = True,
        nonempty: bool = False,
    ) -> str | None:
        """A string field (None when absent and no default)."""
        value = self.body.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return default
        if not isinstance(value, str):
            self.problems.append(f"{name} must be a string")
            return default
        if strip:
            value = value.strip()
        if len(value) > max_length:
            self.problems.append(f"{name} must be at most {max_length} characters")
            return default
        if nonempty and not value:
            self.problems.append(f"{name} must not be empty")
        return value

    def number(
        self,
        name: str,
        *,
        default: float | None = None,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
    ) -> float | None:
        """A number field (bools refused)."""
        value = self.body.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.problems.append(f"{name} must be a number")
            return default
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            relation = ">" if exclusive_minimum else ">="
            self.problems.append(f"{name} must be {relation} {minimum:g}")
            return default
        if maximum is not None and value > maximum:
            self.problems.append(f"{name} must be <= {maximum:g}")
            return default
        return float(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        """A true/false field."""
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.append(f"{name} must be true or false")
            return default
        return value

    def time_ms(
        self, name: str, *, default: int | None = None, required: bool = False
    ) -> int | None:
        """A time: epoch milliseconds or an ISO 8601 string."""
        value = self.body.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return default
        try:
            return parse_time_ms(value)
        except ValueError as error:
            self.problems.append(f"{name}: {error}")
            return default

    def mapping(self, name: str, *, default: Mapping[str, Any] | None = None) -> Any:
        """An object field, passed on as is (the command bus checks its content)."""
        value = self.body.get(name)
        if value is None:
            return {} if default is None else default
        return value

    def done(self) -> None:
        """Raise one 422 listing every problem found so far."""
        if self.problems:
            raise invalid(self.problems)


# --------------------------------------------------------------------------- query strings


def query_str(request: web.Request, name: str, *, max_length: int = 200) -> str | None:
    """A query parameter, or None when absent or empty."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_length:
        raise invalid([f"{name} must be at most {max_length} characters"])
    return value


def query_list(request: web.Request, name: str) -> list[str] | None:
    """A comma-separated (or repeated) query parameter as a list, or None when absent."""
    values = [v for raw in request.query.getall(name, []) for v in raw.split(",") if v.strip()]
    return [v.strip() for v in values] or None


def query_int(
    request: web.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer query parameter within bounds."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid([f"{name} must be an integer, not {value[:40]!r}"]) from None
    if minimum is not None and number < minimum:
        raise invalid([f"{name} must be >= {minimum}"])
    if maximum is not None and number > maximum:
        raise invalid([f"{name} must be <= {maximum}"])
    return number


def query_time(request: web.Request, name: str) -> int | None:
    """A time query parameter (epoch milliseconds or ISO 8601), or None when absent."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_time_ms(value)
    except ValueError as error:
        raise invalid([f"{name}: {error}"]) from None


def parse_time_ms(value: Any) -> int:
    """Epoch milliseconds from an integer (or its text) or an ISO 8601 date-time.

    An ISO time without an offset is taken as UTC (the API speaks UTC).
    """
    if isinstance(value, bool):
        raise ValueError("expected epoch milliseconds or an ISO 8601 time")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d{1,16}", text):
            return int(text)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return int(moment.timestamp() * 1000)
    raise ValueError(f"expected epoch milliseconds or an ISO 8601 time, not {str(value)[:40]!r}")


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(value: str) -> int:
    """``"500"`` (ms), ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> milliseconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*", value)
    if not match:
        raise ValueError(f"expected a duration such as 500, 30s, 5m, 1h or 1d, not {value[:40]!r}")
    amount = float(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]
    return int(amount)
