"""Logging in and out, sessions, 401 everywhere, CSRF, origin checks, rate limits, headers."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from cityvisor.web.api import ROUTES
from cityvisor.web.api import pages as web_pages
from cityvisor.web.openapi import router_routes

from .conftest import PASSWORD, Env

pytestmark = pytest.mark.anyio


def concrete(path: str) -> str:
    """A path with its parameters filled in (``{id}`` -> ``x``, ``{id:.+}`` -> ``x/y``)."""
    path = re.sub(r"\{\w+:[^}]+\}", "x/y", path)
    return re.sub(r"\{\w+\}", "x", path)


PUBLIC = {(r.method, r.path) for r in ROUTES if r.auth == "public"}
PRIVATE = [r for r in ROUTES if r.auth != "public"]


async def test_login_whoami_logout(env: Env):
    client = env.client()
    body = await client.login("olivia")
    assert body["user"] == {"name": "olivia", "role": "operator", "zones": ["centre"]}
    assert len(body["csrf_token"]) >= 32
    status, me = await client.get("/api/v1/session")
    assert status == 200 and me["user"]["name"] == "olivia"
    assert me["csrf_token"] == body["csrf_token"]
    status, _ = await client.delete("/api/v1/session")
    assert status == 204
    status, error = await client.get("/api/v1/session")
    assert status == 401 and error["error"] == "unauthenticated"
    entries = await env.hub.store.query_journal(kinds=["login", "logout"], user="olivia")
    assert [e.kind for e in entries] == ["logout", "login"]


async def test_the_session_cookie_is_httponly_and_samesite_strict(env: Env):
    client = env.client()
    async with client.http.post(
        env.url + "/api/v1/session", json={"username": "victor", "password": PASSWORD}
    ) as response:
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # secure_cookies is off in the test config


async def test_the_config_role_wins_over_the_table(env: Env):
    client = await env.login("sam")
    _, me = await client.get("/api/v1/session")
    assert me["user"]["role"] == "supervisor"


async def test_a_wrong_password_is_refused_journaled_and_never_stored(env: Env):
    client = env.client()
    wrong = "not-the-password-42"
    status, body = await client.post("/api/v1/session", {"username": "olivia", "password": wrong})
    assert status == 401 and body["error"] == "bad_credentials"
    status, unknown = await client.post(
        "/api/v1/session", {"username": "nobody", "password": wrong}
    )
    assert status == 401 and unknown["message"] == body["message"]
    entries = await env.hub.store.query_journal(kinds=["login_failed"])
    assert {e.user for e in entries} == {"olivia", "nobody"}
    everything = await env.hub.store.query_journal(limit=10_000)
    assert all(wrong not in str(e.as_json()) for e in everything)
    assert all(PASSWORD not in str(e.as_json()) for e in everything)


async def test_logins_are_rate_limited_per_user_name(env: Env):
    client = env.client()
    for _ in range(env.state.limiter.per_user):
        status, _ = await client.post("/api/v1/session", {"username": "nora", "password": "x" * 9})
        assert status == 401
    status, body = await client.post("/api/v1/session", {"username": "nora", "password": PASSWORD})
    assert status == 429 and body["error"] == "too_many_attempts"
    # Another name from the same address is still let in (the address limit is higher).
    await client.login("olivia")
    limited = await env.hub.store.query_journal(kinds=["login_failed"], search="rate_limited")
    assert len(limited) == 1


async def test_logins_are_rate_limited_per_address(env: Env):
    env.state.limiter.per_address = 3
    client = env.client()
    for name in ("a1", "a2", "a3"):
        status, _ = await client.post("/api/v1/session", {"username": name, "password": "x" * 9})
        assert status == 401
    status, _response = await client.request(
        "POST", "/api/v1/session", {"username": "olivia", "password": PASSWORD}
    )
    assert status == 429


async def test_bad_login_bodies_are_4xx_with_a_message(env: Env):
    client = env.client()
    for body, expected in (
        ("not json", 400),
        ([1, 2], 422),
        ({"username": "olivia"}, 422),
        ({"username": 3, "password": PASSWORD}, 422),
        ({"username": "olivia", "password": PASSWORD, "extra": 1}, 422),
    ):
        if isinstance(body, str):
            status, answer = await client.request(
                "POST", "/api/v1/session", data=body, headers={"Content-Type": "application/json"}
            )
        else:
            status, answer = await client.post("/api/v1/session", body)
        assert status == expected, (body, answer)
        assert set(answer) >= {"error", "message"}


async def test_the_html_form_logs_in_without_javascript(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # The placeholder page: what is served when the screens are not installed.
    monkeypatch.setattr(web_pages, "STATIC_ROOT", tmp_path)
    client = env.client()
    status, page = await client.get("/")
    assert status == 200 and 'action="/api/v1/session"' in page
    async with client.http.post(
        env.url + "/api/v1/session",
        data={"username": "olivia", "password": PASSWORD},
        headers={"Origin": env.url},
        allow_redirects=False,
    ) as response:
        assert response.status == 303 and response.headers["Location"] == "/"
    status, page = await client.get("/")
    assert "olivia" in page
    async with client.http.post(
        env.url + "/api/v1/session",
        data={"username": "olivia", "password": "wrong password"},
        headers={"Origin": env.url},
        allow_redirects=False,
    ) as response:
        assert response.headers["Location"] == "/?login=failed"


@pytest.mark.parametrize("route", PRIVATE, ids=[f"{r.method} {r.path}" for r in PRIVATE])
async def test_every_route_but_login_answers_401_without_a_session(env: Env, route):
    client = env.client()
    status, body = await client.request(route.method, concrete(route.path), {})
    assert status == 401, body
    assert body["error"] == "unauthenticated"


async def test_every_route_of_the_running_app_needs_a_session(env: Env):
    """Enumerates the live router: routes added later (plugins' too) are covered."""
    client = env.client()
    app = env.server.app
    assert app is not None
    checked = 0
    for method, path in router_routes(app):
        if (method, path) in {(m, re.sub(r"\{(\w+):[^}]+\}", r"{\1}", p)) for m, p in PUBLIC}:
            continue
        status, _ = await client.request(method, concrete(path), {})
        assert status == 401, f"{method} {path} answered {status} without a session"
        checked += 1
    assert checked >= len(PRIVATE)


async def test_an_unknown_route_is_401_without_a_session_and_404_with_one(env: Env):
    client = env.client()
    status, _ = await client.get("/api/v1/nothing-here")
    assert status == 401
    await client.login("victor")
    status, body = await client.get("/api/v1/nothing-here")
    assert status == 404 and body["error"] == "not_found"


async def test_a_change_without_the_csrf_token_is_refused(env: Env):
    client = await env.login("olivia")
    token, client.csrf = client.csrf, None
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 30}}
    )
    assert status == 403 and body["error"] == "csrf"
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level",
        {"arguments": {"setpoint": 30}},
        headers={"X-CSRF-Token": "forged"},
    )
    assert status == 403 and body["error"] == "csrf"
    client.csrf = token
    status, body = await client.delete("/api/v1/session")
    assert status == 204
    commands = await env.hub.store.query_journal(kinds=["command"])
    assert commands == []


