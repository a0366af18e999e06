"""Edge and central hubs over MQTT Sparkplug B, through the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import cityvisor.plugins.demo as demo
import cityvisor.plugins.link as link
from cityvisor.core.hub import Hub
from cityvisor.link.central import Central
from cityvisor.link.edge import EdgeNode
from cityvisor.testing import running_hub, wait_for_point
from tests.link.conftest import broker_is_listening, central, edge, group_id, tank

pytestmark = pytest.mark.anyio

WAIT = 10.0
PLUGINS = [demo, link]


def the_central(hub: Hub) -> Central:
    found = link.role(hub)
    assert isinstance(found, Central)
    return found


def the_edge(hub: Hub) -> EdgeNode:
    found = link.role(hub)
    assert isinstance(found, EdgeNode)
    return found


async def test_births_and_data_build_the_same_points_at_the_central(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    async with running_hub(central(group, "control-room"), tmp_path / "c", plugins=PLUGINS) as hub:
        async with running_hub(
            edge(group, "chenove", tank("t1", initial_level=20.0)), tmp_path / "e", plugins=PLUGINS
        ) as edge_hub:
            level = "chenove/nord/demo/t1/level"
            with anyio.fail_after(WAIT):
                await the_central(hub).wait_born(group, "chenove", "t1")
            entry = hub.points.get(level)
            assert entry.spec.unit == "%"
            assert entry.spec.doc == {"fr": "Niveau d'eau", "en": "Water level"}
            assert (entry.zone, entry.family, entry.device_id) == ("nord", "demo", "chenove/t1")
            valve = hub.points.get("chenove/nord/demo/t1/valve")
            assert valve.spec.labels == {0: "closed", 1: "filling", 2: "draining"}
            await wait_for_point(hub, level, lambda v: v.value == 20.0, timeout=WAIT)
            # A change at the edge arrives with its source timestamp.
            edge_hub.devices["t1"]._setpoint = 60.0  # type: ignore[attr-defined]
            arrived = await wait_for_point(hub, level, lambda v: v.value == 60.0, timeout=WAIT)
            at_edge = edge_hub.points.value("nord/demo/t1/level")
            assert at_edge.value == 60.0
            assert arrived.source_ts == at_edge.source_ts
            assert hub.points.value("link/" + group + "/chenove/online").value is True
            assert the_edge(edge_hub).births == 1
        # A clean stop is an NDEATH: every point goes bad, the node's alarm rises.
        await wait_for_point(hub, level, lambda v: v.quality.is_bad, timeout=WAIT)
        assert hub.points.value(level).quality.reason == "comm_failure"
        await wait_for_point(
            hub, f"link/{group}/chenove/online", lambda v: v.value is False, timeout=WAIT
        )
