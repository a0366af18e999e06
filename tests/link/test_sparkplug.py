"""Edge and central hubs over MQTT Sparkplug B, through the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import anyio
import pytest

import cityvisor.plugins.bollards as bollards
import cityvisor.plugins.demo as demo
import cityvisor.plugins.link as link
from cityvisor.core.hub import Hub
from cityvisor.core.points import Point, PointValue, now_ms
from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.link import codec
from cityvisor.link.central import Central, LinkCommandError
from cityvisor.link.edge import EdgeNode
from cityvisor.testing import free_tcp_port, running_hub, wait_for_alarm, wait_for_point
from tests.hal.modbus_fixtures import HOST
from tests.link.conftest import (
    BROKER,
    broker_is_listening,
    central,
    deployment,
    edge,
    group_id,
    tank,
)
from tests.plugins.conftest import OPERATOR, command_journal, device

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
    async with running_hub(central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS) as hub:
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


async def test_a_killed_edge_shows_bad_quality_at_the_central_within_the_keepalive(
    tmp_path: Path,
):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    config = tmp_path / "edge.toml"
    config.write_text(
        deployment(
            {"role": "edge", "group": group, "node": "quetigny", "keepalive": 2},
            tank("t1"),
            web=True,
        )
    )
    async with running_hub(central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS) as hub:
        process = await anyio.open_process(
            [sys.executable, "-m", "cityvisor", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with anyio.fail_after(30):
                await the_central(hub).wait_born(group, "quetigny", "t1")
            level = "quetigny/nord/demo/t1/level"
            await wait_for_point(hub, level, lambda v: v.quality.is_good, timeout=WAIT)
            process.send_signal(signal.SIGKILL)
            killed = anyio.current_time()
            # The broker gives up on a silent client after 1.5 keepalives and sends its will.
            await wait_for_point(hub, level, lambda v: v.quality.is_bad, timeout=2 * 1.5 + 2)
            assert anyio.current_time() - killed <= 2 * 1.5 + 2
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
        assert hub.points.value(level).quality.reason == "comm_failure"
        await wait_for_alarm(hub, f"link:{group}:quetigny", lambda a: a.active, timeout=WAIT)


async def test_a_sequence_gap_marks_the_node_bad_and_asks_for_a_rebirth(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    async with (
        running_hub(central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS) as hub,
        running_hub(
            edge(group, "fontaine", tank("t1")), tmp_path / "e", plugins=PLUGINS
        ) as edge_hub,
    ):
        host, node = the_central(hub), the_edge(edge_hub)
        with anyio.fail_after(WAIT):
            await host.wait_born(group, "fontaine", "t1")
        level = "fontaine/nord/demo/t1/level"
        await wait_for_point(hub, level, lambda v: v.quality.is_good, timeout=WAIT)
        # A DDATA that skips sequence numbers (as if messages were lost on the way).
        gap = codec.data_payload(now_ms(), (node.seq + 7) % 256, [])
        async with aiomqtt.Client(*BROKER) as client:
            await client.publish(f"spBv1.0/{group}/DDATA/fontaine/t1", gap)
        await wait_for_point(hub, level, lambda v: v.quality.reason == "sequence_gap", timeout=WAIT)
        assert host.gaps >= 1
        # The rebirth the central asked for brings the points back.
        await wait_for_point(hub, level, lambda v: v.quality.is_good, timeout=WAIT)
        assert host.rebirths >= 1
        assert node.births >= 2


async def test_a_command_refused_by_an_edge_interlock_comes_back_refused(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    async with BollardSimulator(HOST, 0, bollards=1, travel_time=0.5, tick=0.02) as sim:
        bollard = device(
            "bol-1",
            "bollards.bollard",
            "nord",
            host=HOST,
            port=sim.port,
            unit=1,
            period=0.1,
            travel_time=3.0,
        )
        async with running_hub(
            central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS
        ) as hub:
            async with running_hub(
                edge(group, "dijon-centre", bollard), tmp_path / "e", plugins=[bollards, link]
            ) as edge_hub:
                host = the_central(hub)
                with anyio.fail_after(WAIT):
                    await host.wait_born(group, "dijon-centre", "bol-1")
                loop = "dijon-centre/nord/bollards/bol-1/vehicle_on_loop"
                await wait_for_point(hub, loop, lambda v: v.value is False, timeout=WAIT)
                sim.vehicle_arrives(1)
                await wait_for_point(hub, loop, lambda v: v.value is True, timeout=WAIT)
                refused = await host.command(
                    group, "dijon-centre", "bol-1", "raise", user=OPERATOR, comment="closing"
                )
                assert refused["outcome"] == "refused"
                assert refused["code"] == "interlocked"
                assert "vehicle on the loop" in refused["message"]["en"]
                # Once the vehicle is gone: select, then operate, as at the edge itself.
                sim.vehicle_leaves(1)
                await wait_for_point(hub, loop, lambda v: v.value is False, timeout=WAIT)
                selected = await host.command(
                    group, "dijon-centre", "bol-1", "raise", user=OPERATOR
                )
                assert selected["outcome"] == "pending_confirmation"
                done = await host.command(
                    group,
                    "dijon-centre",
                    "bol-1",
                    "raise",
                    user=OPERATOR,
                    confirmation=selected["token"],
                )
                assert done["outcome"] == "succeeded", done
                # The edge audited both attempts under the central's user.
                journal = await command_journal(edge_hub)
                assert [e.user for e in journal][-3:] == ["central:olivia"] * 3
                assert "refused" in [e.data.get("outcome") for e in journal]
            # The central journaled what it sent, with the user.
            sent = await hub.store.query_journal(kinds=["link"], limit=10)
            assert [e.user for e in sent] == ["olivia"] * 3


@asynccontextmanager
async def private_broker(port: int) -> AsyncIterator[anyio.abc.Process]:
    """A Mosquitto of this test's own on ``port`` (stopped with the block)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = await anyio.open_process(
        [mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_changes_made_while_the_broker_is_away_are_replayed_in_order(tmp_path: Path):
    port = free_tcp_port()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    level = "nord/demo/t1/level"
    during: list[tuple[int, float]] = []
    async with (
        private_broker(port) as broker,
        running_hub(
            central(group, f"{group}-room", port=port), tmp_path / "c", plugins=PLUGINS
        ) as hub,
        running_hub(
            edge(
                group,
                "plombieres",
                tank("t1", initial_level=10.0),
                port=port,
                primary_hosts=[f"{group}-room"],
            ),
            tmp_path / "e",
            plugins=PLUGINS,
        ) as edge_hub,
    ):
        host, node = the_central(hub), the_edge(edge_hub)
        with anyio.fail_after(WAIT):
            await host.wait_born(group, "plombieres", "t1")
        broker.terminate()
        await broker.wait()
        with anyio.fail_after(WAIT):
            while node.connected:  # noqa: ASYNC110  (a flag, no event for it)
                await anyio.sleep(0.05)

        def record(point: Point, value: PointValue) -> None:
            if point.id == level:
                during.append((value.source_ts, value.value))

        edge_hub.points.add_listener(record)
        tank_device = edge_hub.devices["t1"]
        tank_device._setpoint = 40.0  # type: ignore[attr-defined]
        await wait_for_point(edge_hub, level, lambda v: v.value == 40.0, timeout=WAIT)
        edge_hub.points.remove_listener(record)
        assert len(during) >= 5
        with anyio.fail_after(WAIT):
            while len(node.buffer) < len(during):  # noqa: ASYNC110  (a counter)
                await anyio.sleep(0.05)
        # The broker comes back on the same port: births, then the buffer, in order.
        async with private_broker(port):
            central_level = "plombieres/" + level
            await wait_for_point(hub, central_level, lambda v: v.value == 40.0, timeout=30)
            with anyio.fail_after(WAIT):
                while host.historical < len(during):  # noqa: ASYNC110  (a counter)
                    await anyio.sleep(0.05)
            assert len(node.buffer) == 0
            await hub.store.flush_history()
            rows = await hub.store.history(central_level, during[0][0], during[-1][0] + 1)
            replayed = [(r.source_ts, r.value) for r in rows if isinstance(r, PointValue)]
            assert replayed == during


async def test_the_standby_central_takes_over_when_the_active_one_goes_offline(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    for name in ("a", "b", "e"):
        (tmp_path / name).mkdir()
    room_a, room_b = f"{group}-a", f"{group}-b"
    async with (
        running_hub(
            central(group, room_b, standby_for=room_a), tmp_path / "b", plugins=PLUGINS
        ) as standby_hub,
        running_hub(edge(group, "longvic", tank("t1")), tmp_path / "e", plugins=PLUGINS),
    ):
        standby = the_central(standby_hub)
        async with running_hub(central(group, room_a), tmp_path / "a", plugins=PLUGINS) as hub:
            active = the_central(hub)
            with anyio.fail_after(WAIT):
                await active.wait_born(group, "longvic", "t1")
                # The standby gathers the same points, but sends nothing.
                await standby.wait_born(group, "longvic", "t1")
            with anyio.fail_after(WAIT):
                # The active one's STATE may reach the standby after the births did.
                while standby.active:  # noqa: ASYNC110  (a flag, no event for it)
                    await anyio.sleep(0.05)
            assert active.active
            with pytest.raises(LinkCommandError, match="standby"):
                await standby.command(
                    group, "longvic", "t1", "set_level", {"setpoint": 30.0}, user=OPERATOR
                )
        # The active central stopped: its STATE says offline, the standby takes over.
        with anyio.fail_after(WAIT):
            await standby.took_over.wait()
        assert standby.active
        async with aiomqtt.Client(*BROKER) as client:
            await client.subscribe(f"spBv1.0/STATE/{room_b}", qos=1)
            with anyio.fail_after(WAIT):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    assert json.loads(message.payload)["online"] is True
                    break
        level = "longvic/nord/demo/t1/level"
        await wait_for_point(standby_hub, level, lambda v: v.quality.is_good, timeout=WAIT)
        result = await standby.command(
            group, "longvic", "t1", "set_level", {"setpoint": 30.0}, user=OPERATOR
        )
        assert result["outcome"] == "succeeded", result
        await wait_for_point(standby_hub, level, lambda v: v.value == 30.0, timeout=WAIT)


async def test_an_edge_goes_on_counting_its_bdseq_after_a_restart(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    config = edge(group, "dijon", tank("t1"))
    async with running_hub(central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS) as hub:
        host = the_central(hub)
        seen = []
        for _ in range(2):
            async with running_hub(config, tmp_path / "e", plugins=PLUGINS) as edge_hub:
                with anyio.fail_after(WAIT):
                    await host.wait_born(group, "dijon", "t1")
                seen.append((the_edge(edge_hub).bd_seq, host.nodes[(group, "dijon")].bd_seq))
            await wait_for_point(
                hub, "dijon/nord/demo/t1/level", lambda v: v.quality.is_bad, timeout=WAIT
            )
        assert seen == [(0, 0), (1, 1)]


async def test_a_device_death_marks_that_device_bad_and_leaves_the_node_online(tmp_path: Path):
    broker_is_listening()
    group = group_id()
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    # Tanks that sample once a minute: the node is quiet, so the test can take the next seq.
    quiet = tank("t1", period=60.0) + tank("t2", period=60.0)
    async with (
        running_hub(central(group, f"{group}-room"), tmp_path / "c", plugins=PLUGINS) as hub,
        running_hub(edge(group, "talant", quiet), tmp_path / "e", plugins=PLUGINS) as edge_hub,
    ):
        host, node = the_central(hub), the_edge(edge_hub)
        with anyio.fail_after(WAIT):
            await host.wait_born(group, "talant", "t1")
            await host.wait_born(group, "talant", "t2")
        await wait_for_point(
            hub, "talant/nord/demo/t1/level", lambda v: v.quality.is_good, timeout=WAIT
        )
        death = codec.death_payload(now_ms(), seq=(node.seq + 1) % 256)
        async with aiomqtt.Client(*BROKER) as client:
            await client.publish(f"spBv1.0/{group}/DDEATH/talant/t1", death)
        value = await wait_for_point(
            hub, "talant/nord/demo/t1/level", lambda v: v.quality.is_bad, timeout=WAIT
        )
        assert value.quality.reason == "comm_failure"
        assert hub.points.value("talant/nord/demo/t2/level").quality.is_good
        assert hub.points.value(f"link/{group}/talant/online").value is True
        assert host.gaps == 0


async def test_a_large_device_birth_is_applied_a_slice_at_a_time(tmp_path: Path):
    from cityvisor.core.points import DataType, PointSpec, Quality
    from cityvisor.link.central import BIRTH_SLICE

    broker_is_listening()
    group = group_id()
    count = 6 * BIRTH_SLICE
    spec = PointSpec("value", DataType.FLOAT, unit="kW")
    now = now_ms()
    birth = [
        codec.BirthMetric(
            f"m{n}", n + 10, spec, PointValue(f"m{n}", float(n), Quality.good(), now, now), "nord"
        )
        for n in range(count)
    ]
    async with running_hub(central(group, f"{group}-room"), tmp_path, plugins=PLUGINS) as hub:
        before = len(hub.points)
        seen: set[int] = set()

        async def probe() -> None:  # what the rest of the hub sees at each turn of the loop
            while True:
                seen.add(len(hub.points))
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(WAIT):
            while not the_central(hub).connected:  # noqa: ASYNC110 (subscribed by then; no event)
                await anyio.sleep(0.02)
        async with anyio.create_task_group() as tg, aiomqtt.Client(*BROKER) as client:
            tg.start_soon(probe)
            await client.publish(
                str(codec.Topic("NBIRTH", group, "big")), codec.node_birth_payload(now, 0)
            )
            await client.publish(
                str(codec.Topic("DBIRTH", group, "big", "meter")),
                codec.device_birth_payload(now, 1, birth),
            )
            with anyio.fail_after(WAIT):
                await the_central(hub).wait_born(group, "big", "meter")
            tg.cancel_scope.cancel()
        registered = len(hub.points) - before
        assert registered >= count
        # The hub had turns while the birth was read: it saw the device half registered.
        assert any(before + BIRTH_SLICE // 2 < n < before + count for n in seen)
        assert hub.points.value("big/meter/m2999").value == 2999.0
