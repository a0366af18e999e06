"""The flood watch against its simulated gauges, with the helpers cityvisor ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from cityvisor.testing import (
    check_device_type,
    free_tcp_port,
    running_hub,
    send_command,
    wait_for_alarm,
    wait_for_point,
)

import cityvisor_flood
from cityvisor_flood import WaterLevelGauge
from cityvisor_flood.simulator import FloodGaugeSimulator

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Flood watch test"

[store]
path = "flood.sqlite"

[[zones]]
id = "chenove"
name = "Chenôve"

[[devices]]
id = "underpass-1"
type = "flood.gauge"
zone = "chenove"
config = {{ host = "127.0.0.1", port = {port}, unit = 1, period = 0.1, vigilance_level = 1.0, danger_level = 1.5 }}
"""
POINT = "chenove/flood/underpass-1/"


async def test_the_gauge_keeps_the_plugin_contract():
    port = free_tcp_port()
    await check_device_type(
        WaterLevelGauge,
        {"host": "127.0.0.1", "port": port, "period": 0.1, "vigilance_level": 1, "danger_level": 2},
        lambda: FloodGaugeSimulator(port=port),
    )


async def test_rising_water_raises_vigilance_then_danger(tmp_path: Path):
    async with FloodGaugeSimulator(level=0.4) as simulator:
        config = CONFIG.format(port=simulator.port)
        async with running_hub(config, tmp_path, plugins=[cityvisor_flood]) as hub:
            await wait_for_point(hub, POINT + "level", lambda v: v.value == 0.4)
            assert hub.points.value(POINT + "vigilance").value is False
            simulator.set_level(1, 1.2)
            await wait_for_alarm(hub, "underpass-1:high_water", lambda a: a.active)
            assert not hub.alarms.get("underpass-1:flood_danger").active
            simulator.set_level(1, 1.8)
            alarm = await wait_for_alarm(hub, "underpass-1:flood_danger", lambda a: a.active)
            assert alarm.priority.name == "CRITICAL"
            simulator.set_level(1, 0.3)
            await wait_for_alarm(hub, "underpass-1:flood_danger", lambda a: not a.active)


async def test_the_alert_level_command_moves_the_gauges_own_relay(tmp_path: Path):
    async with FloodGaugeSimulator(level=1.2) as simulator:
        config = CONFIG.format(port=simulator.port)
        async with running_hub(config, tmp_path, plugins=[cityvisor_flood]) as hub:
            await wait_for_point(hub, POINT + "online", lambda v: v.value is True)
            assert hub.points.value(POINT + "alert_relay").value is False  # alert at 2 m
            result = await send_command(hub, "underpass-1", "set_alert_level", level=1.0)
            assert result.ok, result
            await wait_for_point(hub, POINT + "alert_relay", lambda v: v.value is True)


async def test_a_fouled_radar_raises_a_sensor_fault(tmp_path: Path):
    async with FloodGaugeSimulator() as simulator:
        config = CONFIG.format(port=simulator.port)
        async with running_hub(config, tmp_path, plugins=[cityvisor_flood]) as hub:
            simulator.set_status(1, "fouled")
            await wait_for_point(hub, POINT + "sensor_status", lambda v: v.value == 2)
            await wait_for_alarm(hub, "underpass-1:sensor_fault", lambda a: a.active)
