"""``[security] zone_reading = "own"``: each commune reads only its own, on every surface.

Two operators of different zones (olivia: centre, nora: nord), a viewer of
every zone (victor) and an admin, through the real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from cityvisor.core.config import ConfigError, load_config
from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub, wait_for_alarm
from cityvisor.web import find_server

from .conftest import CONFIG, Env, add_users
from .test_ws import connect, receive, receive_until

pytestmark = pytest.mark.anyio

OWN = CONFIG + '\n[security]\nzone_reading = "own"\n'


@pytest.fixture
async def own(tmp_path: Path) -> AsyncIterator[Env]:
    """The test hub with reading limited to each user's zones."""
    async with running_hub(OWN, tmp_path, plugins=[demo, web_plugin]) as hub:
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


async def raise_north_high_water(env: Env) -> None:
    nora = await env.login("nora")
    status, result = await nora.post(
        "/api/v1/devices/tank-b/commands/set_level", {"arguments": {"setpoint": 99}}
    )
    assert status == 200, result
    await wait_for_alarm(env.hub, "tank-b:high_water", lambda a: a.annunciated)


async def test_devices_map_and_site_show_only_the_readers_zones(own: Env):
    olivia, nora, victor = [await own.login(n) for n in ("olivia", "nora", "victor")]
    _, body = await olivia.get("/api/v1/devices")
    assert [d["id"] for d in body["devices"]] == ["tank-a"]
    _, body = await nora.get("/api/v1/devices")
    assert [d["id"] for d in body["devices"]] == ["tank-b"]
    _, body = await victor.get("/api/v1/devices")
    assert [d["id"] for d in body["devices"]] == ["tank-a", "tank-b"]
    status, body = await olivia.get("/api/v1/devices/tank-b")
    assert status == 404 and body["error"] == "unknown_device"
    status, _ = await olivia.get("/api/v1/devices/tank-a")
    assert status == 200
    _, site = await olivia.get("/api/v1/site")
    assert [z["id"] for z in site["zones"]] == ["centre"]
    _, site = await victor.get("/api/v1/site")
    assert [z["id"] for z in site["zones"]] == ["centre", "nord"]


async def test_points_and_history_of_other_zones_are_unknown(own: Env):
    olivia = await own.login("olivia")
    _, body = await olivia.get("/api/v1/points?pattern=**")
    ids = [p["id"] for p in body["points"]]
    assert ids and all(i.startswith("centre/") for i in ids)
    _, body = await olivia.get("/api/v1/points?pattern=nord/**")
    assert body["points"] == []
    status, body = await olivia.get("/api/v1/points/nord/demo/tank-b/level/history")
    assert status == 404 and body["error"] == "unknown_point"
    status, _ = await olivia.get("/api/v1/points/centre/demo/tank-a/level/history")
    assert status == 200
    admin = await own.login("admin")
    _, body = await admin.get("/api/v1/points?pattern=nord/**")
    assert body["points"]


async def test_alarms_counts_and_kpis_of_other_zones_are_hidden(own: Env):
    await raise_north_high_water(own)
    olivia, nora = await own.login("olivia"), await own.login("nora")
    _, body = await olivia.get("/api/v1/alarms?scope=all")
    assert body["alarms"] and all(a["zone"] == "centre" for a in body["alarms"])
    assert body["counts"]["high"]["annunciated"] == 0
    _, body = await nora.get("/api/v1/alarms")
    assert "tank-b:high_water" in [a["id"] for a in body["alarms"]]
    assert body["counts"]["high"]["annunciated"] == 1
    status, body = await olivia.get("/api/v1/alarms/tank-b:high_water")
    assert status == 404 and body["error"] == "unknown_alarm"
    _, kpis = await olivia.get("/api/v1/alarms/kpis")
    assert set(kpis["zones"]) <= {"centre"}
    assert all(not b["alarm"].startswith("tank-b") for b in kpis["bad_actors"])
    assert kpis["by_priority"]["high"]["annunciated"] == 0
    _, kpis = await nora.get("/api/v1/alarms/kpis")
    assert "tank-b:high_water" in [b["alarm"] for b in kpis["bad_actors"]]


async def test_the_journal_holds_only_the_readers_zones_and_own_doings(own: Env):
    await raise_north_high_water(own)
    olivia, victor = await own.login("olivia"), await own.login("victor")
    _, body = await olivia.get("/api/v1/journal?limit=1000")
    entries = body["entries"]
    assert entries, "olivia's own login at least"
    assert all(e["device"] != "tank-b" for e in entries)
    assert all(e["user"] == "olivia" or e["device"] == "tank-a" for e in entries), entries
    _, body = await olivia.get("/api/v1/journal?device=tank-b")
    assert body["entries"] == []
    _, body = await victor.get("/api/v1/journal?device=tank-b&kind=command")
    assert [e["user"] for e in body["entries"]] == ["nora"]


async def test_the_websocket_feeds_only_the_readers_zones(own: Env):
    olivia, nora = await own.login("olivia"), await own.login("nora")
    ws_olivia, ws_nora = await connect(olivia), await connect(nora)
    for ws in (ws_olivia, ws_nora):
        await ws.send_json({"type": "subscribe", "points": ["**"], "alarms": True})
        assert (await receive(ws))["type"] == "subscribed"
    first: dict[str, dict] = {}
    while len(first) < 2:
        message = await receive(ws_olivia)
        if message["type"] in ("snapshot", "alarms"):
            first[message["type"]] = message
    points = first["snapshot"]["points"]
    assert points and all(p["id"].startswith("centre/") for p in points)
    assert all(a["zone"] == "centre" for a in first["alarms"]["alarms"])
    await raise_north_high_water(own)
    event = await receive_until(
        ws_nora, lambda m: m["type"] == "alarm" and m["event"]["alarm"] == "tank-b:high_water"
    )
    assert event["counts"]["high"]["annunciated"] == 1
    # Olivia's feed carries on (changes of centre only) without the north's alarm.
    status, _ = await olivia.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 70}}
    )
    assert status == 200
    changes = 0
    with anyio.move_on_after(2.0):
        while True:
            message = await receive(ws_olivia)
            if message["type"] == "changes":
                changes += 1
                assert all(p["id"].startswith("centre/") for p in message["points"])
            assert "tank-b" not in str(message), message
    assert changes > 0
    await ws_olivia.close()
    await ws_nora.close()


async def test_with_the_default_everyone_reads_the_whole_city(env: Env):
    olivia = await env.login("olivia")
    _, body = await olivia.get("/api/v1/devices")
    assert [d["id"] for d in body["devices"]] == ["tank-a", "tank-b"]
    status, _ = await olivia.get("/api/v1/points/nord/demo/tank-b/level/history")
    assert status == 200


def test_a_wrong_zone_reading_names_the_file_the_key_and_the_choices(tmp_path: Path):
    path = tmp_path / "city.toml"
    path.write_text(CONFIG + '\n[security]\nzone_reading = "mine"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert f"{path}: security.zone_reading:" in message
    assert "'all' or 'own'" in message or '"all" or "own"' in message, message


async def test_the_metrics_covering_every_zone_are_for_those_who_read_everything(own: Env):
    olivia, victor = await own.login("olivia"), await own.login("victor")
    status, body = await olivia.get("/metrics")
    assert status == 403 and "every zone" in body["message"]
    status, _ = await victor.get("/metrics")
    assert status == 200
    scraper = own.client()
    token = {"Authorization": "Bearer scrape-me-please-0123456789"}
    status, _ = await scraper.get("/metrics", headers=token)
    assert status == 200
