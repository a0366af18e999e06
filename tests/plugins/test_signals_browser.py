"""The ring diagram page in a real Chromium (Debian's, through Playwright), following a junction."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from cityvisor.hal.ntcip import UnitFlashStatus
from cityvisor.hal.sim.signal_controller import SimulatedController
from cityvisor.plugins import signals
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub, wait_for_point
from cityvisor.web import find_server
from tests.plugins.conftest import city, device
from tests.web.browser_fixtures import chromium_missing, launch_chromium
from tests.web.conftest import PASSWORD, add_users

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 20_000


async def test_the_ring_page_draws_the_stages_and_follows_the_phases(tmp_path: Path):
    if (missing := chromium_missing()) is not None:
        pytest.fail(f"{missing} (.ci/run installs it)")
    async with SimulatedController("tsc-ring", time_scale=10, detectors={1: 2}) as sim:
        host, port = sim.address
        config = city(
            device(
                "j-ring",
                "signals.controller",
                "nord",
                host=host,
                port=port,
                write_community="private",
                poll_period=0.2,
            )
        )
        config += "\n[web]\nport = 0\n"
        async with running_hub(config, tmp_path, plugins=[signals, web_plugin]) as hub:
            server = find_server(hub)
            assert server is not None
            with anyio.fail_after(10):
                await server.ready.wait()
            await add_users(hub)
            await wait_for_point(hub, "nord/signals/j-ring/online", lambda v: v.value is True)
            async with launch_chromium() as browser:
                context = await browser.new_context(locale="fr-FR")
                login = await context.request.post(
                    server.url + "/api/v1/session",
                    data={"username": "admin", "password": PASSWORD},
                    headers={"Origin": server.url},
                )
                assert login.ok, await login.text()
                page = await context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on(
                    "console",
                    lambda m: errors.append(m.text) if "Refused to" in m.text else None,
                )
                await page.goto(server.url + "/plugins/signals/ring?device=j-ring")
                await page.wait_for_selector("#ring path:nth-of-type(2)")
                assert "crossroads" in await page.text_content("#title")
                assert "Plan 1" in await page.text_content("#status")
                # The side street's turn comes: its row shows green.
                await page.wait_for_selector("#phases tr:has-text('4 Side street') .state-green")
                await page.wait_for_selector("#phases tr:has-text('2 Main street') .state-green")
                assert errors == []


async def test_the_map_shows_each_junction_cycling_or_in_flash(tmp_path: Path):
    if (missing := chromium_missing()) is not None:
        pytest.fail(f"{missing} (.ci/run installs it)")
    async with SimulatedController("tsc-map", time_scale=10) as sim:
        host, port = sim.address
        config = city(
            device(
                "j-map",
                "signals.controller",
                "nord",
                host=host,
                port=port,
                poll_period=0.2,
            ).replace('zone = "nord"', 'zone = "nord"\nlocation = [47.3220, 5.0415]')
        )
        config += "\n[web]\nport = 0\n"
        async with running_hub(config, tmp_path, plugins=[signals, web_plugin]) as hub:
            server = find_server(hub)
            assert server is not None
            with anyio.fail_after(10):
                await server.ready.wait()
            await add_users(hub)
            await wait_for_point(hub, "nord/signals/j-map/online", lambda v: v.value is True)
            async with launch_chromium() as browser:
                for language, cycling, flashing in (
                    ("fr", "au vert", "Carrefour en clignotant"),
                    ("en", "on green", "Junction in flash"),
                ):
                    sim.flash_status = UnitFlashStatus.NOT_FLASH
                    context = await browser.new_context()
                    # The operator's choice of language on this browser (the HMI's switch).
                    await context.add_init_script(
                        f"localStorage.setItem('cityvisor.language', '{language}')"
                    )
                    login = await context.request.post(
                        server.url + "/api/v1/session",
                        data={"username": "nora", "password": PASSWORD},
                        headers={"Origin": server.url},
                    )
                    assert login.ok, await login.text()
                    page = await context.new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    errors: list[str] = []
                    page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                    await page.goto(server.url + "/#/map")
                    await page.wait_for_selector("#map[data-ready='true']")
                    # Cycling: the lamp inside the marker is green, the list says which phases.
                    await page.wait_for_function(
                        "() => document.querySelector('#map').view.items"
                        ".some(i => i.device === 'j-map' && i.signal === 'cycle')"
                    )
                    state = page.locator("#map-devices [data-signal='cycle']")
                    assert cycling in (await state.text_content() or "")
                    legend = await page.text_content(".legend") or ""
                    assert flashing in legend
                    # The controller goes to flash on its own: the map follows.
                    sim.flash_status = UnitFlashStatus.AUTOMATIC
                    await page.wait_for_function(
                        "() => document.querySelector('#map').view.items"
                        ".some(i => i.device === 'j-map' && i.signal === 'flash')"
                    )
                    await page.wait_for_selector("#map-devices [data-signal='flash']")
                    assert flashing in (
                        await page.text_content("#map-devices [data-signal='flash']") or ""
                    )
                    assert errors == []
                    await context.close()
