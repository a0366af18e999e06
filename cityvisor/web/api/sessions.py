"""Sessions: log in (JSON or the HTML form), who am I, log out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

from ...core.store import JournalEntry
from ..auth import MAX_PASSWORD, MAX_USER_NAME
from ..routing import (
    PUBLIC,
    ApiError,
    Fields,
    Routes,
    json_body,
    text_schema,
)
from ..state import STATE
from .common import _hub, _json

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- session

ROUTES = Routes()
"""The routes of the session (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


_USER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "role": {"enum": ["viewer", "operator", "supervisor", "admin"]},
        "zones": {"type": "array", "items": {"type": "string"}},
    },
}


_SESSION_SCHEMA = {
    "type": "object",
    "properties": {
        "user": _USER_SCHEMA,
        "csrf_token": {"type": "string", "description": "send it as X-CSRF-Token"},
        "created_ms": {"type": "integer"},
        "expires_ms": {"type": "integer"},
        "session_lifetime_s": {"type": "number"},
    },
}


def _session_json(request: web.Request, session: Any) -> dict[str, Any]:
    lifetime = request.app[STATE].settings.session_lifetime
    user = session.user
    return {
        "user": {"name": user.name, "role": str(user.role), "zones": sorted(user.zones)},
        "csrf_token": session.csrf,
        "created_ms": session.created_ms,
        "expires_ms": session.expires_ms(lifetime),
        "session_lifetime_s": lifetime,
    }


@ROUTES.route(
    "POST",
    "/api/v1/session",
    summary="Log in",
    auth=PUBLIC,
    tag="session",
    body={
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": text_schema(MAX_USER_NAME, min_length=1),
            "password": text_schema(MAX_PASSWORD),
        },
    },
    responses={
        200: "logged in: the session cookie is set; the body has the CSRF token",
        303: "logged in or refused, from the HTML form: back to the page",
        401: "wrong user name or password",
        429: "too many failed attempts for this name or from this address (Retry-After)",
    },
    response_schema=_SESSION_SCHEMA,
)
async def login(request: web.Request) -> web.StreamResponse:
    """Log in with a user name and a password (JSON, or an HTML form).

    Sets the session cookie (HttpOnly, SameSite=Strict, Secure when
    ``[web] secure_cookies``) and returns the CSRF token that every
    state-changing request must carry in ``X-CSRF-Token``. Failed attempts
    are limited per user name and per client address; logins and failures
    are journaled (never the password).
    """
    state = request.app[STATE]
    hub = _hub(request)
    form = request.content_type == "application/x-www-form-urlencoded"
    if form:
        try:
            data = await request.post()
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "bad_form", "the form is not UTF-8 text") from None
        body: dict[str, Any] = {k: v for k, v in data.items() if isinstance(v, str)}
    else:
        body = await json_body(request)
    fields = Fields(body, allowed=["username", "password"])
    name = fields.text("username", required=True, max_length=MAX_USER_NAME, nonempty=True) or ""
    password = fields.text("password", required=True, max_length=MAX_PASSWORD, strip=False) or ""
    fields.done()
    address = request.remote or ""
    wait = state.limiter.retry_after(name, address)
    if wait > 0:
        if state.limiter.refuse(name, address):
            await hub.store.journal(
                JournalEntry(
                    kind="login_failed",
                    message=f"login of {name} refused: too many failed attempts",
                    user=name,
                    data={"reason": "rate_limited", "address": address},
                )
            )
        state.counters["login_rate_limited"] += 1
        retry = str(max(1, round(wait)))
        if form:
            return _see_other("/?login=limited")
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed attempts: try again in {retry} s",
            headers={hdrs.RETRY_AFTER: retry},
        )
    account = await state.accounts.authenticate(name, password)
    if account is None:
        state.limiter.failed(name, address)
        state.counters["login_failed"] += 1
        await hub.store.journal(
            JournalEntry(
                kind="login_failed",
                message=f"failed login as {name}",
                user=name,
                data={"reason": "bad_credentials", "address": address},
            )
        )
        if form:
            return _see_other("/?login=failed")
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    state.limiter.succeeded(name)
    session = await state.sessions.create(account, address)
    state.counters["login"] += 1
    await hub.store.journal(
        JournalEntry(
            kind="login",
            message=f"{name} logged in",
            user=name,
            data={"address": address, "role": str(account.role), "zones": sorted(account.zones)},
        )
    )
    response = _see_other("/") if form else _json(_session_json(request, session))
    response.set_cookie(
        state.cookie_name,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=state.settings.secure_cookies,
        path="/",
    )
    return response


def _see_other(location: str) -> web.Response:
    """Back to the page after the HTML form's login (no JavaScript needed)."""
    return web.Response(status=303, headers={hdrs.LOCATION: location})


@ROUTES.route(
    "GET", "/api/v1/session", summary="Who am I", tag="session", response_schema=_SESSION_SCHEMA
)
async def whoami(request: web.Request) -> web.StreamResponse:
    """The logged-in user (name, role, zones), the session's CSRF token and its expiry."""
    return _json(_session_json(request, request["session"]))


@ROUTES.route(
    "DELETE",
    "/api/v1/session",
    summary="Log out",
    tag="session",
    responses={204: "logged out; the cookie is cleared"},
)
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (journaled) and clear its cookie."""
    state = request.app[STATE]
    session = request["session"]
    await state.sessions.end(session)
    await _hub(request).store.journal(
        JournalEntry(
            kind="logout",
            message=f"{session.account.name} logged out",
            user=session.account.name,
            data={"address": request.remote or ""},
        )
    )
    response = web.Response(status=204)
    response.del_cookie(state.cookie_name, path="/")
    return response
