"""What our edge publishes, read by an independent Sparkplug B codec, and the reverse.

The independent codec is Eclipse Tahu's JavaScript ``sparkplug-payload``
(pinned in tests/link/node, installed by .ci/run), run under Node.js.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest

import cityvisor.plugins.demo as demo
import cityvisor.plugins.link as link
from cityvisor.testing import running_hub, wait_for_point
from tests.link.conftest import BROKER, broker_is_listening, edge, group_id, tank

pytestmark = pytest.mark.anyio

NODE_DIR = Path(__file__).parent / "node"
WAIT = 10.0


def tahu(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ask Tahu's codec (one Node.js process) to decode or encode each request."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "sparkplug-payload").is_dir():
        pytest.fail(
            "Tahu's sparkplug-payload is not installed: "
            "npm ci --prefix tests/link/node (as .ci/run does)"
        )
    text = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run(
        [node, str(NODE_DIR / "sparkplug.js")],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert all("error" not in a for a in answers), answers
    return answers


def decoded(payload: bytes) -> dict[str, Any]:
    return tahu([{"decode": base64.b64encode(payload).decode()}])[0]


async def test_tahu_reads_our_births_and_data_and_orders_our_edge(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    messages: dict[str, list[bytes]] = {}
    async with aiomqtt.Client(*BROKER) as client:
        await client.subscribe(f"spBv1.0/{group}/#", qos=1)
        config = edge(group, "talant", tank("t1", initial_level=35.0))
        async with running_hub(config, tmp_path, plugins=[demo, link]) as hub:
            with anyio.fail_after(WAIT):
                async for message in client.messages:
                    kind = str(message.topic).split("/")[2]
                    assert isinstance(message.payload, bytes)
                    messages.setdefault(kind, []).append(message.payload)
                    if "DBIRTH" in messages:
                        break
            # An order encoded by Tahu's codec: set the tank's level through the edge's bus.
            order = {"id": "tahu-1", "arguments": {"setpoint": 55.0}, "user": "tahu"}
            dcmd = tahu(
                [
                    {
                        "encode": {
                            "timestamp": 1,
                            "metrics": [
                                {
                                    "name": "Command/set_level",
                                    "type": "String",
                                    "value": json.dumps(order),
                                }
                            ],
                        }
                    }
                ]
            )[0]
            await client.publish(
                f"spBv1.0/{group}/DCMD/talant/t1", base64.b64decode(dcmd["base64"])
            )
            with anyio.fail_after(WAIT):
                async for message in client.messages:
                    if str(message.topic).endswith("/NDATA/talant"):
                        assert isinstance(message.payload, bytes)
                        ndata = decoded(message.payload)
                        break
            await wait_for_point(hub, "nord/demo/t1/setpoint", lambda v: v.value == 55.0)

    nbirth = decoded(messages["NBIRTH"][0])
    assert nbirth["seq"] == 0
    names = {m["name"]: m for m in nbirth["metrics"]}
    assert names["bdSeq"]["type"] == "Int64"
    assert names["Node Control/Rebirth"] == {**names["Node Control/Rebirth"], "value": False}
    dbirth = decoded(messages["DBIRTH"][0])
    assert dbirth["seq"] == 1
    metrics = {m["name"]: m for m in dbirth["metrics"]}
    assert metrics["level"]["type"] == "Double"
    assert metrics["level"]["value"] == 35.0
    assert metrics["level"]["properties"]["engUnit"] == {"type": "String", "value": "%"}
    assert metrics["online"]["type"] == "Boolean"
    assert metrics["valve"]["type"] == "Int32"
    assert json.loads(metrics["valve"]["properties"]["labels"]["value"]) == {
        "0": "closed",
        "1": "filling",
        "2": "draining",
    }
    aliases = [m["alias"] for m in dbirth["metrics"]]
    assert len(set(aliases)) == len(aliases)

    result = {m["name"]: m for m in ndata["metrics"]}["Command/Result"]
    answer = json.loads(result["value"])
    assert answer["id"] == "tahu-1"
    assert answer["outcome"] == "succeeded"
    assert answer["user"] == "central:tahu"


async def test_an_order_that_is_not_json_comes_back_refused_and_a_bare_write_is_ignored(
    tmp_path: Path,
):
    broker_is_listening()
    group = group_id()
    async with aiomqtt.Client(*BROKER) as client:
        await client.subscribe(f"spBv1.0/{group}/#", qos=1)
        config = edge(group, "plombieres", tank("t1", initial_level=35.0))
        async with running_hub(config, tmp_path, plugins=[demo, link]) as hub:
            with anyio.fail_after(WAIT):
                async for message in client.messages:
                    if "/DBIRTH/" in str(message.topic):
                        break
            dcmd = tahu(
                [
                    {
                        "encode": {
                            "timestamp": 1,
                            "metrics": [
                                {"name": "setpoint", "type": "Double", "value": 90.0},
                                {"name": "Command/set_level", "type": "String", "value": "{"},
                            ],
                        }
                    }
                ]
            )[0]
            await client.publish(
                f"spBv1.0/{group}/DCMD/plombieres/t1", base64.b64decode(dcmd["base64"])
            )
            with anyio.fail_after(WAIT):
                async for message in client.messages:
                    if str(message.topic).endswith("/NDATA/plombieres"):
                        assert isinstance(message.payload, bytes)
                        ndata = decoded(message.payload)
                        break
            answer = json.loads(ndata["metrics"][0]["value"])
            assert answer["outcome"] == "refused"
            assert answer["detail"].startswith("bad order:")
            # The bare write to a point was not a command: nothing moved.
            assert hub.points.value("nord/demo/t1/setpoint").value == 35.0
            assert the_edge_commands(hub) == 0


def the_edge_commands(hub: Any) -> int:
    found = link.role(hub)
    assert found is not None
    return int(found.commands)
