"""The REST API over real HTTP: devices, points, history, commands, alarms, journal."""

from __future__ import annotations

import json
import sqlite3
import time

import anyio
import pytest

from cityvisor.core.points import DataType, PointSpec
from cityvisor.testing import wait_for_alarm, wait_for_point

from .conftest import Env

pytestmark = pytest.mark.anyio

LEVEL = "centre/demo/tank-a/level"


async def test_devices_are_listed_with_their_communication_and_filtered(env: Env):
    client = await env.login("victor")
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    status, body = await client.get("/api/v1/devices")
    assert status == 200
    assert [d["id"] for d in body["devices"]] == ["tank-a", "tank-b"]
    tank = body["devices"][0]
    assert tank["communication"]["online"] is True
    assert tank["location"] == [47.32, 5.04] and tank["tags"] == ["water"]
    assert "config" not in tank
    _, nord = await client.get("/api/v1/devices?zone=nord")
    assert [d["id"] for d in nord["devices"]] == ["tank-b"]
    _, none = await client.get("/api/v1/devices?family=lighting")
    assert none["devices"] == []


async def test_a_device_has_its_points_commands_with_schemas_and_alarms(env: Env):
    client = await env.login("olivia")
    status, tank = await client.get("/api/v1/devices/tank-a")
    assert status == 200
    names = {p["name"] for p in tank["points"]}
    assert {"level", "setpoint", "online", "maintenance"} <= names
    commands = {c["name"]: c for c in tank["commands"]}
    set_level = commands["set_level"]
    assert set_level["parameters"]["properties"]["setpoint"]["maximum"] == 100
    assert set_level["parameters"]["required"] == ["setpoint"]
    assert set_level["permitted"] is True
    assert commands["drain"]["confirm"] is True and commands["drain"]["permitted"] is False
    assert commands["toggle_maintenance"]["two_person"] is True
    assert set_level["interlocks"][0]["reason"]["en"] == "Tank under maintenance"
    assert {a["name"] for a in tank["alarms"]} >= {"high_water", "communication_lost"}
    status, body = await client.get("/api/v1/devices/nope")
    assert status == 404 and body["error"] == "unknown_device"


async def test_points_by_pattern(env: Env):
    client = await env.login("victor")
    status, body = await client.get("/api/v1/points?pattern=centre/demo/tank-a/*")
    assert status == 200
    ids = {p["id"] for p in body["points"]}
    assert LEVEL in ids and not any(i.startswith("nord/") for i in ids)
    level = next(p for p in body["points"] if p["id"] == LEVEL)
    assert level["unit"] == "%" and set(level["current"]) >= {"value", "quality", "source_ts"}
    _, everything = await client.get("/api/v1/points?pattern=**&limit=3")
    assert len(everything["points"]) == 3 and everything["truncated"] is True
    status, body = await client.get("/api/v1/points?limit=zero")
    assert status == 422 and "limit" in body["message"]


