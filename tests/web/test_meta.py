"""/metrics, the OpenAPI document, plugins' routes, and secrets that never leave the server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from anyio.abc import TaskStatus

from cityvisor import DeviceConfig, DeviceType, hookimpl
from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub, wait_for_point
from cityvisor.web import find_server
from cityvisor.web.api import ROUTES
from cityvisor.web.openapi import router_routes

from .conftest import CONFIG, Env, add_users

pytestmark = pytest.mark.anyio

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)\})?'
    r" (?P<value>[^ ]+)$"
)


def parse_exposition(text: str) -> dict[tuple[str, str], float]:
    """Check the Prometheus text format rules we rely on; return the samples."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        assert line, "no empty lines"
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"two TYPE lines for {name}"
            assert not any(key[0] == name for key in samples), f"TYPE after samples of {name}"
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group("name")
        assert name in types, f"{name} has no TYPE"
        if types[name] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        key = (name, match.group("labels") or "")
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(match.group("value"))
    assert set(types) == helps
    return samples


async def test_metrics_follow_the_prometheus_text_format(env: Env):
    client = await env.login("victor")
    await client.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 5}})
    async with client.http.get(env.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples = parse_exposition(text)
    assert samples[("cityvisor_points", 'quality="good"')] >= 10
    assert samples[("cityvisor_commands_total", 'outcome="refused"')] == 1
    assert ("cityvisor_alarms", 'state="unack_active"') in samples
    assert (
        samples[("cityvisor_devices", 'state="online"')]
        + samples[("cityvisor_devices", 'state="offline"')]
        == 2
    )
    assert ("cityvisor_driver_restarts_total", "") in samples
    assert samples[("cityvisor_websocket_clients", "")] == 0
    assert samples[("cityvisor_logins_total", 'result="success"')] == 1
    assert "cityvisor_point_update_rate" in {name for name, _ in samples}


async def test_metrics_take_a_bearer_token_instead_of_a_session(env: Env):
    client = env.client()
    status, _ = await client.get("/metrics")
    assert status == 401
    status, _ = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, text = await client.get(
        "/metrics", headers={"Authorization": "Bearer scrape-me-please-0123456789"}
    )
    assert status == 200 and "cityvisor_points" in text
    # The token opens /metrics only.
    status, _ = await client.get(
        "/api/v1/devices", headers={"Authorization": "Bearer scrape-me-please-0123456789"}
    )
    assert status == 401


async def test_the_openapi_document_lists_every_route_of_the_router(env: Env):
    client = await env.login("victor")
    status, document = await client.get("/api/v1/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    app = env.server.app
    assert app is not None
    served = set(router_routes(app))
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented routes the server does not have"
    history = document["paths"]["/api/v1/points/{id}/history"]["get"]
    assert {p["name"] for p in history["parameters"]} >= {"id", "from", "to", "bucket"}
    login = document["paths"]["/api/v1/session"]["post"]
    assert login["security"] == [] and "username" in str(login["requestBody"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], f"{method} {path} has no summary"
            assert operation["responses"], f"{method} {path} has no responses"


def test_every_declared_route_has_a_docstring():
    for route in ROUTES:
        assert route.description, f"{route.method} {route.path}: the handler needs a docstring"


# --------------------------------------------------------------------------- plugins


class VaultConfig(DeviceConfig):
    """A device whose config holds secrets."""

    host: str = "10.9.8.7"
    password: str = "s3cr3t-vault-password"


class Vault(DeviceType):
    """A device with a password in its config."""

    family = "vault"
    type_name = "vault.box"
    Config = VaultConfig

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Stay online; fail once with the password in a URL, as a careless HAL might."""
        if not getattr(self, "_failed", False):
            self._failed = True
            raise ConnectionError("cannot reach http://admin:s3cr3t-vault-password@10.9.8.7/")
        task_status.started()
        await anyio.sleep_forever()


class VaultPlugin:
    """A plugin with a device type and web routes."""

    @hookimpl
    def cityvisor_device_types(self) -> list[type[DeviceType]]:
        return [Vault]

    @hookimpl
    def cityvisor_web_routes(self, hub: Any) -> list[web.RouteDef]:
        async def who(request: web.Request) -> web.Response:
            """Who is asking (a plugin's page behind the session check)."""
            return web.json_response({"user": request["user"].name})

        async def poke(request: web.Request) -> web.Response:
            """A plugin's state-changing route."""
            return web.json_response({"poked": True})

        async def boom(request: web.Request) -> web.Response:
            """A plugin's bug."""
            raise RuntimeError("internal detail: /etc/cityvisor/secret.key")

        return [
            web.get("/api/v1/vault/who", who),
            web.post("/api/v1/vault/poke", poke),
            web.get("/api/v1/vault/boom", boom),
        ]


VAULT_CONFIG = (
    CONFIG
    + """
[[devices]]
id = "vault-1"
type = "vault.box"
zone = "centre"
config = { host = "10.9.8.7", password = "s3cr3t-vault-password" }
"""
)


@pytest.fixture
async def vault_env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_hub(
        VAULT_CONFIG, tmp_path, plugins=[demo, web_plugin, VaultPlugin()]
    ) as hub:
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        await add_users(hub)
        environment = Env(hub, server, server.url)
        try:
            yield environment
        finally:
            for session in environment.sessions:
                await session.close()


async def test_plugin_routes_sit_behind_the_session_and_csrf_checks(vault_env: Env):
    anonymous = vault_env.client()
    status, _ = await anonymous.get("/api/v1/vault/who")
    assert status == 401
    client = await vault_env.login("nora")
    status, body = await client.get("/api/v1/vault/who")
    assert status == 200 and body == {"user": "nora"}
    status, body = await client.post("/api/v1/vault/poke", {})
    assert status == 200
    client.csrf = None
    status, body = await client.post("/api/v1/vault/poke", {})
    assert status == 403 and body["error"] == "csrf"
    _, document = await client.get("/api/v1/openapi.json")
    assert "/api/v1/vault/who" in document["paths"]


async def test_device_secrets_never_leave_the_server(vault_env: Env):
    hub = vault_env.hub
    await wait_for_point(hub, "centre/vault/vault-1/online", lambda v: v.value is True, 10)
    client = await vault_env.login("admin")
    everything = []
    for path in (
        "/api/v1/devices",
        "/api/v1/devices/vault-1",
        "/api/v1/points?pattern=**",
        "/api/v1/site",
        "/api/v1/alarms?scope=all",
        "/api/v1/journal?limit=1000",
        "/metrics",
        "/api/v1/openapi.json",
    ):
        status, body = await client.get(path)
        assert status == 200, path
        everything.append(str(body))
    text = "\n".join(everything)
    assert "s3cr3t-vault-password" not in text
    assert "10.9.8.7" not in text.replace("***:***@10.9.8.7", "")
    _, vault = await client.get("/api/v1/devices/vault-1")
    assert "***:***@" in vault["communication"]["last_error"]


async def test_a_bug_is_a_logged_500_without_details(
    vault_env: Env, caplog: pytest.LogCaptureFixture
):
    client = await vault_env.login("victor")
    status, body = await client.get("/api/v1/vault/boom")
    assert status == 500
    assert body == {
        "error": "internal_error",
        "message": "internal error; the server log has details",
    }
    assert "secret.key" not in str(body)
    assert "internal detail" in caplog.text  # the traceback is in the server's log
    status, _ = await client.get("/api/v1/devices")
    assert status == 200
