"""The operations layer through the real HTTP server: trackers, dispatch, Open311, zones, crisis."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest
from PIL import Image

from cityvisor.testing import wait_for_alarm

from .conftest import TOKENS, OpsEnv
from .open311_client import GeoReportClient, GeoReportError

# tank-a is at (47.3200, 5.0400), tank-b at (47.3800, 5.0500).
NEAR = (47.3250, 5.0420)
FAR = (47.3600, 5.1000)
NEAREST = (47.3205, 5.0401)

pytestmark = pytest.mark.anyio


async def track(
    env: OpsEnv,
    http: aiohttp.ClientSession,
    tracker: str,
    lat: float,
    lon: float,
    method: str = "GET",
    overrides: dict[str, str] | None = None,
) -> tuple[int, Any]:
    params = {
        "id": tracker,
        "lat": str(lat),
        "lon": str(lon),
        "timestamp": "1764669600",
        "speed": "10",
        "token": TOKENS[tracker],
        **(overrides or {}),
    }
    if method == "GET":
        request = http.get(env.tracker_url, params=params)
    else:
        request = http.post(env.tracker_url, data=params)
    async with request as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def place_crews(env: OpsEnv, http: aiohttp.ClientSession) -> None:
    for tracker, where, method in (
        ("van-1", FAR, "GET"),
        ("van-2", NEAR, "POST"),
        ("van-3", NEAREST, "GET"),
    ):
        status, body = await track(env, http, tracker, *where, method=method)
        assert status == 200, body


async def test_the_operations_screen_is_in_the_hmi_navigation(env: OpsEnv):
    olivia = await env.login("olivia")
    status, site = await olivia.get("/api/v1/site")
    assert status == 200
    assert ("ops", "/plugins/ops/", "Opérations") in [
        (p["name"], p["path"], p["label"]["fr"]) for p in site["pages"]
    ]


async def test_an_osmand_tracker_posts_positions_and_bad_ones_get_a_4xx_naming_the_field(
    env: OpsEnv,
):
    async with aiohttp.ClientSession() as http:
        await place_crews(env, http)
        for bad, field in (
            ({"lat": "91"}, "lat"),
            ({"lon": "east"}, "lon"),
            ({"timestamp": "yesterday"}, "timestamp"),
            ({"speed": "-3"}, "speed"),
            ({"id": ""}, "id"),
        ):
            status, body = await track(env, http, "van-1", 47.0, 5.0, overrides=bad)
            assert status == 400 and body["field"] == field, (bad, body)
        status, body = await track(
            env, http, "van-1", 47.0, 5.0, overrides={"token": "not-the-token-at-all"}
        )
        assert status == 403
    operator = await env.login("olivia")
    status, body = await operator.get("/api/v1/ops/crews")
    crews = {c["id"]: c for c in body["crews"]}
    assert crews["water-near"]["position"]["lat"] == pytest.approx(NEAR[0])
    assert crews["water-near"]["position"]["speed"] == pytest.approx(10 * 1852 / 3600)
    # The refused positions changed nothing.
    assert crews["water-far"]["position"]["lat"] == pytest.approx(FAR[0])
    assert "token" not in str(body)


async def test_alarm_to_incident_to_dispatch_of_the_nearest_crew_with_the_skill_to_resolved(
    env: OpsEnv,
):
    async with aiohttp.ClientSession() as http:
        await place_crews(env, http)
    admin = await env.login("admin")
    status, result = await admin.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 99}}
    )
    assert status == 200, result
    await wait_for_alarm(env.hub, "tank-a:high_water", lambda a: a.annunciated)

    olivia = await env.login("olivia")
    status, incident = await olivia.post(
        "/api/v1/ops/incidents/from-alarm", {"alarm": "tank-a:high_water", "comment": "on it"}
    )
    assert status == 201, incident
    assert incident["zone"] == "centre" and incident["priority"] == "high"
    assert incident["skill"] == "demo" and incident["links"][0]["ref"] == "tank-a:high_water"
    status, again = await olivia.post(
        "/api/v1/ops/incidents/from-alarm", {"alarm": "tank-a:high_water"}
    )
    assert status == 409, again

    # The police patrol is nearest but lacks the skill; the near water crew wins.
    number = incident["id"]
    status, proposed = await olivia.get(f"/api/v1/ops/incidents/{number}/dispatch")
    assert status == 200, proposed
    assert [p["crew"] for p in proposed["proposals"]] == ["water-near", "water-far"]
    first = proposed["proposals"][0]
    assert first["distance"] == "great-circle" and 500 < first["distance_m"] < 700
    assert first["eta_s"] == pytest.approx(first["distance_m"] / 10, rel=0.01)

    status, sent = await olivia.post(
        f"/api/v1/ops/incidents/{number}/dispatch", {"crew": "water-near", "comment": "go"}
    )
    assert status == 200, sent
    assert sent["state"] == "assigned" and sent["crew_state"]["state"] == "dispatched"
    assert sent["crew_state"]["eta_ms"] is not None
    status, proposed = await olivia.get(f"/api/v1/ops/incidents/{number}/dispatch")
    assert [p["crew"] for p in proposed["proposals"]] == ["water-far"]

    status, body = await olivia.post(f"/api/v1/ops/incidents/{number}/state", {"state": "closed"})
    assert status == 409 and "may go to" in body["message"]
    for state in ("on_site", "resolved"):
        status, body = await olivia.post(
            f"/api/v1/ops/incidents/{number}/state", {"state": state, "comment": f"now {state}"}
        )
        assert status == 200 and body["state"] == state, body
    crews = {c["id"]: c for c in (await olivia.get("/api/v1/ops/crews"))[1]["crews"]}
    assert crews["water-near"]["state"] == "available"

    entries = await env.hub.store.query_journal(kinds=["incident"], limit=20)
    changes = [(e.user, e.data.get("from"), e.data.get("to"), e.data["comment"]) for e in entries]
    assert ("olivia", "on_site", "resolved", "now resolved") in changes
    assert ("olivia", "new", "assigned", "go") in changes


async def test_ticking_a_step_of_a_procedure_file_is_journaled_with_user_and_version(env: OpsEnv):
    admin = await env.login("admin")
    await admin.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 99}})
    await wait_for_alarm(env.hub, "tank-a:high_water", lambda a: a.annunciated)
    olivia = await env.login("olivia")
    status, body = await olivia.get("/api/v1/ops/procedures?alarm=high_water")
    assert [p["id"] for p in body["procedures"]] == ["DEMO-01"]
    assert body["procedures"][0]["steps"][1]["command"] == "set_level"
    status, body = await olivia.post("/api/v1/alarms/tank-a:high_water/steps/1", {"done": True})
    assert status == 200, body
    assert env.hub.alarms.get("tank-a:high_water").checklist_version == 3
    entries = await env.hub.store.query_journal(kinds=["procedure_step"], limit=5)
    assert entries[0].user == "olivia" and entries[0].alarm == "tank-a:high_water"
    assert entries[0].data["data"]["procedure"] == "DEMO-01"
    assert entries[0].data["data"]["version"] == 3


def _photo_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), "orange")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[2] = (47.0, 19.0, 12.0)
    gps[4] = (5.0, 2.0, 30.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


async def test_an_open311_client_posts_a_report_and_follows_it_to_closed(env: OpsEnv):
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        services = await client.services()
        assert {s["service_code"] for s in services} == {"leak", "graffiti"}
        photo = _photo_with_gps()
        assert b"PhoneMaker" in photo
        posted = await client.post_request(
            service_code="leak",
            lat=47.3790,
            long=5.0510,
            description="Water in the street",
            email="ann@example.org",
            first_name="Ann",
            phone="+33600000000",
            media=photo,
        )
        request_id, token = posted["service_request_id"], posted["token"]
        status = await client.get_request(request_id, token)
        assert status["status"] == "open" and status["service_name"] == "Water leak"
        assert "email" not in status and "phone" not in status
        with pytest.raises(GeoReportError) as refused:
            await client.get_request(request_id, "wrong-token")
        assert refused.value.status == 404

        # It landed as an incident in the zone of the nearest device (tank-b, nord).
        incident_id = env.ops.book.incidents[max(env.ops.book.incidents)].id
        incident = env.ops.book.get(incident_id)
        assert incident.zone == "nord" and incident.source == "report"

        nora = await env.login("nora")
        status, report = await nora.get(f"/api/v1/ops/reports/{request_id}")
        assert status == 200 and "personal" not in report  # an operator: no personal data
        sue = await env.login("sue")
        status, report = await sue.get(f"/api/v1/ops/reports/{request_id}")
        assert report["personal"]["email"] == "ann@example.org"
        async with sue.http.get(f"{env.url}/api/v1/ops/reports/{request_id}/photo") as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            stored = await response.read()
        assert b"PhoneMaker" not in stored
        with Image.open(io.BytesIO(stored)) as image:
            assert not image.getexif()

        for state in ("assigned", "on_site", "resolved"):
            status, body = await nora.post(
                f"/api/v1/ops/incidents/{incident_id}/state", {"state": state}
            )
            assert status == 200, body
        status = await client.get_request(request_id, token)
        assert status["status"] == "closed"


async def test_a_malformed_report_gets_a_4xx_naming_the_field_and_nothing_is_created(env: OpsEnv):
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        good = {"service_code": "leak", "lat": 47.3, "long": 5.0, "description": "x"}
        for change, field, status in (
            ({"service_code": "nope"}, "service_code", 404),
            ({"lat": "north"}, "lat", 400),
            ({"long": 200}, "long", 400),
            ({"description": ""}, "description", 400),
            ({"email": "not-an-address"}, "email", 400),
        ):
            with pytest.raises(GeoReportError) as refused:
                await client.post_request(**{**good, **change})
            assert refused.value.status == status and refused.value.description.startswith(field)
        with pytest.raises(GeoReportError) as refused:
            await client.post_request(**good, media=b"GIF89a not a photo")
        assert refused.value.description.startswith("media")
    assert env.ops.book.incidents == {}


async def test_reports_past_the_rate_get_429_with_retry_after(env: OpsEnv):
    env.ops.desk.limiter.rate = 2
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        fields = {"service_code": "graffiti", "lat": 47.32, "long": 5.04, "description": "tag"}
        await client.post_request(**fields)
        await client.post_request(**fields)
        with pytest.raises(GeoReportError) as refused:
            await client.post_request(**fields)
        assert refused.value.status == 429
    assert len(env.ops.book.incidents) == 2


async def test_personal_data_is_purged_after_the_retention(env: OpsEnv):
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        posted = await client.post_request(
            service_code="graffiti",
            lat=47.32,
            long=5.04,
            description="tag",
            email="bob@example.org",
        )
    later = 10**13
    assert await env.ops.desk.purge(now=later) == 1
    report = await env.ops.desk.get(posted["service_request_id"])
    assert report is not None and report.personal["email"] is None
    assert report.description == "tag"
    entries = await env.hub.store.query_journal(kinds=["report"], limit=5)
    assert entries[0].data["purged"] == 1


async def test_zones_decide_who_acts_on_an_incident(env: OpsEnv):
    olivia = await env.login("olivia")
    status, incident = await olivia.post(
        "/api/v1/ops/incidents",
        {"title": "Column down", "zone": "centre", "location": [47.32, 5.04]},
    )
    assert status == 201, incident
    nora = await env.login("nora")
    status, body = await nora.post(
        f"/api/v1/ops/incidents/{incident['id']}/state", {"state": "resolved"}
    )
    assert status == 403 and "centre" in body["message"]
    victor = await env.login("victor")
    status, body = await victor.post("/api/v1/ops/incidents", {"title": "x", "zone": "centre"})
    assert status == 403
    status, body = await olivia.post("/api/v1/ops/incidents", {"title": "x", "zone": "moon"})
    assert status == 422 and body["problems"] == ["zone"]
    status, body = await olivia.post("/api/v1/ops/incidents", {"zone": "centre"})
    assert status == 422 and body["problems"] == ["title"]
    anonymous = env.client()
    status, _ = await anonymous.get("/api/v1/ops/incidents")
    assert status == 401


async def test_with_own_zone_reading_an_incident_of_another_zone_does_not_exist(
    own_zone_env: OpsEnv,
):
    env = own_zone_env
    olivia = await env.login("olivia")
    status, incident = await olivia.post(
        "/api/v1/ops/incidents", {"title": "Column down", "zone": "centre"}
    )
    nora = await env.login("nora")
    status, body = await nora.get(f"/api/v1/ops/incidents/{incident['id']}")
    assert status == 404
    status, body = await nora.get("/api/v1/ops/incidents")
    assert body["incidents"] == []
    status, body = await olivia.get("/api/v1/ops/incidents")
    assert [i["id"] for i in body["incidents"]] == [incident["id"]]


async def test_a_crisis_is_opened_by_a_supervisor_and_its_report_holds_the_timeline(env: OpsEnv):
    olivia = await env.login("olivia")
    status, body = await olivia.post("/api/v1/ops/crisis", {"kind": "flood", "title": "Ouche"})
    assert status == 403
    sue = await env.login("sue")
    status, crisis = await sue.post("/api/v1/ops/crisis", {"kind": "flood", "title": "Crue"})
    assert status == 201, crisis
    status, body = await sue.post("/api/v1/ops/crisis", {"kind": "snow", "title": "again"})
    assert status == 409
    status, body = await sue.post("/api/v1/ops/crisis", {"kind": "meteor", "title": "x"})
    assert status == 422 and "kind" in body["message"]
    status, _ = await olivia.post("/api/v1/ops/crisis/notes", {"text": "Pont fermé <b>"})
    assert status == 201
    await olivia.post("/api/v1/ops/incidents", {"title": "Cave inondée", "zone": "centre"})
    status, _ = await sue.get(f"/api/v1/ops/crisis/{crisis['id']}/report")
    assert status == 409
    status, closed = await sue.post("/api/v1/ops/crisis/close", {"summary": "Décrue"})
    assert status == 200 and closed["open"] is False
    status, timeline = await sue.get(f"/api/v1/ops/crisis/{crisis['id']}/timeline")
    messages = [e["message"] for e in timeline["timeline"]]
    assert messages[0].startswith("crisis 1 opened") and messages[-1].startswith("crisis 1 closed")
    assert "Pont fermé <b>" in messages
    status, report = await sue.get(f"/api/v1/ops/crisis/{crisis['id']}/report")
    assert status == 200 and "Pont fermé &lt;b&gt;" in report and "Cave inondée" in report


async def test_the_ops_routes_are_in_the_openapi_document_and_the_screen_is_served(env: OpsEnv):
    viewer = await env.login("victor")
    status, document = await viewer.get("/api/v1/openapi.json")
    assert status == 200
    assert "/api/v1/ops/incidents/{id}/dispatch" in document["paths"]
    assert "/open311/v2/requests.json" in document["paths"]
    status, page = await viewer.get("/plugins/ops/")
    assert status == 200 and "/plugins/ops/ops.js" in page


async def test_an_oversized_or_unreadable_report_is_refused_and_nothing_is_stored(env: OpsEnv):
    env.ops.desk.settings = env.ops.desk.settings.model_copy(update={"max_photo_bytes": 10_000})
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        good = {"service_code": "leak", "lat": 47.3, "long": 5.0, "description": "x"}
        with pytest.raises(GeoReportError) as refused:
            await client.post_request(**good, media=b"\xff\xd8" + b"0" * 200_000)
        assert refused.value.status == 413 and refused.value.description.startswith("media")
        async with http.post(
            env.url + "/open311/v2/requests.json",
            data=b"service_code=leak&description=\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        ) as response:
            assert 400 <= response.status < 500
    assert env.ops.book.incidents == {}


async def test_with_own_zone_reading_a_report_of_another_zone_does_not_exist(
    own_zone_env: OpsEnv,
):
    env = own_zone_env
    async with aiohttp.ClientSession() as http:
        client = GeoReportClient(env.url + "/open311/v2", http)
        posted = await client.post_request(
            service_code="graffiti", lat=47.3790, long=5.0510, description="tag"
        )
    olivia = await env.login("olivia")  # centre; the report is in nord
    status, _ = await olivia.get(f"/api/v1/ops/reports/{posted['service_request_id']}")
    assert status == 404
    nora = await env.login("nora")
    status, body = await nora.get(f"/api/v1/ops/reports/{posted['service_request_id']}")
    assert status == 200 and body["zone"] == "nord"
