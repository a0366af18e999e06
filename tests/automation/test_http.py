"""The rules over the real HTTP server: listing, enabling and disabling, who may."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cityvisor import hookimpl
from cityvisor.plugins import automation, demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub, send_command, wait_for_point
from cityvisor.web.api.site import plugin_pages

from ..web.conftest import Env
from .conftest import LEVEL_A, firings, running_web, write_config

pytestmark = pytest.mark.anyio

RULES = f"""
[[rule]]
name = "tank-a-high"
description = "Tank A high"
when = "{LEVEL_A} > 80"

[[rule.then]]
notify = "Tank A is high"
"""


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp needs asyncio."""
    return "asyncio"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    path = write_config(tmp_path, RULES, extra='[web]\nhost = "127.0.0.1"\nport = 0\n')
    async with running_web(path, tmp_path) as environment:
        yield environment


async def level(env: Env, setpoint: float) -> None:
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    assert (await send_command(env.hub, "tank-a", "set_level", setpoint=setpoint)).ok
    await wait_for_point(env.hub, LEVEL_A, lambda v: abs(v.value - setpoint) < 0.5)


async def test_list_disable_enable_journaled_and_only_by_a_supervisor(env: Env) -> None:
    status, _ = await env.client().get("/api/v1/automation/rules")
    assert status == 401
    olivia = await env.login("olivia")
    status, body = await olivia.get("/api/v1/automation/rules")
    assert status == 200
    [rule] = body["rules"]
    assert (rule["name"], rule["enabled"], rule["last_fired_ts"]) == ("tank-a-high", True, None)
    status, body = await olivia.post("/api/v1/automation/rules/tank-a-high/disable", {})
    assert status == 403, body
    assert "supervisor" in body["message"]

    sue = await env.login("sue")
    status, body = await sue.post("/api/v1/automation/rules/nope/disable", {})
    assert status == 404
    status, body = await sue.post("/api/v1/automation/rules/tank-a-high/disable", {"comment": 12})
    assert status == 422
    status, body = await sue.post(
        "/api/v1/automation/rules/tank-a-high/disable", {"comment": "works on the tank"}
    )
    assert status == 200 and body["enabled"] is False
    await level(env, 90)
    await anyio.sleep(0.3)
    assert await firings(env.hub, "tank-a-high") == []

    # Enabled while the condition holds: it waits for the next onset.
    status, body = await sue.post("/api/v1/automation/rules/tank-a-high/enable")
    assert status == 200 and body["enabled"] is True
    await anyio.sleep(0.3)
    assert await firings(env.hub, "tank-a-high") == []
    await level(env, 50)
    await level(env, 90)
    await anyio.sleep(0.3)
    status, body = await olivia.get("/api/v1/automation/rules/tank-a-high")
    assert status == 200
    assert body["fired"] == 1 and body["last_fired_ts"] is not None
    assert body["last_values"][LEVEL_A] > 80

    switches = await env.hub.store.query_journal(kinds=["rule"], user="sue")
    assert [e.message for e in reversed(switches)] == [
        "rule tank-a-high disabled: works on the tank",
        "rule tank-a-high enabled",
    ]


async def test_the_screens_are_in_the_hmi_navigation_and_need_a_session(env: Env) -> None:
    status, _ = await env.client().get("/plugins/automation/rules")
    assert status == 401
    olivia = await env.login("olivia")
    status, site = await olivia.get("/api/v1/site")
    assert status == 200
    assert [(p["name"], p["path"], p["label"]["en"]) for p in site["pages"]] == [
        ("automation-rules", "/plugins/automation/rules", "Rules"),
        ("automation-playbooks", "/plugins/automation/playbooks", "Playbooks"),
    ]


class _BadPages:
    """A plugin whose pages do not fit: left out, the others kept."""

    @hookimpl
    def cityvisor_web_pages(self, hub: Any) -> list[Any]:
        return [
            {"name": "x", "path": "http://elsewhere.example/", "label": {"fr": "x", "en": "x"}},
            {"name": "y", "path": "/plugins/y/", "label": {"fr": "y"}},
            "not a page",
            {"name": "z", "path": "/plugins/z/", "label": {"fr": "Zed", "en": "Zed"}},
        ]


async def test_a_page_that_does_not_fit_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path, RULES, extra='[web]\nhost = "127.0.0.1"\nport = 0\n')
    plugins = [demo, web_plugin, automation, _BadPages()]
    async with running_hub(path, tmp_path, plugins=plugins) as hub:
        assert sorted(p["name"] for p in plugin_pages(hub)) == [
            "automation-playbooks",
            "automation-rules",
            "z",
        ]
    assert sum("a page needs name" in r.message for r in caplog.records) == 3
