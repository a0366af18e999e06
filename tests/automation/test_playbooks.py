"""Playbooks through a real hub of 200 simulated tanks and its HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from cityvisor.core.users import Role, User
from cityvisor.plugins import automation
from cityvisor.testing import send_command, wait_for_point

from ..web.conftest import Env
from .conftest import running_web

pytestmark = pytest.mark.anyio

TANKS = 200


def city(concurrency: int) -> str:
    tanks = "".join(
        f'[[devices]]\nid = "t{i:03d}"\ntype = "demo.tank"\nzone = "nord"\n'
        f"config = {{ period = 0.3, fill_rate = 400, initial_level = 50 }}\n\n"
        for i in range(TANKS)
    )
    return f"""
[site]
name = "Testville"

[store]
path = "playbooks.sqlite"
flush_interval = 0.05

[web]
host = "127.0.0.1"
port = 0

[[zones]]
id = "nord"
name = "Nord"

{tanks}
[plugins.automation]
enabled = true
rules = "rules"
playbooks = "playbooks"
concurrency = {concurrency}
"""


LOWER = """
title = "Lower the north"

[[step]]
approval = "Lower every tank of the north"

[[step]]
group = "set_level"
zone = "nord"
arguments = { setpoint = 30 }
undo = { command = "set_level", arguments = { setpoint = 50 } }

[[step]]
wait = "nord/demo/t000/setpoint < 31"
timeout = 30
"""


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp needs asyncio."""
    return "asyncio"


async def start(tmp_path: Path, concurrency: int = 32) -> AsyncIterator[Env]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "lower.toml").write_text(LOWER, encoding="utf-8")
    path = tmp_path / "cityvisor.toml"
    path.write_text(city(concurrency), encoding="utf-8")
    async with running_web(path, tmp_path) as environment:
        for i in range(TANKS):
            await wait_for_point(
                environment.hub, f"nord/demo/t{i:03d}/online", lambda v: v.value is True
            )
        yield environment


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for environment in start(tmp_path):
        yield environment


async def finished(env: Env, client, run_id: int, timeout: float = 60) -> dict:
    with anyio.fail_after(timeout):
        while True:
            status, body = await client.get(f"/api/v1/automation/runs/{run_id}")
            assert status == 200
            if body["state"] in ("done", "failed", "aborted", "undone"):
                return body
            await anyio.sleep(0.2)


async def test_approval_cannot_be_bypassed_then_every_device_reports_its_outcome(env: Env) -> None:
    # One tank under maintenance: its set_level is interlocked.
    assert (await send_command(env.hub, "t007", "toggle_maintenance")).ok
    await wait_for_point(env.hub, "nord/demo/t007/maintenance", lambda v: v.value is True)

    sue = await env.login("sue")
    status, dry = await sue.get("/api/v1/automation/playbooks/lower/dry-run")
    assert status == 200
    assert [s["kind"] for s in dry["steps"]] == ["approval", "group", "wait"]
    assert len(dry["steps"][1]["targets"]) == TANKS
    assert env.hub.points.value("nord/demo/t000/setpoint").value == 50  # nothing sent

    status, run = await sue.post("/api/v1/automation/playbooks/lower/run", {})
    assert status == 201, run
    url = f"/api/v1/automation/runs/{run['id']}"
    await anyio.sleep(0.3)
    # The author cannot approve, resume past it, or confirm it as a check.
    status, body = await sue.post(f"{url}/approve", {})
    assert status == 403 and "another person" in body["message"]
    assert (await sue.post(f"{url}/resume", {}))[0] == 409
    assert (await sue.post(f"{url}/check", {}))[0] == 409
    olivia = await env.login("olivia")
    status, body = await olivia.post(f"{url}/approve", {})
    assert status == 403 and "supervisor" in body["message"]
    status, body = await sue.get(url)
    assert body["state"] == "waiting_approval" and body["steps"][1]["outcomes"] == {}
    assert env.hub.points.value("nord/demo/t001/setpoint").value == 50

    admin = await env.login("admin")
    status, body = await admin.post(f"{url}/approve", {})
    assert status == 200, body
    body = await finished(env, sue, run["id"])
    assert body["state"] == "done", body
    assert body["steps"][0]["signed_by"] == "admin"
    outcomes = body["steps"][1]["outcomes"]
    assert len(outcomes) == TANKS
    assert outcomes.pop("t007") == "refused"
    assert set(outcomes.values()) == {"succeeded"}

    # Undo: back to 50 where it was sent.
    status, body = await sue.post(f"{url}/undo", {})
    assert status == 200, body
    body = await finished(env, sue, run["id"])
    assert body["state"] == "undone"
    await wait_for_point(env.hub, "nord/demo/t001/setpoint", lambda v: v.value == 50)
    journal = await env.hub.store.query_journal(kinds=["playbook"], limit=50)
    messages = [e.message for e in reversed(journal)]
    assert messages[0].startswith("playbook lower started")
    assert any(m.startswith("playbook lower done") for m in messages)


async def test_abort_mid_run_leaves_nothing_half_sent(tmp_path: Path) -> None:
    async for env in start(tmp_path, concurrency=2):
        sue = await env.login("sue")
        admin = await env.login("admin")
        status, run = await sue.post("/api/v1/automation/playbooks/lower/run", {})
        url = f"/api/v1/automation/runs/{run['id']}"
        await anyio.sleep(0.2)
        assert (await admin.post(f"{url}/approve", {}))[0] == 200
        with anyio.fail_after(20):
            while True:
                _, body = await sue.get(url)
                if len(body["steps"][1]["outcomes"]) >= 4:
                    break
                await anyio.sleep(0.05)
        status, body = await sue.post(f"{url}/abort", {})
        assert status == 200
        body = await finished(env, sue, run["id"])
        assert body["state"] == "aborted"
        outcomes = body["steps"][1]["outcomes"]
        assert len(outcomes) == TANKS
        assert "sending" not in outcomes.values()
        sent = {d for d, o in outcomes.items() if o != "not_sent"}
        assert 4 <= len(sent) < TANKS
        assert set(outcomes[d] for d in sent) == {"succeeded"}
        for device in set(outcomes) - sent:
            assert env.hub.points.value(f"nord/demo/{device}/setpoint").value == 50
        assert body["steps"][2]["outcomes"] == {}


async def test_a_run_needs_an_operator(env: Env) -> None:
    victor = await env.login("victor")
    status, _ = await victor.post("/api/v1/automation/playbooks/lower/run", {})
    assert status == 403
    assert (await victor.get("/api/v1/automation/playbooks/none/dry-run"))[0] == 404
    books = automation.playbooks(env.hub)
    assert books is not None
    with pytest.raises(PermissionError):
        books.start("lower", User("v", Role.VIEWER))
