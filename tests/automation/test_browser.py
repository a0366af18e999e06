"""The rules list and the playbook runner in a real Chromium, in French and in English."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityvisor.testing import send_command, wait_for_point

from ..web.browser_fixtures import PASSWORD, chromium_missing, launch_chromium
from ..web.conftest import Env
from .conftest import LEVEL_A, firings, running_web, write_config

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 20_000

RULES = f"""
[[rule]]
name = "tank-a-high"
description = "Tank A high"
when = "{LEVEL_A} > 80"

[[rule.then]]
notify = "Tank A is high"
"""

PLAYBOOK = """
title = "Abaisser le nord"

[[step]]
approval = "Abaisser les réservoirs du nord"

[[step]]
check = "Regarder les caméras du nord"

[[step]]
group = "set_level"
zone = "nord"
arguments = { setpoint = 30 }
undo = { command = "set_level", arguments = { setpoint = 60 } }
"""

WORDS = {
    "fr-FR": {
        "rules": "Règles d'automatisme",
        "disabled": "désactivée",
        "confirmed": "confirmé",
        "refused": "refusé",
        "done": "terminée",
        "undone": "effets annulés",
        "author": "second superviseur",
        "waiting": "attend une approbation",
        "paused": "suspendue",
    },
    "en-GB": {
        "rules": "Automation rules",
        "disabled": "disabled",
        "confirmed": "confirmed",
        "refused": "refused",
        "done": "done",
        "undone": "undone",
        "author": "second supervisor",
        "waiting": "waiting for an approval",
        "paused": "paused",
    },
}


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp needs asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _chromium_is_installed() -> None:
    missing = chromium_missing()
    if missing is not None:
        pytest.fail(f"{missing} (.ci/run installs it)")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "nord.toml").write_text(PLAYBOOK, encoding="utf-8")
    path = write_config(
        tmp_path,
        RULES,
        extra='playbooks = "playbooks"\n\n[web]\nhost = "127.0.0.1"\nport = 0\n',
    )
    async with running_web(path, tmp_path) as environment:
        yield environment


async def page_of(browser: Any, env: Env, user: str, locale: str, errors: list[str]) -> Any:
    """A page of a new browser context, logged in as ``user``, speaking ``locale``."""
    context = await browser.new_context(locale=locale, timezone_id="Europe/Paris")
    login = await context.request.post(
        env.url + "/api/v1/session",
        data={"username": user, "password": PASSWORD},
        headers={"Origin": env.url},
    )
    assert login.ok, await login.text()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page


@pytest.mark.parametrize("locale", ["fr-FR", "en-GB"])
async def test_a_supervisor_disables_a_rule_that_an_operator_may_not_touch(
    env: Env, locale: str
) -> None:
    words = WORDS[locale]
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    assert (await send_command(env.hub, "tank-a", "set_level", setpoint=90)).ok
    await wait_for_point(env.hub, LEVEL_A, lambda v: v.value > 80)
    errors: list[str] = []
    async with launch_chromium() as browser:
        operator = await page_of(browser, env, "olivia", locale, errors)
        # From the HMI's navigation to the screen.
        await operator.goto(env.url + "/")
        await operator.click(".nav a[data-page='automation-rules']")
        await operator.wait_for_url(env.url + "/plugins/automation/rules")
        # The title is filled by the page's script, in the operator's language.
        await operator.wait_for_function(
            "title => document.querySelector('h1').textContent === title", arg=words["rules"]
        )
        row = "#rules tr[data-rule='tank-a-high']"
        # The firing, with the value that fired it.
        await operator.wait_for_selector(f"{row} .last code:has-text('{LEVEL_A}')")
        assert await operator.is_disabled(f"{row} button[data-action='disable']")
        assert await operator.is_visible("#supervisor-only")
        # The server refuses it too, whatever the page shows.
        status = await operator.evaluate(
            """async () => {
                const session = await (await fetch("/api/v1/session")).json();
                const response = await fetch("/api/v1/automation/rules/tank-a-high/disable", {
                  method: "POST", body: "{}",
                  headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
                });
                return response.status;
            }"""
        )
        assert status == 403

        supervisor = await page_of(browser, env, "sue", locale, errors)
        await supervisor.goto(env.url + "/plugins/automation/rules")
        await supervisor.fill("#comment", "travaux sur le réservoir")
        await supervisor.click(f"{row} button[data-action='disable']")
        await supervisor.wait_for_selector(f"{row}[data-enabled='false']")
        assert words["disabled"] in await supervisor.text_content(f"{row} .state")
        await operator.wait_for_selector(f"{row}[data-enabled='false']")
        await supervisor.click(f"{row} button[data-action='enable']")
        await supervisor.wait_for_selector(f"{row}[data-enabled='true']")
    # The one error the console saw is the refusal the operator's page was made to ask for.
    assert errors == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ], errors
    switches = await env.hub.store.query_journal(kinds=["rule"], user="sue")
    assert [e.message for e in reversed(switches)] == [
        "rule tank-a-high disabled: travaux sur le réservoir",
        "rule tank-a-high enabled",
    ]
    assert len(await firings(env.hub, "tank-a-high")) == 1


@pytest.mark.parametrize("locale", ["fr-FR", "en-GB"])
async def test_a_playbook_dry_run_then_run_with_a_second_supervisors_approval(
    env: Env, locale: str
) -> None:
    words = WORDS[locale]
    for tank in ("tank-n1", "tank-n2"):
        await wait_for_point(env.hub, f"nord/demo/{tank}/online", lambda v: v.value is True)
    # tank-n2 under maintenance: its set_level is interlocked, and the run must say so.
    assert (await send_command(env.hub, "tank-n2", "toggle_maintenance")).ok
    await wait_for_point(env.hub, "nord/demo/tank-n2/maintenance", lambda v: v.value is True)
    errors: list[str] = []
    async with launch_chromium() as browser:
        author = await page_of(browser, env, "sue", locale, errors)
        await author.goto(env.url + "/plugins/automation/playbooks")
        row = "#playbooks tr[data-playbook='nord']"
        await author.click(f"{row} button[data-action='dry-run']")
        group = "#dry-steps li[data-kind='group']"
        await author.wait_for_selector(f"{group} li[data-target='tank-n1']")
        assert await author.locator(f"{group} li[data-target]").count() == 2
        assert env.hub.points.value("nord/demo/tank-n1/setpoint").value == 60  # nothing sent

        await author.click(f"{row} button[data-action='run']")
        await author.wait_for_selector("#run[data-state='waiting_approval']")
        approve = "#run-steps li[data-step='0'] button[data-action='approve']"
        assert await author.is_disabled(approve)
        assert words["author"] in await author.text_content("#run-steps .approval-reason")
        assert words["waiting"] in await author.text_content("#run-state")
        run_id = await author.get_attribute("#run", "data-run")

        # Paused meanwhile: the approval lets it go on to the next step, where it waits.
        await author.click("#run-controls button[data-action='pause']")
        await author.wait_for_selector("#run-controls button[data-action='resume']")

        second = await page_of(browser, env, "admin", locale, errors)
        await second.goto(env.url + "/plugins/automation/playbooks")
        await second.click(f"#runs tr[data-run='{run_id}'] button[data-action='show']")
        await second.click(approve)
        await author.wait_for_selector("#run[data-state='paused']")
        assert words["paused"] in await author.text_content("#run-state")
        await author.click("#run-controls button[data-action='resume']")
        await author.wait_for_selector("#run[data-state='waiting_check']")
        assert "admin" in await author.text_content("#run-steps li[data-step='0'] .signed")

        await author.click("#run-steps li[data-step='1'] button[data-action='check']")
        await author.wait_for_selector("#run[data-state='done']")
        outcomes = "#run-steps li[data-step='2'] tr[data-target]"
        assert (
            await author.text_content(f"{outcomes}[data-target='tank-n1'] td:nth-child(2)")
            == (words["confirmed"])
        )
        assert (
            await author.text_content(f"{outcomes}[data-target='tank-n2'] td:nth-child(2)")
            == (words["refused"])
        )
        assert words["done"] in await author.text_content("#run-state")
        await wait_for_point(env.hub, "nord/demo/tank-n1/setpoint", lambda v: v.value == 30)

        await author.click("#run-controls button[data-action='undo']")
        await author.wait_for_selector("#run[data-state='undone']")
        assert words["undone"] in await author.text_content("#run-state")
        await wait_for_point(env.hub, "nord/demo/tank-n1/setpoint", lambda v: v.value == 60)
        await author.wait_for_selector(f"#runs tr[data-run='{run_id}'][data-state='undone']")
    assert errors == [], errors
    journal = await env.hub.store.query_journal(kinds=["playbook"], limit=50)
    actions = [(e.user, e.data["action"]) for e in reversed(journal) if "action" in e.data]
    assert actions == [("sue", "pause"), ("admin", "approve"), ("sue", "resume"), ("sue", "check")]