async def test_the_points_listing_pages_with_a_cursor_through_every_point_once(env: Env):
    for i in range(1_200):
        spec = PointSpec(name=f"p{i}", dtype=DataType.FLOAT, history="none")
        env.hub.points.register(f"centre/bulk/box-{i // 100}/p{i}", spec, zone="centre")
    client = await env.login("victor")
    pages, cursor, ids = 0, None, []
    while True:
        query = "/api/v1/points?pattern=centre/bulk/**&limit=500"
        status, page = await client.get(query + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        pages += 1
        ids += [p["id"] for p in page["points"]]
        assert page["count"] == len(page["points"])
        if not page["truncated"]:
            assert page["next"] is None
            break
        assert page["next"] == page["points"][-1]["id"]
        cursor = page["next"]
    assert pages == 3 and len(ids) == len(set(ids)) == 1_200
    status, body = await client.get("/api/v1/points?pattern=centre/bulk/**&cursor=nord/x")
    assert status == 422 and "cursor" in body["message"]


async def test_listing_the_whole_city_never_holds_the_loop_long(env: Env):
    # A loop-lag probe: a task that asks for a 1 ms sleep and notes how late it wakes.
    for i in range(30_000):
        spec = PointSpec(name=f"p{i}", dtype=DataType.FLOAT, history="none")
        env.hub.points.register(f"centre/bulk/box-{i // 100}/p{i}", spec, zone="centre")
    client = await env.login("victor")
    lags: list[float] = []
    done = anyio.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await anyio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        async with client.http.get(client.base + "/api/v1/points?limit=100000") as response:
            status = response.status
            raw = await response.read()
        done.set()
    body = json.loads(raw)  # decoded after the probe: the client's decoding is not the server's
    assert status == 200 and body["count"] >= 30_000 and not body["truncated"]
    # The client and the server share this loop, so the bound is generous: a
    # listing built in one step holds it for the whole city (seconds here).
    assert len(lags) > 10 and max(lags) < 0.25, max(lags)


async def test_history_raw_and_in_buckets(env: Env):
    client = await env.login("olivia")
    await client.post("/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 80}})
    await wait_for_point(env.hub, LEVEL, lambda v: v.value >= 80)
    status, raw = await client.get(f"/api/v1/points/{LEVEL}/history")
    assert status == 200 and len(raw["values"]) >= 5
    values = [v["value"] for v in raw["values"] if v["quality"]["status"] == "good"]
    assert values == sorted(values) and values[-1] == 80
    encoded = LEVEL.replace("/", "%2F")
    status, buckets = await client.get(f"/api/v1/points/{encoded}/history?bucket=1h")
    assert status == 200, buckets
    assert buckets["bucket_ms"] == 3_600_000 and 1 <= len(buckets["buckets"]) <= 2
    bucket = buckets["buckets"][-1]
    assert bucket["max"] == 80 and bucket["min"] <= 51 and bucket["count"] >= 5
    status, body = await client.get(f"/api/v1/points/{LEVEL}/history?bucket=1ms&from=0")
    assert status == 422 and "10000 buckets" in body["message"]
    status, body = await client.get(f"/api/v1/points/{LEVEL}/history?from=tomorrow")
    assert status == 422
    status, body = await client.get("/api/v1/points/no/such/point/history")
    assert status == 404 and body["error"] == "unknown_point"


async def test_a_command_succeeds_with_its_feedback_and_is_journaled_with_the_user(env: Env):
    client = await env.login("olivia")
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    status, result = await client.post(
        "/api/v1/devices/tank-a/commands/set_level",
        {"arguments": {"setpoint": 70}, "comment": "night mode"},
    )
    assert status == 200, result
    assert result["outcome"] == "succeeded" and result["feedback"] == 70.0
    assert result["user"] == "olivia"
    (entry,) = await env.hub.store.query_journal(kinds=["command"], user="olivia")
    assert entry.device == "tank-a" and entry.data["comment"] == "night mode"


async def test_a_viewer_may_not_command(env: Env):
    client = await env.login("victor")
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 10}}
    )
    assert status == 403 and body["error"] == "not_permitted"
    assert "operator" in body["message"]


async def test_an_operator_may_not_command_another_zone(env: Env):
    client = await env.login("nora")
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 10}}
    )
    assert status == 403 and "zone centre" in body["message"]
    refused = await env.hub.store.query_journal(kinds=["command"], user="nora")
    assert refused[0].data["outcome"] == "refused"


async def test_invalid_arguments_are_422_listing_every_problem(env: Env):
    client = await env.login("olivia")
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level",
        {"arguments": {"setpoint": 150, "speed": 3}, "member": "c1"},
    )
    assert status == 422 and body["error"] == "invalid_arguments"
    problems = " | ".join(body["problems"])
    assert "setpoint must be <= 100" in problems
    assert "unknown argument(s): speed" in problems
    assert "member 'c1'" in problems
    status, body = await client.post(
        "/api/v1/devices/tank-a/commands/set_level",
        {"arguments": {"setpoint": "high"}, "comment": 12},
    )
    assert status == 422 and body["problems"] == ["comment must be a string"]
    status, body = await client.post("/api/v1/devices/tank-a/commands/set_level", [1])
    assert status == 422
    status, body = await client.post("/api/v1/devices/tank-a/commands/nope", {})
    assert status == 404 and body["error"] == "unknown_command"
    status, body = await client.post("/api/v1/devices/nope/commands/set_level", {})
    assert status == 404 and body["error"] == "unknown_device"


