"""End to end in a real Chromium (Debian's, driven by Playwright): the operators' screens.

A small city runs for each test (:mod:`tests.web.browser_fixtures`: demo
tanks, a lighting cabinet on a Modbus simulator, a simulated ONVIF camera)
with its HMI on a free loopback port. The browser's own time zone is UTC,
the site's Europe/Paris: the screens must show the site's.

Every wait is on a selector or a state, never a fixed sleep. Set
``CITYVISOR_SCREENSHOTS=docs/screenshots`` to refresh the operator guide's
pictures; otherwise they land in the test's temporary directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cityvisor.core.points import PointValue, Quality, now_ms
from cityvisor.testing import wait_for_alarm, wait_for_point
from cityvisor.web import find_server

from .browser_fixtures import (
    PASSWORD,
    City,
    browser_city,
    chromium_missing,
    crowded_city,
    launch_chromium,
    seed_history,
    tile_server,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _chromium_is_installed() -> None:
    """The browser tests never skip: a machine without Chromium fails, naming the fix."""
    missing = chromium_missing()
    if missing is not None:
        pytest.fail(f"{missing} (.ci/run installs it)")


TIMEOUT_MS = 20_000
"""Playwright's wait for each selector: generous, the machine is shared."""

LEVEL = "centre/demo/tank-a/level"
ALARM = "tank-a:high_water"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: ``$CITYVISOR_SCREENSHOTS`` (the docs) or the test's directory."""
    wanted = os.environ.get("CITYVISOR_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[City]:
    async with browser_city(tmp_path / "hub") as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launch_chromium() as chromium:
        yield chromium


async def open_page(browser: Any, city: City) -> Any:
    """A fresh browser context (its own cookies) on the HMI, French locale, UTC clock."""
    context = await browser.new_context(
        viewport={"width": 1600, "height": 900}, locale="fr-FR", timezone_id="UTC"
    )
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The strict CSP (no inline script or style, our origin only) must never have to refuse.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )
    page.errors = errors  # checked at the end of each test
    await page.goto(city.url + "/")
    return page


async def login(page: Any, name: str) -> None:
    await page.fill("#login-username", name)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#banner")
    await page.wait_for_selector("#connection[data-status='live']")


async def map_items(page: Any) -> list[dict[str, Any]]:
    """What the map draws: clusters and single devices, with their place and label."""
    return await page.evaluate("() => document.querySelector('#map').view.items")


async def click_map(page: Any, item: dict[str, Any]) -> None:
    box = await page.locator("#map").bounding_box()
    await page.mouse.click(box["x"] + item["x"], box["y"] + item["y"])