async def test_a_change_from_another_site_is_refused_even_with_the_token(env: Env):
    client = await env.login("olivia")
    client.origin = "http://evil.example"
    status, body = await client.delete("/api/v1/session")
    assert status == 403 and body["error"] == "bad_origin"
    status, body = await client.post(
        "/api/v1/session", {"username": "olivia", "password": PASSWORD}
    )
    assert status == 403 and body["error"] == "bad_origin"


async def test_a_request_without_origin_still_needs_the_token(env: Env):
    client = await env.login("victor")
    async with client.http.delete(env.url + "/api/v1/session") as response:
        assert response.status == 403
    async with client.http.delete(
        env.url + "/api/v1/session", headers={"X-CSRF-Token": client.csrf or ""}
    ) as response:
        assert response.status == 204


async def test_security_headers_are_on_every_answer(env: Env):
    client = env.client()
    for path in ("/", "/api/v1/devices"):
        async with client.http.get(env.url + path) as response:
            headers = response.headers
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Server"] == "cityvisor"


async def test_static_files_are_public_and_cannot_escape_their_folder(env: Env):
    client = env.client()
    status, body = await client.get("/static/..%2F..%2Fcore%2Fconfig.py")
    assert status == 404
    status, body = await client.get("/static/nothing.js")
    assert status == 404 and body["error"] == "not_found"


async def test_a_session_ends_when_the_password_changes(env: Env):
    client = await env.login("nora")
    env.state.sessions.recheck = 0.0
    await env.state.accounts.set_password("nora", "a brand new password")
    status, _ = await client.get("/api/v1/session")
    assert status == 401


async def test_a_session_expires_when_unused(env: Env):
    client = await env.login("nora")
    env.state.sessions.lifetime = 0.001
    status, _ = await client.get("/api/v1/devices")
    assert status == 401


async def test_a_cookie_that_is_not_a_session_is_refused(env: Env):
    async with (
        aiohttp.ClientSession() as http,
        http.get(env.url + "/api/v1/session", cookies={"cityvisor_session": "x" * 43}) as response,
    ):
        assert response.status == 401