async def test_select_before_operate(env: Env):
    sam = await env.login("sam")
    status, selected = await sam.post("/api/v1/devices/tank-a/commands/drain", {})
    assert status == 202 and selected["outcome"] == "pending_confirmation"
    token = selected["token"]
    _, mine = await sam.get("/api/v1/commands/confirmations")
    assert [p["id"] for p in mine["confirmations"]] == [token]
    sue = await env.login("sue")
    status, body = await sue.post(f"/api/v1/commands/confirm/{token}")
    assert status == 409 and body["error"] == "confirmation"
    status, done = await sam.post(f"/api/v1/commands/confirm/{token}")
    assert status == 200 and done["outcome"] == "succeeded" and done["confirmed_by"] == "sam"
    status, body = await sam.post(f"/api/v1/commands/confirm/{token}")
    assert status == 409


async def test_two_person_approval_then_the_interlock_holds(env: Env):
    sam, sue = await env.login("sam"), await env.login("sue")
    status, pending = await sam.post("/api/v1/devices/tank-a/commands/toggle_maintenance", {})
    assert status == 202 and pending["outcome"] == "pending_approval"
    approval = pending["approval_id"]
    _, own = await sam.get("/api/v1/commands/approvals")
    assert own["approvals"] == [] and [p["id"] for p in own["requested"]] == [approval]
    status, body = await sam.post(f"/api/v1/commands/approvals/{approval}/approve")
    assert status == 403
    _, theirs = await sue.get("/api/v1/commands/approvals")
    assert [p["id"] for p in theirs["approvals"]] == [approval]
    status, done = await sue.post(
        f"/api/v1/commands/approvals/{approval}/approve", {"comment": "planned work"}
    )
    assert status == 200 and done["approver"] == "sue" and done["user"] == "sam"
    await wait_for_point(env.hub, "centre/demo/tank-a/maintenance", lambda v: v.value is True)
    olivia = await env.login("olivia")
    status, body = await olivia.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 20}}
    )
    assert status == 409 and body["error"] == "interlocked"
    assert body["interlock"]["reason"]["en"] == "Tank under maintenance"
    assert "Tank under maintenance" in body["message"]


async def test_an_approval_can_be_rejected_or_cancelled(env: Env):
    sam, sue = await env.login("sam"), await env.login("sue")
    _, first = await sam.post("/api/v1/devices/tank-b/commands/toggle_maintenance", {})
    status, rejected = await sue.post(
        f"/api/v1/commands/approvals/{first['approval_id']}/reject", {"comment": "not now"}
    )
    assert status == 200 and rejected["outcome"] == "rejected"
    _, second = await sam.post("/api/v1/devices/tank-b/commands/toggle_maintenance", {})
    status, cancelled = await sam.post(f"/api/v1/commands/pending/{second['approval_id']}/cancel")
    assert status == 200 and cancelled["outcome"] == "cancelled"


async def test_a_group_command_by_family_has_one_result_per_device(env: Env):
    await wait_for_point(env.hub, "nord/demo/tank-b/online", lambda v: v.value is True)
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    olivia = await env.login("olivia")
    status, result = await olivia.post(
        "/api/v1/commands/group",
        {"command": "set_level", "arguments": {"setpoint": 45}, "family": "demo"},
    )
    assert status == 200, result
    outcomes = {r["device_id"]: r["outcome"] for r in result["results"]}
    assert outcomes == {"tank-a": "succeeded", "tank-b": "refused"}
    assert result["summary"] == {"succeeded": 1, "refused": 1}
    status, body = await olivia.post("/api/v1/commands/group", {"command": "set_level"})
    assert status == 422 and "at least one of zone" in body["message"]
    status, body = await olivia.post(
        "/api/v1/commands/group", {"command": "set_level", "zone": "centre", "members": 3}
    )
    assert status == 422


async def raise_high_water(env: Env) -> None:
    admin = await env.login("admin")
    status, result = await admin.post(
        "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": 99}}
    )
    assert status == 200, result
    await wait_for_alarm(env.hub, "tank-a:high_water", lambda a: a.annunciated)


