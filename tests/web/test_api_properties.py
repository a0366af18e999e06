"""Property-based tests of the whole API: schemathesis against the OpenAPI document
that the running hub serves, logged in as the HMI is (session cookie and CSRF token).

Every operation gets examples that fit its schema and examples that break it;
whatever they hold, the hub answers with a status below 500, and its count of
internal errors stays at zero.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .conftest import PASSWORD, Env

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 50
"""Examples per operation and generation mode: enough to find a 500, few enough for ~60 s."""

HOSTILE = st.one_of(
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Co"]), min_size=1, max_size=20),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3).map(lambda t: f"a{t}b"),
    st.integers(min_value=10**300, max_value=10**4000),
    st.integers(max_value=-(10**19)),
    st.sampled_from([1e308, -1e308, 10**23, 2**63, 2**64, -(2**63) - 1]),
    st.text(min_size=2000, max_size=3000),
)
"""What schemas leave out and clients still send: lone surrogates, control and format
characters, integers past every float and past 64 bits, very long text."""

LEFT_OUT = {
    ("DELETE", "/api/v1/session"),  # logging out would end the suite's own session
    ("GET", "/api/v1/ws"),  # a WebSocket, not a request and answer (tests/web/test_ws.py)
}


def fuzz(
    base: str, document: dict[str, Any], cookie: tuple[str, str], csrf: str
) -> tuple[list[str], Counter[int]]:
    """Run every operation's examples against ``base`` (blocking: run it in a thread).

    Returns the requests that got a 5xx (empty when there is none) and the count of
    answers by status (0: requests the client library refused to send).
    """
    schema = schemathesis.openapi.from_dict(document)
    http = requests.Session()
    http.cookies.set(*cookie)
    headers = {"X-CSRF-Token": csrf}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        if (operation.method.upper(), operation.path) in LEFT_OUT:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # The session as the HMI holds it: a valid cookie and CSRF token on every request
            # (left to itself, schemathesis makes up the security scheme's cookie too).
            strategy = operation.as_strategy(
                generation_mode=mode, cookies={cookie[0]: cookie[1]}, headers=headers
            )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=strategy,
                hostile=HOSTILE,
                where=st.integers(0, 2**16),
                hostile_too=st.booleans(),
            )
            def call(case: schemathesis.Case, hostile: Any, where: int, hostile_too: bool) -> None:
                if hostile_too:
                    put_hostile(case, hostile, where)
                try:
                    response = case.call(base_url=base, session=http, headers=headers, timeout=10)
                except (requests.exceptions.InvalidHeader, UnicodeError, ValueError):
                    statuses[0] += 1
                    return  # a request the client library itself refuses to send
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {response.request.url} -> {response.status_code}: "
                        f"{response.text[:200]}"
                    )

            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                call()  # Unsatisfiable: a schema with nothing to break (negative mode)
    return failures, statuses


def put_hostile(case: schemathesis.Case, value: Any, where: int) -> None:
    """Put ``value`` in one field of the case's JSON body (nested ones included), or in
    one of its query parameters when it is text that a URL can carry."""
    if isinstance(case.body, dict):
        slots: list[tuple[dict[str, Any], str]] = []

        def collect(node: Any) -> None:
            if isinstance(node, dict):
                for key in list(node):
                    slots.append((node, key))
                    collect(node[key])

        collect(case.body)
        if slots:
            container, key = slots[where % len(slots)]
            container[key] = value
        else:
            case.body["comment"] = value
    elif isinstance(case.query, dict) and case.query and isinstance(value, str | int):
        keys = sorted(case.query)
        text = value if isinstance(value, str) else str(value) if value < 10**4000 else "9" * 5000
        case.query[keys[where % len(keys)]] = text


async def test_no_request_the_schema_allows_or_breaks_gets_a_5xx(env: Env):
    client = await env.login("admin")
    status, document = await client.get("/api/v1/openapi.json")
    assert status == 200
    session_id = await session_cookie(env, client)
    with anyio.fail_after(240):
        failures, statuses = await anyio.to_thread.run_sync(
            fuzz, env.url, document, (env.state.cookie_name, session_id), client.csrf
        )
    assert failures == []
    # The suite really spoke to the API as a logged-in user: answers and refusals of
    # every kind, and "no session" only from the login route.
    answered = sum(n for status, n in statuses.items() if status)
    assert answered > 1000 and statuses[200] > 100 and statuses[422] > 100
    assert statuses[401] < answered * 0.05
    assert env.state.counters["http_500"] == 0
    status, metrics = await client.get("/metrics")
    assert status == 200 and "cityvisor_http_internal_errors_total 0" in metrics
    # The hub still works for the next operator.
    assert (await env.client().login("olivia", PASSWORD))["user"]["name"] == "olivia"


async def session_cookie(env: Env, client: Any) -> str:
    """The session id the logged-in client holds in its cookie jar."""
    for cookie in client.http.cookie_jar:
        if cookie.key == env.state.cookie_name:
            return str(cookie.value)
    raise AssertionError("the login set no session cookie")
