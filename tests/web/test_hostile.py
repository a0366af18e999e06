"""Hostile and clumsy input through the real server: 4xx with a message, never a 500,
never a lost or delayed journal entry, never an unaudited command."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pytest

from cityvisor.testing import wait_for_alarm, wait_for_point

from .conftest import Client, Env

pytestmark = pytest.mark.anyio

HIGH = "tank-a:high_water"
SET_LEVEL = "/api/v1/devices/tank-a/commands/set_level"

REFUSED_TEXT = {
    "lone surrogate": "seen \ud800 there",
    "lone low surrogate": "\udfff",
    "NUL": "before\x00after",
    "escape sequence": "\x1b[2J\x1b[31mcleared",
    "C1 control": "next\x85line",
    "backspace": "abc\x08\x08\x08xyz",
    "too long": "x" * 5001,
}
"""Text no field takes: each is refused with a 422 naming the field."""

ACCEPTED_TEXT = {
    "right-to-left override": "admin\u202egnp.exe",
    "non-BMP": "crew 🚒 on site 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "combining marks": "e\u0301\u0301\u0301" * 50,
    "lines and tabs": "first line\n\tsecond line\r\nthird",
    "at the bound": "é" * 500,
}
"""Text a multi-line comment takes, stored and shown as sent."""


async def raw_post(client: Client, path: str, body: bytes) -> tuple[int, Any]:
    """POST bytes as they are (no JSON encoding by the client)."""
    return await client.post(path, data=body, headers={"Content-Type": "application/json"})


def no_internal_errors(env: Env) -> None:
    assert env.state.counters["http_500"] == 0
    assert env.hub.alarms.write_errors == 0


async def raise_high_water(env: Env) -> None:
    admin = await env.login("admin")
    status, result = await admin.post(SET_LEVEL, {"arguments": {"setpoint": 99}})
    assert status == 200, result
    await wait_for_alarm(env.hub, HIGH, lambda a: a.annunciated)


# --------------------------------------------------------------------------- text at the edge


@pytest.mark.parametrize("case", sorted(REFUSED_TEXT))
async def test_hostile_text_is_refused_with_a_422_naming_the_field_everywhere(env: Env, case: str):
    text = REFUSED_TEXT[case]
    olivia, sam = await env.login("olivia"), await env.login("sam")
    await wait_for_point(env.hub, "centre/demo/tank-a/online", lambda v: v.value is True)
    attempts: list[tuple[Client, str, str, dict[str, Any] | None, str]] = [
        (olivia, "POST", SET_LEVEL, {"arguments": {"setpoint": 40}, "comment": text}, "comment"),
        (olivia, "POST", SET_LEVEL, {"arguments": {"setpoint": 40}, "member": text}, "member"),
        (olivia, "POST", f"/api/v1/alarms/{HIGH}/ack", {"comment": text}, "comment"),
        (sam, "POST", f"/api/v1/alarms/{HIGH}/shelve", {"duration": 60, "reason": text}, "reason"),
        (
            sam,
            "POST",
            "/api/v1/maintenance",
            {"zone": "nord", "end": 2**40, "reason": text},
            "reason",
        ),
        (sam, "POST", "/api/v1/commands/approvals/x/approve", {"comment": text}, "comment"),
        (olivia, "POST", "/api/v1/commands/group", {"command": "set_level", "tag": text}, "tag"),
    ]
    for client, method, path, body, field in attempts:
        status, answer = await client.request(method, path, body)
        assert status == 422, (path, field, status, answer)
        assert answer["error"] == "invalid_request" and field in answer["message"], answer
    encoded = quote(text, safe="", errors="surrogatepass")
    for query in ("search", "user", "device", "kind"):
        status, answer = await olivia.get(f"/api/v1/journal?{query}={encoded}")
        if "surrogate" in case:
            # Percent-encoded, a surrogate is invalid UTF-8, read as U+FFFD: plain text.
            assert status == 200, (query, status, answer)
        else:
            assert status == 422 and query in answer["message"], (query, status, answer)
    status, answer = await env.client().post(
        "/api/v1/session", {"username": text, "password": "correct horse battery"}
    )
    assert status == 422 and "username" in answer["message"]
    status, answer = await env.client().post(
        "/api/v1/session", {"username": "olivia", "password": text}
    )
    assert status == 422 and "password" in answer["message"]
    # Refused before anything was done: the command never ran, nothing was journaled for it.
    assert await env.hub.store.query_journal(kinds=["command_sent"]) == []
    no_internal_errors(env)


async def test_invalid_utf8_and_huge_numbers_in_a_raw_body_are_4xx(env: Env):
    olivia = await env.login("olivia")
    for body in (
        b'{"comment": "\xff\xfe broken"}',
        b'{"comment": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8: not UTF-8
        b'{"arguments": {"setpoint": ' + b"9" * 5000 + b"}}",
        b'{"arguments": {"setpoint": 1e400}}',
        b'{"arguments": {"setpoint": NaN}}',
        b"[" * 100_000,
    ):
        status, answer = await raw_post(olivia, SET_LEVEL, body)
        assert 400 <= status < 500, (body[:40], status, answer)
        assert answer["message"], answer
    no_internal_errors(env)


async def test_a_login_form_with_bytes_that_are_not_utf8_is_refused_plainly(env: Env):
    client = env.client()
    for body in (
        b"username=%ff%fe&password=x",
        b"username=\xff\xfe&password=x",
        b"username=a%00b&password=x",
    ):
        status, answer = await client.post(
            "/api/v1/session",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        )
        assert status in (303, 400, 422), (body, status, answer)
    no_internal_errors(env)


# --------------------------------------------------------------------------- big numbers


async def test_big_numbers_anywhere_are_a_422_with_a_message(env: Env):
    await raise_high_water(env)
    sam, olivia = await env.login("sam"), await env.login("olivia")
    huge = 10**400
    cases: list[tuple[Client, str, str, Any]] = [
        (olivia, "POST", SET_LEVEL, {"arguments": {"setpoint": huge}}),
        (olivia, "POST", SET_LEVEL, {"arguments": {"setpoint": -(10**23)}}),
        (olivia, "GET", "/api/v1/journal?before_id=" + "1" + "0" * 23, None),
        (olivia, "GET", "/api/v1/journal?limit=" + "9" * 400, None),
        (olivia, "GET", "/api/v1/journal?from=" + "9" * 40, None),
        (olivia, "GET", f"/api/v1/points/centre/demo/tank-a/level/history?bucket={10**20}d", None),
        (
            olivia,
            "GET",
            "/api/v1/points/centre/demo/tank-a/level/history?to=99999999999999999",
            None,
        ),
        (olivia, "GET", "/api/v1/alarms/kpis?period=" + "9" * 30, None),
        (olivia, "POST", f"/api/v1/alarms/{HIGH}/steps/" + "9" * 400, None),
        (sam, "POST", "/api/v1/maintenance", {"zone": "nord", "end": 1e30, "reason": "r"}),
        (sam, "POST", "/api/v1/maintenance", {"zone": "nord", "end": 10**23, "reason": "r"}),
        (
            sam,
            "POST",
            "/api/v1/maintenance",
            {"zone": "nord", "end": "+275760-09-13", "reason": "r"},
        ),
        (sam, "POST", f"/api/v1/alarms/{HIGH}/shelve", {"duration": huge, "reason": "r"}),
        (sam, "POST", f"/api/v1/alarms/{HIGH}/shelve", {"duration": 1e308, "reason": "r"}),
    ]
    for client, method, path, body in cases:
        status, answer = await client.request(method, path, body)
        assert status == 422, (path[:80], body, status, answer)
        assert answer["error"] == "invalid_request" or answer["error"] == "invalid_arguments"
        assert answer["message"], answer
    no_internal_errors(env)


# --------------------------------------------------------------------------- static paths


async def test_long_and_non_ascii_static_paths_are_404(env: Env):
    client = env.client()
    for path in ("x" * 64, "☃" * 64, "x" * 5000, "a/" * 300, "%00", "..%2f..%2fetc/passwd"):
        status, answer = await client.get("/static/" + path)
        assert status == 404, (path[:20], status, answer)
    no_internal_errors(env)


async def test_odd_path_parameters_are_4xx(env: Env):
    sam = await env.login("sam")
    odd = ["x" * 5000, "%ED%A0%80", "%00", "%FF%FE", "☃" * 300, "..%2F..%2F", "%0A%0D"]
    for value in odd:
        for method, path in (
            ("GET", f"/api/v1/devices/{value}"),
            ("GET", f"/api/v1/points/{value}/history"),
            ("GET", f"/api/v1/points/{value}/history?bucket=1h"),
            ("GET", f"/api/v1/alarms/{value}"),
            ("GET", f"/api/v1/procedures/{value}"),
            ("POST", f"/api/v1/alarms/{value}/ack"),
            ("POST", f"/api/v1/alarms/{value}/steps/{value}"),
            ("POST", f"/api/v1/devices/{value}/commands/{value}"),
            ("POST", f"/api/v1/commands/confirm/{value}"),
            ("POST", f"/api/v1/commands/approvals/{value}/approve"),
            ("POST", f"/api/v1/commands/pending/{value}/cancel"),
            ("DELETE", f"/api/v1/maintenance/{value}"),
        ):
            status, answer = await sam.request(method, path)
            assert 400 <= status < 500, (method, path[:60], status, answer)
    no_internal_errors(env)


# --------------------------------------------------------------------------- approvals


async def test_an_operator_may_not_approve_what_needs_a_supervisor(env: Env):
    sam, olivia, sue = await env.login("sam"), await env.login("olivia"), await env.login("sue")
    _, device = await olivia.get("/api/v1/devices/tank-a")
    toggle = next(c for c in device["commands"] if c["name"] == "toggle_maintenance")
    assert toggle["two_person"] is True and toggle["approver_role"] == "supervisor"
    status, pending = await sam.post("/api/v1/devices/tank-a/commands/toggle_maintenance", {})
    assert status == 202
    _, mine = await olivia.get("/api/v1/commands/approvals")
    assert mine["approvals"] == []  # not offered to an operator
    status, refused = await olivia.post(
        f"/api/v1/commands/approvals/{pending['approval_id']}/approve"
    )
    assert status == 403 and "supervisor" in refused["message"]
    _, theirs = await sue.get("/api/v1/commands/approvals")
    assert [p["approver_role"] for p in theirs["approvals"]] == ["supervisor"]
    status, done = await sue.post(f"/api/v1/commands/approvals/{pending['approval_id']}/approve")
    assert status == 200 and done["approver"] == "sue"
    # The approved command was journaled before it ran, with its author and its approver.
    (sent,) = await env.hub.store.query_journal(kinds=["command_sent"])
    assert sent.user == "sam" and sent.data["approver"] == "sue" and sent.data["id"] == done["id"]
    no_internal_errors(env)


# --------------------------------------------------------------------------- the journal


async def test_every_class_of_hostile_text_costs_no_journal_entry_and_no_delay(env: Env):
    await raise_high_water(env)
    sam, olivia = await env.login("sam"), await env.login("olivia")
    accepted: list[str] = []
    cases = sorted(ACCEPTED_TEXT.items()) + sorted(REFUSED_TEXT.items())
    for number, (case, text) in enumerate(cases):
        status, answer = await olivia.post(
            SET_LEVEL, {"arguments": {"setpoint": 50}, "comment": text}
        )
        if case in ACCEPTED_TEXT:
            assert status == 200, (case, answer)
            accepted.append(text.strip())
        else:
            assert status == 422 and "comment" in answer["message"], (case, status, answer)
        # The same text as raw bytes (a lone surrogate is then invalid UTF-8).
        raw = text.encode("utf-8", "surrogatepass")
        body = b'{"arguments": {"setpoint": 50}, "comment": "' + raw + b'"}'
        status, answer = await raw_post(olivia, SET_LEVEL, body)
        if status == 200:
            assert case in ACCEPTED_TEXT, case
            accepted.append(raw.decode("utf-8").strip())
        else:
            assert 400 <= status < 500 and answer["message"], (case, status, answer)
        # A shelving reason: refused or stored, it never holds up what comes next.
        status, _ = await sam.post(
            f"/api/v1/alarms/{HIGH}/shelve", {"duration": 60, "reason": text}
        )
        assert status == (200 if case in ACCEPTED_TEXT else 422), case
        if status == 200:
            status, _ = await sam.post(f"/api/v1/alarms/{HIGH}/unshelve")
            assert status == 200
        started = time.monotonic()
        status, _ = await sam.post(
            f"/api/v1/alarms/{HIGH}/out-of-service", {"reason": f"plain #{number}."}
        )
        assert status == 200
        # Answered once journaled: the entry is there, and it came promptly.
        assert time.monotonic() - started < 2.0, case
        assert await env.hub.store.query_journal(alarm=HIGH, search=f"plain #{number}.")
        status, _ = await sam.post(f"/api/v1/alarms/{HIGH}/out-of-service", {"out": False})
        assert status == 200
    # The next plain ack is journaled before it is answered, and promptly.
    started = time.monotonic()
    status, acked = await olivia.post(f"/api/v1/alarms/{HIGH}/ack", {"comment": "plain ack"})
    assert status == 200, acked
    assert time.monotonic() - started < 2.0
    (ack,) = await env.hub.store.query_journal(kinds=["ack"], alarm=HIGH)
    assert ack.message.endswith("plain ack")
    # Every accepted comment is in the journal as sent, before and after its command.
    for kind in ("command_sent", "command"):
        entries = await env.hub.store.query_journal(kinds=[kind], user="olivia", limit=1000)
        assert sorted(e.data["comment"] for e in entries) == sorted(accepted)
    assert all("replaced" not in e.data for e in await env.hub.store.query_journal(limit=10_000))
    assert env.hub.store.journal_replaced == 0
    no_internal_errors(env)
    status, metrics = await sam.get("/metrics")
    assert "cityvisor_http_internal_errors_total 0" in metrics
    assert "cityvisor_alarm_journal_write_errors_total 0" in metrics
    assert "cityvisor_journal_entries_replaced_total 0" in metrics


# --------------------------------------------------------------------------- the document


def unbounded(node: Any, where: str) -> list[str]:
    """Places in a JSON schema where a string has no maxLength or a number no maximum."""
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        # (a property named "type" is a schema, not a type name)
        kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
        if "string" in kinds and not {"maxLength", "enum", "const"} & set(node):
            found.append(f"{where}: text without maxLength")
        if {"integer", "number"} & set(kinds) and "maximum" not in node:
            found.append(f"{where}: number without maximum")
        for key, value in node.items():
            found += unbounded(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += unbounded(value, f"{where}[{index}]")
    return found


async def test_the_openapi_document_bounds_every_text_and_number_a_client_sends(env: Env):
    client = await env.login("victor")
    status, document = await client.get("/api/v1/openapi.json")
    assert status == 200
    found: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    found += unbounded(parameter["schema"], f"{method} {path}?{parameter['name']}")
            body = operation.get("requestBody")
            if body is not None:
                found += unbounded(
                    body["content"]["application/json"]["schema"], f"{method} {path}"
                )
    assert found == []
    comment = document["paths"]["/api/v1/alarms/{id}/ack"]["post"]["requestBody"]
    schema = comment["content"]["application/json"]["schema"]["properties"]["comment"]
    assert schema["maxLength"] == 1000 and "\\u0000" in schema["pattern"]
