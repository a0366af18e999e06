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
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..core.text import MAX_INTEGER, MAX_TIME_MS, MIN_INTEGER, integer_problem, shown, text_problem

__all__ = [
    "ApiError",
    "Query",
    "Route",
    "Routes",
    "integer_schema",
    "json_body",
    "parse_duration_ms",
    "parse_time_ms",
    "query_int",
    "query_list",
    "query_str",
    "query_time",
    "text_schema",
    "time_schema",
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


# --------------------------------------------------------------------------- schemas

_ONE_LINE = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_MULTILINE = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


def text_schema(
    max_length: int, *, multiline: bool = False, min_length: int = 0, **extra: Any
) -> dict[str, Any]:
    """The JSON schema of a text field as :meth:`Fields.text` checks it (for OpenAPI)."""
    schema: dict[str, Any] = {
        "type": "string",
        "maxLength": max_length,
        "pattern": _MULTILINE if multiline else _ONE_LINE,
    }
    if min_length:
        schema["minLength"] = min_length
    return schema | extra


def time_schema(description: str) -> dict[str, Any]:
    """The JSON schema of a time: epoch milliseconds or ISO 8601, from 1970 to year 9999."""
    return {
        "type": ["integer", "string"],
        "minimum": 0,
        "maximum": MAX_TIME_MS,
        "maxLength": 64,
        "description": description,
    }


def integer_schema(
    minimum: int = MIN_INTEGER, maximum: int = MAX_INTEGER, **extra: Any
) -> dict[str, Any]:
    """The JSON schema of an integer as :func:`query_int` checks it."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum} | extra


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
    except ValueError:
        # Python refuses to read an integer of more than 4300 digits (int_max_str_digits).
        raise invalid(["a number in the body has too many digits"]) from None
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
        multiline: bool = False,
    ) -> str | None:
        """A string field (None when absent and no default), checked by
        :func:`~cityvisor.core.text.text_problem`: valid Unicode, at most
        ``max_length`` characters, no control characters (newline, carriage
        return and tab allowed when ``multiline``)."""
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
        problem = text_problem(
            name, value, max_length=max_length, multiline=multiline, min_length=int(nonempty)
        )
        if problem is not None:
            self.problems.append(problem)
            return default
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
        """A finite number field within bounds (bools refused)."""
        value = self.body.get(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems.append(f"{name} must be a number")
            return default
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float: 10**400
            number = math.inf if value > 0 else -math.inf
        if not math.isfinite(number):
            self.problems.append(f"{name} must be a finite number")
            return default
        if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
            relation = ">" if exclusive_minimum else ">="
            self.problems.append(f"{name} must be {relation} {minimum:g}")
            return default
        if maximum is not None and number > maximum:
            self.problems.append(f"{name} must be <= {maximum:g}")
            return default
        return number

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
    """A query parameter, or None when absent or empty; checked as every text is
    (:func:`~cityvisor.core.text.text_problem`)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    problem = text_problem(name, value, max_length=max_length)
    if problem is not None:
        raise invalid([problem])
    return value


def query_list(
    request: web.Request, name: str, *, max_items: int = 50, max_length: int = 100
) -> list[str] | None:
    """A comma-separated (or repeated) query parameter as a list, or None when absent."""
    values = [
        v.strip() for raw in request.query.getall(name, []) for v in raw.split(",") if v.strip()
    ]
    if len(values) > max_items:
        raise invalid([f"{name} lists at most {max_items} values"])
    problems = [p for v in values if (p := text_problem(name, v, max_length=max_length))]
    if problems:
        raise invalid(problems[:1])
    return values or None


def query_int(
    request: web.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int = MIN_INTEGER,
    maximum: int = MAX_INTEGER,
) -> int | None:
    """An integer query parameter within bounds (by default, what SQLite can hold)."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):
        raise invalid([f"{name} must be an integer, not {shown(value)}"])
    problem = integer_problem(name, int(value), minimum=minimum, maximum=maximum)
    if problem is not None:
        raise invalid([problem])
    return int(value)


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
        return _within_times(value)
    if isinstance(value, float) and value.is_integer():
        return _within_times(value)
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        if re.fullmatch(r"-?\d{1,16}", text):
            return _within_times(int(text))
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            try:
                return _within_times(moment.timestamp() * 1000)
            except OverflowError:  # year 1 minus an offset
                pass
    raise ValueError(f"expected epoch milliseconds or an ISO 8601 time, not {shown(value)}")


def _within_times(ms: float) -> int:
    """``ms`` as an integer, if it lies between 1970 and the end of year 9999."""
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(
            f"a time must lie between 0 (1970-01-01) and {MAX_TIME_MS} (9999-12-31) "
            "in epoch milliseconds"
        )
    return int(ms)


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


MAX_DURATION_MS = 100 * 366 * 86_400_000
"""The longest duration a query may give: a century."""


def parse_duration_ms(value: str) -> int:
    """``"500"`` (ms), ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> milliseconds,
    at most :data:`MAX_DURATION_MS`."""
    match = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,9})?)\s*(ms|s|min|m|h|d)?\s*", value)
    if not match:
        raise ValueError(f"expected a duration such as 500, 30s, 5m, 1h or 1d, not {shown(value)}")
    amount = float(match.group(1)) * _UNITS_MS[match.group(2) or "ms"]
    if amount > MAX_DURATION_MS:
        raise ValueError(f"a duration is at most {MAX_DURATION_MS // 86_400_000} days")
    return int(amount)