async def test_alarms_list_ack_shelve_unshelve_and_procedure(env: Env):
    await raise_high_water(env)
    olivia = await env.login("olivia")
    status, body = await olivia.get("/api/v1/alarms")
    assert status == 200
    ids = [a["id"] for a in body["alarms"]]
    assert "tank-a:high_water" in ids
    assert body["counts"]["high"]["unacked"] >= 1
    _, filtered = await olivia.get("/api/v1/alarms?zone=nord")
    assert "tank-a:high_water" not in [a["id"] for a in filtered["alarms"]]
    _, high = await olivia.get("/api/v1/alarms?priority=high&state=unack_active")
    assert "tank-a:high_water" in [a["id"] for a in high["alarms"]]
    status, _ = await olivia.get("/api/v1/alarms?priority=urgent")
    assert status == 422

    status, detail = await olivia.get("/api/v1/alarms/tank-a:high_water")
    assert detail["procedure"]["id"] == "DEMO-01" and len(detail["procedure"]["steps"]) == 3
    status, ticked = await olivia.post("/api/v1/alarms/tank-a:high_water/steps/1")
    assert status == 200 and ticked["alarm"]["checklist"]["steps"]["1"]["by"] == "olivia"
    status, body = await olivia.post("/api/v1/alarms/tank-a:high_water/steps/7")
    assert status == 409
    status, body = await olivia.post("/api/v1/alarms/tank-a:high_water/steps/one")
    assert status == 422

    status, acked = await olivia.post(
        "/api/v1/alarms/tank-a:high_water/ack", {"comment": "crew called"}
    )
    assert status == 200 and acked["alarm"]["acked_by"] == "olivia"
    status, again = await olivia.post("/api/v1/alarms/tank-a:high_water/ack")
    assert status == 409 and again["error"] == "alarm_action"

    status, body = await olivia.post(
        "/api/v1/alarms/tank-a:high_water/shelve", {"duration": 60, "reason": "x"}
    )
    assert status == 403
    sam = await env.login("sam")
    status, body = await sam.post("/api/v1/alarms/tank-a:high_water/shelve", {"duration": -1})
    assert status == 422 and len(body["problems"]) == 2
    status, shelved = await sam.post(
        "/api/v1/alarms/tank-a:high_water/shelve", {"duration": 600, "reason": "sensor works"}
    )
    assert status == 200 and shelved["alarm"]["shelved_by"] == "sam"
    status, back = await olivia.post("/api/v1/alarms/tank-a:high_water/unshelve")
    assert status == 200 and back["alarm"]["shelved"] is False

    status, body = await olivia.post("/api/v1/alarms/nope:alarm/ack")
    assert status == 404 and body["error"] == "unknown_alarm"
    nora = await env.login("nora")
    status, body = await nora.post("/api/v1/alarms/tank-a:communication_lost/ack")
    assert status == 403

    journal = await env.hub.store.query_journal(alarm="tank-a:high_water")
    by_kind = {(e.kind, e.user) for e in journal}
    assert {("ack", "olivia"), ("shelve", "sam"), ("shelve", "olivia")} <= by_kind
    assert ("procedure_step", "olivia") in by_kind
    ack = next(e for e in journal if e.kind == "ack")
    assert "crew called" in ack.message


async def test_out_of_service_and_kpis(env: Env):
    sam = await env.login("sam")
    status, body = await sam.post("/api/v1/alarms/tank-b:low_water/out-of-service", {})
    assert status == 409  # a reason is needed
    status, body = await sam.post(
        "/api/v1/alarms/tank-b:low_water/out-of-service", {"reason": "sensor replaced"}
    )
    assert status == 200 and body["alarm"]["out_of_service"] is True
    status, body = await sam.post("/api/v1/alarms/tank-b:low_water/out-of-service", {"out": False})
    assert status == 200 and body["alarm"]["out_of_service"] is False
    status, kpis = await sam.get("/api/v1/alarms/kpis")
    assert status == 200 and "by_priority" in kpis and "zones" in kpis


