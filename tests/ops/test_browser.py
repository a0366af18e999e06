"""The operations screen in a real Chromium: alarm -> incident -> dispatch -> resolved -> report closed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from cityvisor.testing import wait_for_alarm

from ..web.browser_fixtures import PASSWORD, chromium_missing, launch_chromium
from .conftest import start
from .open311_client import GeoReportClient
from .test_http import place_crews

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 20_000


@pytest.fixture(autouse=True)
def _chromium_is_installed() -> None:
    missing = chromium_missing()
    if missing is not None:
        pytest.fail(f"{missing} (.ci/run installs it)")


async def test_an_operator_goes_from_alarm_to_dispatch_to_resolved_and_the_citizen_sees_it(
    tmp_path: Path,
):
    async with start(tmp_path) as env, launch_chromium() as browser:
        async with aiohttp.ClientSession() as http:
            await place_crews(env, http)
            citizen = GeoReportClient(env.url + "/open311/v2", http)
            posted = await citizen.post_request(
                service_code="leak", lat=47.3790, long=5.0510, description="Fuite rue Monge"
            )
        admin = await env.login("admin")
        await admin.post(
            "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 99}}
        )
        await wait_for_alarm(env.hub, "tank-a:high_water", lambda a: a.annunciated)

        context = await browser.new_context(locale="fr-FR", timezone_id="UTC")
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        response = await context.request.post(
            env.url + "/api/v1/session", data={"username": "sue", "password": PASSWORD}
        )
        assert response.ok, await response.text()
        await page.goto(env.url + "/plugins/ops/")
        assert await page.text_content("h1") == "Opérations"

        # The alarm becomes an incident in one click.
        await page.click("tr[data-alarm='tank-a:high_water'] button[data-action='open']")
        alarm_row = "#incidents tr[data-state='new']:has-text('Niveau haut')"
        await page.wait_for_selector(alarm_row)
        await page.click(f"{alarm_row} button[data-action='propose']")
        await page.click(f"{alarm_row} button[data-action='send'][data-crew='water-near']")
        await page.wait_for_selector("#incidents tr[data-state='assigned']:has-text('Niveau haut')")

        # The citizen's report: the remaining water crew is proposed, sent, and the job done.
        report_row = "#incidents tr:has-text('Water leak')"
        await page.click(f"{report_row}[data-state='new'] button[data-action='propose']")
        await page.click(f"{report_row} button[data-action='send'][data-crew='water-far']")
        for state in ("assigned", "on_site"):
            await page.click(f"{report_row}[data-state='{state}'] button[data-action='next']")
        await page.wait_for_selector(f"{report_row}[data-state='resolved']")
        await page.wait_for_selector("#crews tr:has-text('Water crew (far)'):has-text('available')")

        async with aiohttp.ClientSession() as http:
            citizen = GeoReportClient(env.url + "/open311/v2", http)
            status = await citizen.get_request(posted["service_request_id"], posted["token"])
        assert status["status"] == "closed"

        # The crisis cell: opened, a note in the timeline, closed, its report linked.
        await page.select_option("#crisis-kind", "flood")
        await page.fill("#crisis-title", "Crue de l'Ouche")
        await page.click("#crisis-open button")
        await page.fill("#crisis-note-text", "Pont de l'Ouche fermé")
        await page.click("#crisis-note button")
        await page.wait_for_selector('#timeline li:has-text("Pont de l\'Ouche fermé")')
        await page.fill("#crisis-summary", "Décrue")
        await page.click("#crisis-close button")
        await page.wait_for_selector("#crisis-report:not([hidden])")
        assert errors == []
        await context.close()
