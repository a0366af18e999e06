"""``/api/v1/link``: the central's nodes, and commands to an edge's device through the API."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import cityvisor.plugins.demo as demo
import cityvisor.plugins.link as link
import cityvisor.plugins.web as web
from cityvisor.link.central import Central
from cityvisor.testing import api_client, running_hub, wait_for_point
from tests.link.conftest import broker_is_listening, central, edge, group_id, tank

pytestmark = pytest.mark.anyio

WAIT = 10.0


async def test_an_operator_of_the_zone_commands_an_edge_device_through_the_central_api(
    tmp_path: Path,
):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    async with (
        running_hub(
            central(group, f"{group}-room", web=True), tmp_path / "c", plugins=[demo, link, web]
        ) as hub,
        running_hub(edge(group, "talant", tank("t1")), tmp_path / "e", plugins=[demo, link]),
    ):
        host = link.role(hub)
        assert isinstance(host, Central)
        with anyio.fail_after(WAIT):
            await host.wait_born(group, "talant", "t1")
        path = f"/api/v1/link/nodes/{group}/talant/devices/t1/commands/set_level"
        async with api_client(hub, "olivia", role="operator", zones=["nord"]) as olivia:
            status, state = await olivia.get("/api/v1/link")
            assert status == 200
            assert state["role"] == "central" and state["active"] is True
            assert {"group": group, "node": "talant", "online": True, "devices": ["t1"]} in (
                state["nodes"]
            )
            status, result = await olivia.post(path, {"arguments": {"setpoint": 70.0}})
            assert status == 200, result
            assert result["outcome"] == "succeeded"
            assert result["user"] == "central:olivia"
            await wait_for_point(
                hub, "talant/nord/demo/t1/setpoint", lambda v: v.value == 70.0, timeout=WAIT
            )
            status, body = await olivia.post(path, {"arguments": "70"})
            assert status == 422 and body["problems"] == ["arguments"]
            status, body = await olivia.post(
                f"/api/v1/link/nodes/{group}/talant/devices/nope/commands/set_level", {}
            )
            assert status == 404
        async with api_client(hub, "sam", role="operator", zones=["sud"]) as sam:
            status, body = await sam.post(path, {"arguments": {"setpoint": 10.0}})
            assert status == 403, body
        async with api_client(hub, "victor", role="viewer") as victor:
            status, body = await victor.post(path, {"arguments": {"setpoint": 10.0}})
            assert status == 403, body