async def shot(page: Any, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"))


def paris(ms: int) -> str:
    """How the HMI writes a time in French: the site's zone, not the browser's (UTC)."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .astimezone(ZoneInfo("Europe/Paris"))
        .strftime("%d/%m/%Y %H:%M:%S")
    )


async def test_an_operator_sees_live_values_commands_and_handles_an_alarm(
    tmp_path: Path, browser: Any, screenshots: Path
):
    async with tile_server() as tiles, browser_city(tmp_path / "hub", tile_url=tiles) as city:
        await operator_session(city, browser, screenshots)


async def operator_session(city: City, browser: Any, screenshots: Path) -> None:
    page = await open_page(browser, city)
    # The login form speaks the site's language (French) before anyone logs in.
    await page.wait_for_selector("#login-form")
    assert await page.text_content("#login-submit") == "Se connecter"
    assert await page.get_attribute("html", "lang") == "fr"
    await login(page, "olivia")
    assert await page.text_content("#user-name") == "olivia"

    # Equipment: the tank's level is live.
    await page.click(".nav a[data-view='equipment']")
    await page.click("a.device-link[data-device='tank-a']")
    level = page.locator(f"td.value[data-point='{LEVEL}']")
    await level.wait_for()
    assert (await level.get_attribute("data-quality")) == "good"
    before = await level.get_attribute("data-raw")
    assert before is not None and float(before) == 50

    # A command from its form: the outcome and the feedback reached are shown.
    await page.fill("#cmd-set_level-setpoint", "96")
    await page.click("#cmd-set_level")
    outcome = page.locator("#command-outcome .outcome[data-outcome='succeeded']")
    await outcome.wait_for()
    assert "Retour d'état : 96 %" in (await outcome.text_content() or "")
    # ...and the level climbs on screen, pushed over the WebSocket.
    await page.wait_for_function(
        "([id, before]) => { const c = document.querySelector(`td.value[data-point='${id}']`);"
        " return c && c.dataset.raw !== before && Number(c.dataset.raw) > 60; }",
        arg=[LEVEL, before],
    )

    # The high-water alarm appears in the banner, live.
    alarm = await wait_for_alarm(city.hub, ALARM, lambda a: a.active)
    high = page.locator(".count-box[data-priority='high']")
    await page.wait_for_selector(".count-box[data-priority='high'][data-unacked='1']")
    assert "1" in (await high.text_content() or "")
    await shot(page, screenshots, "equipment")

    # The alarm list: the alarm, its time in the site's zone (the browser runs in UTC).
    await high.click()
    await page.wait_for_function(
        "() => document.querySelector('#alarm-filter-priority')?.value === 'high'"
    )
    row = page.locator(f"tr.alarm-row[data-alarm='{ALARM}']")
    await row.wait_for()
    assert await row.locator("td.time").text_content() == paris(alarm.raised_at)
    assert "Niveau haut" in (await row.text_content() or "")
    await row.click()
    await page.wait_for_selector(f"#alarm-title[data-alarm='{ALARM}']")

    # Camera evidence of the moment it rose (the camera watches the tank).
    await page.wait_for_selector("#evidence .evidence-item img[src^='blob:']")

    # The procedure's first step, ticked and journaled with the user.
    await page.click("#step-0")
    await page.wait_for_selector("#procedure li.step.done >> text=olivia")

    # Acknowledge with a comment.
    await page.fill("#ack-comment", "Vanne vérifiée sur place")
    await page.click("#ack-button")
    await page.wait_for_selector("#alarm-state[data-state='ack_active']")
    await page.wait_for_selector(f"tr.alarm-row.acked[data-alarm='{ALARM}']")
    await page.wait_for_selector(".count-box[data-priority='high'][data-unacked='0']")
    acked = await wait_for_alarm(city.hub, ALARM, lambda a: a.acked)
    assert acked.acked_by == "olivia"
    await page.wait_for_selector("#alarm-history >> text=Vanne vérifiée sur place")
    # The alarm's history says what happened in words: raised, then acknowledged.
    await page.wait_for_selector(
        "#alarm-history .kind[data-transition='acknowledged'] >> text=acquittée"
    )
    assert await page.text_content("#alarm-history .kind[data-transition='raised']") == "apparue"
    await shot(page, screenshots, "alarms")

    # The journal has the acknowledgement, the comment and who did it (key 5 opens it).
    await page.locator(f"tr.alarm-row[data-alarm='{ALARM}']").focus()
    await page.keyboard.press("5")
    await page.wait_for_selector("#journal-form")
    await page.select_option("#journal-kind", "ack")
    await page.fill("#journal-search", "Vanne vérifiée")
    await page.click("#journal-apply")
    entry = page.locator("#journal-rows tr[data-kind='ack']")
    await entry.first.wait_for()
    assert await entry.count() == 1
    assert await entry.locator("td.journal-user").text_content() == "olivia"
    assert "Vanne vérifiée sur place" in (await entry.text_content() or "")
    await page.click("#journal-reset")
    await page.wait_for_selector("#journal-rows tr[data-kind='command']")
    await shot(page, screenshots, "journal")

    # This city has a tile server: the map's background comes from it (the CSP lets it in).
    await page.click(".nav a[data-view='map']")
    await page.wait_for_selector("#map[data-markers='4'][data-ready='true']")
    await page.wait_for_selector("img.leaflet-tile-loaded")
    assert "serveur de tuiles" in (await page.text_content("#map-tiles") or "")
    assert page.errors == []


async def test_confirmation_approval_interlock_quality_language_trends_map(
    city: City, browser: Any, screenshots: Path
):
    page = await open_page(browser, city)
    await login(page, "sue")

    # A confirmation-required command: select, then operate in the dialog before it expires.
    await page.goto(city.url + "/#/equipment/tank-b")
    await page.click("#cmd-drain")
    dialog = page.locator("dialog.confirm-dialog")
    await dialog.wait_for()
    assert re.search(
        r"expire dans \d+ s", await dialog.locator("#confirm-countdown").text_content() or ""
    )
    question = await dialog.text_content() or ""
    assert "Exécuter « Vidanger » sur Réservoir B ?" in question and "null" not in question
    await page.click("#confirm-execute")
    await page.wait_for_selector(
        "#command-outcome .outcome[data-outcome='succeeded'][data-command='drain']"
    )
    await wait_for_point(city.hub, "nord/demo/tank-b/setpoint", lambda v: v.value == 0)

    # A two-person command waits for another supervisor, who approves it on their screen.
    await page.click("#cmd-toggle_maintenance")
    await page.wait_for_selector("#command-outcome .outcome[data-outcome='pending']")
    other = await open_page(browser, city)
    await login(other, "admin")
    await other.wait_for_selector("#approvals-count:not([hidden])")
    await other.click(".nav a[data-view='approvals']")
    item = other.locator("#approvals-decide li.pending")
    await item.wait_for()
    command = item.locator(".pending-command[data-command='toggle_maintenance']")
    assert await command.text_content() == "Maintenance"  # its label, not its name
    await item.locator("button[data-action='approve']").click()
    await other.wait_for_selector("#approvals-decide li.pending", state="detached")
    maintenance = page.locator("td.value[data-point='nord/demo/tank-b/maintenance']")
    await page.wait_for_selector(
        "td.value[data-point='nord/demo/tank-b/maintenance'][data-raw='true']"
    )
    assert await maintenance.text_content() == "Oui"

    # Now the interlock refuses a setpoint, and says why in the user's language.
    await page.fill("#cmd-set_level-setpoint", "30")
    await page.click("#cmd-set_level")
    refusal = page.locator("#command-outcome .outcome[data-outcome='interlocked']")
    await refusal.wait_for()
    assert "Réservoir en maintenance" in (await refusal.text_content() or "")

    # A supervisor shelves the drained tank's low-water alarm for an hour, then brings it back.
    low = "tank-b:low_water"
    await wait_for_alarm(city.hub, low, lambda a: a.annunciated)
    await page.goto(city.url + f"/#/alarms/{low}")
    await page.wait_for_selector(f"#alarm-title[data-alarm='{low}']")
    await page.select_option("#shelve-duration", "3600")
    await page.fill("#shelve-reason", "Vidange programmée")
    await page.click("#shelve-button")
    await page.wait_for_selector("#alarm-state[data-state='shelved']")
    await page.wait_for_selector(f"tr.alarm-row[data-alarm='{low}']", state="detached")
    assert "Vidange programmée" in (await page.text_content(".shelved-info") or "")
    await page.click("#unshelve-button")
    await page.wait_for_selector(f"tr.alarm-row[data-alarm='{low}']")

    # ...and plans, then cancels, a maintenance window for the lighting cabinet.
    await page.click(".nav a[data-view='maintenance']")
    await page.select_option("#maintenance-target", "device:cab-1")
    await page.fill("#maintenance-reason", "Remplacement du contacteur")
    await page.click("#maintenance-add")
    window = page.locator("#maintenance-list tr >> text=Remplacement du contacteur")
    await window.wait_for()
    assert len(city.hub.alarms.maintenance_windows()) == 1
    await page.click("#maintenance-list button[data-window]")
    await window.wait_for(state="detached")
    assert city.hub.alarms.maintenance_windows() == []

    # A device that stops answering: its points are shown BAD with the reason, never as good.
    await city.unplug_lighting()
    await page.goto(city.url + "/#/equipment/cab-1")
    bad = page.locator("td.value[data-point='centre/lighting/cab-1/c1/level'][data-quality='bad']")
    await bad.wait_for()
    row = page.locator("tr[data-point-row='centre/lighting/cab-1/c1/level']")
    assert "MAUVAISE" in (await row.locator("td.quality").text_content() or "")
    await page.wait_for_selector("#device-status[data-status='offline']")
    await page.wait_for_selector("a.device-link[data-device='cab-1'][data-status='offline']")

    # English, switched on the fly: screens, keyed texts and the API's own texts.
    await page.click(".banner button[data-lang='en']")
    await page.wait_for_selector(".nav a[data-view='equipment'] >> text=Equipment")
    assert await page.get_attribute("html", "lang") == "en"
    await page.goto(city.url + "/#/equipment/tank-b")
    await page.wait_for_selector("tr[data-point-row='nord/demo/tank-b/level'] >> text=Water level")
    await page.fill("#cmd-set_level-setpoint", "30")
    await page.click("#cmd-set_level")
    refusal = page.locator("#command-outcome .outcome[data-outcome='interlocked']")
    await refusal.wait_for()
    assert "Tank under maintenance" in (await refusal.text_content() or "")

    # Trends: the level's history, bucketed, drawn by uPlot.
    seed_history(city.hub, LEVEL, minutes=14)
    await page.goto(city.url + f"/#/trends/{LEVEL.replace('/', '%2F')}?range=15m")
    await page.wait_for_selector("#trend-chart canvas")
    await page.wait_for_function(
        "() => Number(document.querySelector('#trend-chart').dataset.samples) > 100"
    )
    assert "Water level" in (await page.text_content("#trend-title") or "")

    # The map, with no tile server at all: every located device is drawn, click opens it.
    await page.goto(city.url + "/#/map")
    await page.wait_for_selector("#map[data-markers='4'][data-ready='true']")
    await page.wait_for_selector("#map-devices button[data-device='cab-1'][data-status='offline']")
    items = await map_items(page)
    assert sum(item["count"] for item in items) == 4
    assert await page.locator(".leaflet-tile").count() == 0
    await click_map(page, next(item for item in items if item["device"] == "tank-b"))
    await page.wait_for_selector("#device-name >> text=Réservoir B")

    # The camera wall shows the camera's snapshot.
    await page.goto(city.url + "/#/cameras")
    await page.wait_for_selector("figure.camera-tile[data-camera='cam-1'][data-loaded='true']")
    assert page.errors == [] and other.errors == []


ENGLISH_WORDS = {
    # the server's own (English) summaries and Python's literals, none of them French
    "raised", "cleared", "acknowledged", "shelved", "succeeded", "refused", "failed",
    "pending_approval", "pending_confirmation", "interlocked", "within", "logged", "hub",
    "started", "devices", "snapshot", "of", "on", "in", "True", "False", "None", "null",
}  # fmt: skip


def english_words(text: str) -> set[str]:
    return {word for word in re.findall(r"[A-Za-z_]+", text) if word in ENGLISH_WORDS}


async def test_a_french_journal_has_no_english_word(city: City, browser: Any, screenshots: Path):
    page = await open_page(browser, city)
    await login(page, "sue")

    # An interlock refusal names the point by its label and its value in words.
    await page.goto(city.url + "/#/equipment/cab-1")
    await page.select_option("#cmd-set_level-member", "c1")
    await page.fill("#cmd-set_level-level", "30")
    await page.click("#cmd-set_level")
    refusal = page.locator("#command-outcome .outcome[data-outcome='interlocked']")
    await refusal.wait_for()
    said = await refusal.text_content() or ""
    assert "circuit éteint (c1 · Circuit allumé = Non)" in said, said
    assert "centre/lighting" not in said and not english_words(said), said
    # The command's description is French too (it was the English docstring).
    doc = await page.text_content("form.command[data-command='set_level'] .command-doc") or ""
    assert doc.startswith("Graduer le circuit"), doc

    # A command that succeeds, the alarm it raises, acknowledged; a two-person request.
    await page.goto(city.url + "/#/equipment/tank-a")
    await page.fill("#cmd-set_level-setpoint", "96")
    await page.click("#cmd-set_level")
    await page.wait_for_selector("#command-outcome .outcome[data-outcome='succeeded']")
    await wait_for_alarm(city.hub, ALARM, lambda a: a.annunciated)
    await page.goto(city.url + f"/#/alarms/{ALARM}")
    await page.wait_for_selector(f"#alarm-title[data-alarm='{ALARM}']")
    await page.fill("#ack-comment", "Vanne fermée")
    await page.click("#ack-button")
    await page.wait_for_selector("#alarm-state[data-state='ack_active']")
    await page.goto(city.url + "/#/equipment/tank-b")
    await page.click("#cmd-toggle_maintenance")
    await page.wait_for_selector("#command-outcome .outcome[data-outcome='pending']")
    await page.goto(city.url + "/#/approvals")
    pending = page.locator("#approvals-mine .pending-command[data-command='toggle_maintenance']")
    assert await pending.text_content() == "Maintenance"

    # The journal, in French: every line worded from the declared labels.
    await page.goto(city.url + "/#/journal")
    rows = page.locator("#journal-rows tr[data-kind]")
    await page.wait_for_selector("#journal-rows tr[data-kind='ack']")
    messages = await page.locator("#journal-rows td.journal-message").all_text_contents()
    kinds = await rows.evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert {"command", "alarm", "ack", "login", "config"} <= set(kinds), kinds
    assert await page.locator("#journal-rows [lang='en']").count() == 0
    for message in messages:
        assert not english_words(message), message
    text = "\n".join(messages)
    assert "Alarme apparue : Niveau haut" in text
    assert "Alarme acquittée : Niveau haut" in text and "Vanne fermée" in text
    assert "Régler la consigne : exécutée — Niveau visé = 96 %" in text
    assert "Graduer (c1) : refusée" in text
    assert "Maintenance : en attente de validation par une seconde personne" in text
    assert "Connexion de sue" in text
    assert re.search(r"Démarrage du superviseur : 4 équipements, \d+ points", text)

    # ...and in English, the same lines in English.
    await page.click(".banner button[data-lang='en']")
    await page.wait_for_selector("#journal-rows >> text=Alarm raised: High water")
    text = "\n".join(await page.locator("#journal-rows td.journal-message").all_text_contents())
    assert "Set the level: succeeded — Target level = 96 %" in text
    assert (
        "Dim (c1): refused — Target level = 30 % — interlock: circuit is off"
        " (c1 · Circuit switched on = No)"
    ) in text
    assert "Maintenance: waiting for a second person's approval" in text
    assert page.errors == []


async def test_the_age_of_a_steady_value_is_the_time_since_the_device_last_answered(
    city: City, browser: Any
):
    page = await open_page(browser, city)
    await login(page, "olivia")
    await page.goto(city.url + "/#/equipment/cab-1")
    steady = "centre/lighting/cab-1/c1/on"  # off, and polled every 0.2 s
    row = page.locator(f"tr[data-point-row='{steady}']")
    await row.wait_for()
    # Seconds pass with no change: the value is "unchanged for" longer and longer, while
    # the cabinet keeps answering, so the value is read a moment ago.
    await page.wait_for_function(
        "id => { const r = document.querySelector(`tr[data-point-row='${id}'] td.age`);"
        " return r && Date.now() - Number(r.dataset.ms) > 5000; }",
        arg=steady,
    )
    await page.wait_for_function(
        "id => { const r = document.querySelector(`tr[data-point-row='${id}'] td.read`);"
        " return r && Date.now() - Number(r.dataset.ms) < 4000; }",
        arg=steady,
    )
    answered = await page.get_attribute("#device-answered", "data-ms")
    assert answered and now_ms() - int(answered) < 5000
    assert "il y a" in (await page.text_content("#device-answered") or "")
    headers = await page.locator("table.points-table thead th").all_text_contents()
    assert headers[3:5] == ["Relevée il y a", "Inchangée depuis"]

    # The cabinet stops answering: its points are not read any more, its last answer ages.
    await city.unplug_lighting()
    await page.wait_for_selector(f"tr[data-point-row='{steady}'] td.read >> text=non relevée")
    await page.wait_for_function(
        "() => Date.now() - Number(document.querySelector('#device-answered').dataset.ms) > 5000"
    )
    await page.click(".banner button[data-lang='en']")
    await page.wait_for_selector("#device-answered >> text=ago")
    headers = await page.locator("table.points-table thead th").all_text_contents()
    assert headers[3:5] == ["Read", "Unchanged for"]
    assert page.errors == []


CABINET = "centre/lighting/cab-1"
MINUTE = 60_000


def record(city: City, point_id: str, value: Any, ts: int, quality: Quality = Quality.GOOD) -> None:
    """A row of history as the point database would have recorded it."""
    spec = city.hub.points.get(point_id).spec
    city.hub.store.record(PointValue(point_id, value, quality, ts, ts), spec)


async def chart_data(page: Any) -> list[list[float | None]]:
    """The data uPlot draws: times (s) first, then one column per series (None: a gap)."""
    return await page.evaluate(
        "() => document.querySelector('#trend-chart').plot.data.map(c => Array.from(c,"
        " v => v === undefined ? 'undefined' : v))"
    )


async def test_trends_draw_gaps_as_gaps_steps_as_steps_several_points_and_export_csv(
    city: City, browser: Any, tmp_path: Path, screenshots: Path
):
    now = now_ms()
    # The dimming level stood at 0 % for 40 minutes, then stepped to 40 %.
    step_at = now - 15 * MINUTE
    record(city, f"{CABINET}/c1/level", 0.0, now - 55 * MINUTE)
    record(city, f"{CABINET}/c1/level", 40.0, step_at)
    # The power was read until the cabinet stopped answering for 30 minutes.
    for minute in range(58, 40, -2):
        record(city, f"{CABINET}/c1/power", 1500.0 + minute, now - minute * MINUTE)
    gap_from, gap_to = now - 40 * MINUTE, now - 10 * MINUTE
    record(city, f"{CABINET}/c1/power", 1541.0, gap_from, Quality.bad("comm_failure"))
    record(city, f"{CABINET}/c1/power", 1490.0, gap_to)
    # A meter with large figures: its axis needs a prefix, not more digits.
    for minute in range(50, 0, -5):
        record(city, f"{CABINET}/c1/energy", 1_250_000.0 + 1_000 * minute, now - minute * MINUTE)

    page = await open_page(browser, city)
    await login(page, "olivia")
    await page.goto(city.url + "/#/trends?range=1h")
    # The picker searches device, zone, family and point names, accents or not.
    await page.fill("#trend-search", "darcy niveau gradation c1")
    await page.click(f"button.trend-result[data-point='{CABINET}/c1/level']")
    await page.wait_for_selector(f"#trend-selected li[data-point='{CABINET}/c1/level']")
    await page.fill("#trend-search", "eclairage centre-ville puissance c1")
    await page.click(f"button.trend-result[data-point='{CABINET}/c1/power']")
    await page.wait_for_selector("#trend-chart[data-series='2'] canvas")
    await page.wait_for_function("() => document.querySelector('#trend-chart').plot")

    data = await chart_data(page)
    xs, level, power = data[0], data[1], data[2]

    def at(ms: int) -> int:
        return min(range(len(xs)), key=lambda i: abs(xs[i] * 1000 - ms))

    # The step: 0 % held up to the moment of the change, then 40 %; never a slope.
    assert level[at(step_at - 1)] == 0 and level[at(step_at)] == 40
    assert all(v in (0, 40, "undefined") for v in level[at(now - 50 * MINUTE) : at(now - MINUTE)])
    # The gap: nothing is drawn while the cabinet did not answer.
    assert power[at(gap_from)] is None
    inside = [v for x, v in zip(xs, power, strict=True) if gap_from < x * 1000 < gap_to]
    assert all(v in (None, "undefined") for v in inside)
    assert power[at(gap_to)] == 1490
    assert int(await page.get_attribute("#trend-chart", "data-gaps") or 0) >= 1
    await shot(page, screenshots, "trends")

    # A boolean moves in steps too.
    await page.fill("#trend-search", "darcy c1 allumé")
    await page.click(f"button.trend-result[data-point='{CABINET}/c1/on']")
    await page.wait_for_selector("#trend-chart[data-series='3']")
    assert f"{CABINET}/c1/on" in (await page.get_attribute("#trend-chart", "data-stepped") or "")

    # The data shown, as CSV: the site's time with its offset, one column per point.
    async with page.expect_download() as waiting:
        await page.click("#trend-csv")
    download = await waiting.value
    saved = tmp_path / "trend.csv"
    await download.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert header[0] == "heure (Europe/Paris)" and len(header) == 4
    assert "Armoire place Darcy — c1 · Puissance (W)" in header
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d,", line) for line in lines[1:]
    )
    assert any(",1490," in line or line.split(",")[2] == "1490" for line in lines[1:])

    # Large values get an SI prefix and an axis wide enough for its labels.
    await page.goto(city.url + f"/#/trends/{CABINET.replace('/', '%2F')}%2Fc1%2Fenergy?range=1h")
    await page.wait_for_selector("#trend-chart[data-series='1'] canvas")
    await page.wait_for_function("() => document.querySelector('#trend-chart').dataset.yLabels")
    fits = await page.evaluate(
        """() => {
        const box = document.querySelector('#trend-chart'), u = box.plot;
        const labels = JSON.parse(box.dataset.yLabels).kWh.filter(Boolean);
        u.ctx.font = u.axes[1].font[0];
        const widest = Math.max(...labels.map(l => u.ctx.measureText(l).width)) / devicePixelRatio;
        return {labels, fits: u.axes[1]._size >= widest};
    }"""
    )
    assert fits["fits"], fits
    assert all(label.endswith(" GWh") for label in fits["labels"]), fits
    # In English: the same chart, its words and numbers in English.
    await page.click(".banner button[data-lang='en']")
    await page.wait_for_selector("#trend-csv >> text=Export as CSV")
    await page.wait_for_selector("#trend-info >> text=a value holds until the next change")
    await page.wait_for_function(
        "() => JSON.parse(document.querySelector('#trend-chart').dataset.yLabels || '{}')"
        ".kWh?.some(l => /^1\\.\\d+ GWh$/.test(l))"
    )
    assert page.errors == []


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


async def test_a_map_of_5000_devices_is_clustered_by_zone_with_counts_and_worst_state(
    tmp_path: Path, browser: Any, screenshots: Path
):
    async with crowded_city(tmp_path / "hub", devices=5000, alarms=12) as hub:
        await wait_for_alarm(hub, "t00011:high_water", lambda a: a.annunciated)
        server = find_server(hub)
        assert server is not None
        page = await open_page(browser, City(hub, server, server.url, None, None, None, None))  # type: ignore[arg-type]
        await page.set_viewport_size({"width": 1920, "height": 1080})
        await login(page, "olivia")
        await page.goto(server.url + "/#/map")
        await page.wait_for_selector("#map[data-markers='5000'][data-ready='true']")
        await page.wait_for_function(
            "() => Number(document.querySelector('#map').dataset.clusters) > 0"
        )
        items = await map_items(page)
        # The whole city in view: every device counted once, a few dozen marks, not 5,000.
        assert sum(item["count"] for item in items) == 5000
        assert len(items) < 300
        assert {item["zone"] for item in items} == {"dijon", "chenove", "talant"}
        # A cluster is one zone's; the ones holding the tanks in alarm say so.
        alarmed = [item for item in items if item["status"] == "alarm"]
        assert alarmed and all(item["count"] > 1 for item in alarmed)
        # Names only where they fit: no two labels overlap.
        boxes = [item["box"] for item in items if item["label"]]
        assert boxes
        assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        # No tile server, no Internet: the communes' outlines from the config, named.
        await page.wait_for_selector("#map[data-basemap='3']")
        labels = await page.locator(".leaflet-tooltip.basemap-label").all_text_contents()
        assert sorted(labels) == ["Chenôve", "Dijon", "Talant"]
        assert "contours fournis par la configuration" in (
            await page.text_content("#map-tiles") or ""
        )
        await shot(page, screenshots, "map")

        # A click on a cluster zooms into it.
        zoom = int(await page.get_attribute("#map", "data-zoom") or 0)
        await click_map(page, max(items, key=lambda item: item["count"]))
        await page.wait_for_function(
            f"() => Number(document.querySelector('#map').dataset.zoom) > {zoom}"
        )

        # Filters: only the devices in alarm.
        await page.select_option("#map-status", "alarm")
        await page.wait_for_selector("#map[data-markers='12']")
        assert "/#/map?status=alarm" in page.url  # the filter is in the address: reload it
        await page.reload()
        await page.wait_for_selector("#map[data-markers='12'][data-ready='true']")
        await page.wait_for_function("() => document.querySelector('#map').view.items.length")
        items = await map_items(page)
        assert sum(item["count"] for item in items) == 12
        assert {item["status"] for item in items} == {"alarm"}

        # In English: the legend and the list in English.
        await page.click(".banner button[data-lang='en']")
        await page.wait_for_selector("#map-counts >> text=in view, of 12")
        assert "Cluster" in (await page.text_content(".legend") or "")
        assert page.errors == []


async def test_at_1920_px_the_alarm_list_uses_the_width_and_the_flood_banner_is_one_line(
    tmp_path: Path, browser: Any, screenshots: Path
):
    # 36 tanks in alarm at once, 12 in each commune: a flood in all three.
    async with crowded_city(tmp_path / "hub", devices=300, alarms=36) as hub:
        for i in range(36):
            await wait_for_alarm(hub, f"t{i:05d}:high_water", lambda a: a.annunciated)
        assert len(hub.alarms.kpis()["in_flood"]) == 3
        server = find_server(hub)
        assert server is not None
        page = await open_page(browser, City(hub, server, server.url, None, None, None, None))  # type: ignore[arg-type]
        await page.set_viewport_size({"width": 1920, "height": 1080})
        await login(page, "olivia")
        flood = page.locator("#flood")
        await flood.wait_for()
        text = await flood.text_content() or ""
        assert text.startswith("AVALANCHE : ") and "Chenôve" in text, text
        assert "chenove" not in text  # the zone's name, not its id

        async def one_line() -> bool:
            return await page.evaluate(
                "() => { const b = document.querySelector('#banner').getBoundingClientRect();"
                " return [...document.querySelector('#banner').children].every(e => {"
                " const r = e.getBoundingClientRect();"
                " return Math.abs(r.top + r.height / 2 - (b.top + b.height / 2)) < 6; }); }"
            )

        assert await page.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth"
        )  # nothing pushed off the screen
        assert await one_line()
        await page.wait_for_selector("tr.alarm-row")
        widths = await page.evaluate(
            "() => [document.querySelector('.alarm-list').getBoundingClientRect().width,"
            " document.querySelector('.split-alarms').getBoundingClientRect().width]"
        )
        assert widths[0] / widths[1] > 0.7, widths
        # Device names stay on one line: a device cell is as tall as its row's time.
        assert await page.evaluate(
            "() => [...document.querySelectorAll('tr.alarm-row')].every(r =>"
            " r.querySelector('td.device').getBoundingClientRect().height"
            " <= r.querySelector('td.time').getBoundingClientRect().height + 1)"
        )
        await shot(page, screenshots, "alarm-flood")
        await page.click(".banner button[data-lang='en']")
        await page.wait_for_selector("#flood >> text=ALARM FLOOD: ")
        # At 1920 px the three communes' names fit on that one line.
        assert await page.evaluate(
            "() => { const f = document.querySelector('#flood');"
            " return f.scrollWidth <= f.clientWidth; }"
        )
        assert await one_line()
        assert page.errors == []