async def test_the_journal_chain_state_is_read_only_and_needs_a_session(env: Env):
    status, _ = await env.client().get("/api/v1/journal/chain")
    assert status == 401
    olivia = await env.login("olivia")
    status, chain = await olivia.get("/api/v1/journal/chain")
    assert status == 200, chain
    assert chain["ok"] is True and chain["broken"] is None
    assert chain["rows"] >= 1 and chain["head_id"] >= chain["rows"]
    assert len(chain["head_hash"]) == 64 and chain["checked_at"] > 0
    status, _ = await olivia.post("/api/v1/journal/chain", {})
    assert status == 405


async def test_the_journal_chain_state_names_an_edited_row(env: Env):
    sam = await env.login("sam")
    with sqlite3.connect(env.hub.store.path) as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE journal SET message = 'nothing happened' WHERE id = 1")
    status, chain = await sam.get("/api/v1/journal/chain")
    assert status == 200
    assert chain["ok"] is False and chain["rows"] == 0
    assert chain["broken"]["id"] == 1 and "edited" in chain["broken"]["reason"]


async def test_maintenance_windows(env: Env):
    sam = await env.login("sam")
    status, created = await sam.post(
        "/api/v1/maintenance",
        {"device_id": "tank-b", "end": "2999-01-01T00:00:00Z", "reason": "pump change"},
    )
    assert status == 201, created
    window = created["window"]
    _, listed = await sam.get("/api/v1/maintenance")
    assert [w["id"] for w in listed["windows"]] == [window["id"]]
    await wait_for_alarm(env.hub, "tank-b:high_water", lambda a: a.maintenance)
    status, body = await sam.post(
        "/api/v1/maintenance", {"zone": "nord", "device_id": "tank-b", "end": 5, "reason": ""}
    )
    assert status == 422 and len(body["problems"]) == 2
    olivia = await env.login("olivia")
    status, _ = await olivia.delete(f"/api/v1/maintenance/{window['id']}")
    assert status == 403
    status, _ = await sam.delete(f"/api/v1/maintenance/{window['id']}")
    assert status == 200
    status, _ = await sam.delete(f"/api/v1/maintenance/{window['id']}")
    assert status == 404


async def test_the_journal_is_filtered_and_paged(env: Env):
    olivia = await env.login("olivia")
    for setpoint in range(30, 37):
        await olivia.post(
            "/api/v1/devices/tank-a/commands/set_level", {"arguments": {"setpoint": setpoint}}
        )
    status, page = await olivia.get("/api/v1/journal?kind=command&limit=3")
    assert status == 200 and len(page["entries"]) == 3
    seen = [e["id"] for e in page["entries"]]
    while page["next_before_id"] is not None:
        _, page = await olivia.get(
            f"/api/v1/journal?kind=command&limit=3&before_id={page['next_before_id']}"
        )
        seen += [e["id"] for e in page["entries"]]
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    _, logins = await olivia.get("/api/v1/journal?kind=login,logout&user=olivia")
    assert [e["kind"] for e in logins["entries"]] == ["login"]
    _, found = await olivia.get("/api/v1/journal?search=set_level&device=tank-a")
    # Each command twice: the order journaled before it was sent, then its outcome.
    kinds = [e["kind"] for e in found["entries"]]
    assert kinds.count("command") == 7 and kinds.count("command_sent") == 7
    _, none = await olivia.get("/api/v1/journal?kind=command&to=0")
    assert none["entries"] == []
    status, _ = await olivia.get("/api/v1/journal?limit=5000")
    assert status == 422
    status, _ = await olivia.get("/api/v1/journal?from=yesterday")
    assert status == 422


async def test_site(env: Env):
    client = await env.login("victor")
    status, site = await client.get("/api/v1/site")
    assert status == 200 and site["name"] == "Testville"
    assert [z["id"] for z in site["zones"]] == ["centre", "nord"]


async def test_a_hub_that_keeps_running_after_bad_requests(env: Env):
    client = await env.login("olivia")
    for path in (
        "/api/v1/alarms/%00",
        "/api/v1/devices/%ff",
        "/api/v1/points?limit=-5",
        "/api/v1/journal?before_id=-1",
    ):
        status, body = await client.get(path)
        assert 400 <= status < 500, (path, status, body)
    assert env.state.counters["http_500"] == 0
    with anyio.fail_after(5):
        await wait_for_point(env.hub, LEVEL, lambda v: v.quality.is_good)
