"""The hydro family through a real hub: Modbus gauges on the simulator, MQTT gauges on Mosquitto.

MQTT tests talk to the local Mosquitto broker on 127.0.0.1:1883 (.ci/run
starts it when nothing listens there); each test uses topics of its own.
Rain events run sixty times faster than real time.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityvisor.core.config import check_config, parse_config
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal.sim.gauge import HydroGaugeSimulator, MqttGaugeSimulator
from cityvisor.plugins import hydro
from cityvisor.plugins.hydro import ModbusGauge, MqttGauge
from cityvisor.plugins.hydro.levels import STAGES, LevelWatch, Thresholds
from cityvisor.testing import (
    check_device_type,
    free_tcp_port,
    running_hub,
    wait_for_alarm,
    wait_for_point,
)
from tests.plugins.conftest import city, device

pytestmark = pytest.mark.anyio

WAIT = 15.0
BROKER = ("127.0.0.1", 1883)
THRESHOLDS = {"vigilance": 1.0, "alert": 1.5, "crisis": 2.0, "hysteresis": 0.1}
THRESHOLDS |= {"rate_window": 2.0, "rate_limit": 3000.0, "rate_hysteresis": 500.0}


def broker_is_listening() -> None:
    """Fail (never skip) with what to do when the local Mosquitto is not running."""
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError:
        pytest.fail(
            "no MQTT broker on 127.0.0.1:1883: install the Debian package mosquitto and start "
            "it (mosquitto -d -c /etc/mosquitto/mosquitto.conf), as .ci/run does"
        )


# --------------------------------------------------------------------------- thresholds


def test_levels_cross_thresholds_upwards_at_once_and_clear_below_the_hysteresis():
    watch = LevelWatch(Thresholds(**THRESHOLDS))
    assert watch.update(0.5, 0)["stage"] == 0
    values = watch.update(1.6, 1)
    assert values["above_vigilance"] and values["above_alert"] and not values["above_crisis"]
    assert STAGES[values["stage"]] == "alert"
    assert watch.update(1.45, 2)["above_alert"]  # within the hysteresis: still above
    assert not watch.update(1.39, 3)["above_alert"]


@given(st.lists(st.floats(min_value=1.41, max_value=1.59), min_size=2, max_size=200))
def test_water_lapping_at_a_threshold_never_makes_its_alarm_chatter(levels: list[float]):
    watch = LevelWatch(Thresholds(**THRESHOLDS))
    flags = [watch.update(level, t)["above_alert"] for t, level in enumerate(levels)]
    changes = sum(a != b for a, b in itertools.pairwise(flags))
    assert changes <= 1  # once above 1.5 it stays: the water never drops below 1.4


def test_the_rate_of_rise_is_the_slope_over_the_window():
    watch = LevelWatch(Thresholds(**THRESHOLDS | {"rate_window": 600.0, "rate_limit": 30.0}))
    for second in range(0, 601, 60):
        values = watch.update(1.0 + second * 0.001 / 6, second)  # 1 mm per 6 s: 60 cm/h
    assert values["rate_of_rise"] == pytest.approx(60.0)
    assert values["rising_fast"]


def test_thresholds_out_of_order_are_refused():
    with pytest.raises(ValueError, match="vigilance < alert < crisis"):
        Thresholds(vigilance=2.0, alert=1.5, crisis=3.0)


# --------------------------------------------------------------------------- Modbus


def modbus_deployment(sim: HydroGaugeSimulator, **extra: Any) -> str:
    return city(
        device(
            "ouche-1",
            "hydro.modbus_gauge",
            "sud",
            host="127.0.0.1",
            port=sim.port,
            unit=1,
            period=0.1,
            thresholds=THRESHOLDS,
            **extra,
        )
    )


MODBUS = "sud/hydro/ouche-1/"


@pytest.fixture
async def modbus_gauges() -> AsyncIterator[HydroGaugeSimulator]:
    """One gauge (unit 1, ``g1``) at 0.5 m behind a Modbus/TCP gateway."""
    async with HydroGaugeSimulator(level=0.5, tick=0.05) as sim:
        yield sim


async def test_the_modbus_gauge_keeps_the_plugin_contract():
    port = free_tcp_port()
    config = {"host": "127.0.0.1", "port": port, "period": 0.1, "thresholds": THRESHOLDS}
    await check_device_type(
        ModbusGauge,
        config,
        lambda: HydroGaugeSimulator(port=port),
        optional_points=["rate_of_rise", "rising_fast"],
    )


async def test_a_rain_event_raises_the_stages_then_clears_them(
    tmp_path: Path, modbus_gauges: HydroGaugeSimulator
):
    sim = modbus_gauges
    async with running_hub(modbus_deployment(sim), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MODBUS + "level", lambda v: v.value == 0.5, timeout=WAIT)
        sim.rain("g1", peak=1.2, duration=6.0)  # up to 1.7 m: alert, never crisis
        await wait_for_alarm(hub, "ouche-1:vigilance", lambda a: a.active, timeout=WAIT)
        alert = await wait_for_alarm(hub, "ouche-1:flood_alert", lambda a: a.active, timeout=WAIT)
        assert alert.priority.name == "HIGH"
        await wait_for_point(hub, MODBUS + "stage", lambda v: v.value == 2)
        await wait_for_alarm(hub, "ouche-1:vigilance", lambda a: not a.active, timeout=WAIT)
        assert not hub.alarms.get("ouche-1:flood_alert").active
        assert not hub.alarms.get("ouche-1:flood_crisis").active
        assert hub.points.value(MODBUS + "stage").value == 0


async def test_a_fast_rise_raises_the_rate_of_rise_alarm(
    tmp_path: Path, modbus_gauges: HydroGaugeSimulator
):
    modbus_gauges.set_level("g1", 0.2)
    sim = modbus_gauges
    async with running_hub(modbus_deployment(sim), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MODBUS + "level", lambda v: v.value == 0.2, timeout=WAIT)
        sim.rain("g1", peak=0.5, duration=6.0)  # 0.5 m in 2 s: 90 000 cm/h at the start
        await wait_for_alarm(hub, "ouche-1:water_rising_fast", lambda a: a.active, timeout=WAIT)
        rate = hub.points.value(MODBUS + "rate_of_rise").value
        assert rate > THRESHOLDS["rate_limit"]


async def test_a_flat_battery_and_a_fouled_radar_raise_their_alarms(
    tmp_path: Path, modbus_gauges: HydroGaugeSimulator
):
    sim = modbus_gauges
    async with running_hub(modbus_deployment(sim), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MODBUS + "online", lambda v: v.value is True, timeout=WAIT)
        sim.gauge("g1").battery = 3.1
        sim.set_status("g1", "fouled")
        await wait_for_alarm(hub, "ouche-1:battery_alarm", lambda a: a.active, timeout=WAIT)
        await wait_for_alarm(hub, "ouche-1:sensor_fault", lambda a: a.active, timeout=WAIT)


# --------------------------------------------------------------------------- MQTT


@pytest.fixture
async def mqtt_gauges() -> AsyncIterator[MqttGaugeSimulator]:
    broker_is_listening()
    prefix = f"cityvisor-test/{uuid.uuid4().hex}"
    async with MqttGaugeSimulator(["underpass-2"], prefix=prefix, period=0.1, level=0.3) as sim:
        yield sim


def mqtt_deployment(sim: MqttGaugeSimulator, **extra: Any) -> str:
    return city(
        device(
            "underpass-2",
            "hydro.mqtt_gauge",
            "nord",
            topic=sim.topic("underpass-2"),
            stale_after=1.0,
            thresholds=THRESHOLDS,
            **extra,
        )
    )


MQTT = "nord/hydro/underpass-2/"


async def test_the_mqtt_gauge_keeps_the_plugin_contract():
    broker_is_listening()
    prefix = f"cityvisor-test/{uuid.uuid4().hex}"
    config = {"topic": f"{prefix}/g", "stale_after": 1.0, "thresholds": THRESHOLDS}
    await check_device_type(
        MqttGauge,
        config,
        lambda: MqttGaugeSimulator(["g"], prefix=prefix, period=0.1),
        optional_points=["rate_of_rise", "rising_fast"],
    )


async def test_an_unreachable_broker_is_a_lost_gauge_not_a_crash(tmp_path: Path):
    closed = free_tcp_port()  # nothing listens there
    config = city(
        device(
            "tremie",
            "hydro.mqtt_gauge",
            "nord",
            broker="127.0.0.1",
            port=closed,
            topic="gauges/tremie",
            thresholds=THRESHOLDS,
        )
    )
    async with running_hub(config, tmp_path, plugins=[hydro]) as hub:
        await wait_for_alarm(hub, "tremie:communication_lost", lambda a: a.active, timeout=WAIT)
        level = hub.points.value("nord/hydro/tremie/level")
        assert not level.quality.is_good
        assert hub.supervisor.restarts >= 1


async def test_an_mqtt_gauge_reads_its_json_and_crosses_thresholds(tmp_path, mqtt_gauges):
    async with running_hub(mqtt_deployment(mqtt_gauges), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MQTT + "level", lambda v: v.value == 0.3, timeout=WAIT)
        assert hub.points.value(MQTT + "battery").value == 3.6
        assert hub.points.value(MQTT + "link_quality").value == 85
        mqtt_gauges.set_level("underpass-2", 2.1)
        crisis = await wait_for_alarm(
            hub, "underpass-2:flood_crisis", lambda a: a.active, timeout=WAIT
        )
        assert crisis.priority.name == "CRITICAL"


async def test_a_silent_mqtt_gauge_is_lost_then_comes_back(tmp_path, mqtt_gauges):
    async with running_hub(mqtt_deployment(mqtt_gauges), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MQTT + "online", lambda v: v.value is True, timeout=WAIT)
        mqtt_gauges.silence("underpass-2")
        await wait_for_alarm(
            hub, "underpass-2:communication_lost", lambda a: a.active, timeout=WAIT
        )
        assert not hub.points.value(MQTT + "level").quality.is_good
        mqtt_gauges.silence("underpass-2", False)
        await wait_for_point(hub, MQTT + "level", lambda v: v.quality.is_good, timeout=WAIT)


async def test_garbage_on_the_topic_marks_the_level_bad_and_never_stops_the_driver(
    tmp_path, mqtt_gauges
):
    async with running_hub(mqtt_deployment(mqtt_gauges), tmp_path, plugins=[hydro]) as hub:
        await wait_for_point(hub, MQTT + "online", lambda v: v.value is True, timeout=WAIT)
        mqtt_gauges.silence("underpass-2")
        for payload in (b"\xff\xfe", b"[1, 2]", b'{"level": "high"}', b'{"level": NaN}'):
            await mqtt_gauges.publish_raw("underpass-2", payload)
        await wait_for_point(hub, MQTT + "level", lambda v: not v.quality.is_good, timeout=WAIT)
        gauge = hub.devices["underpass-2"]
        assert isinstance(gauge, hydro.MqttGauge)
        mqtt_gauges.silence("underpass-2", False)
        await wait_for_point(hub, MQTT + "level", lambda v: v.quality.is_good, timeout=WAIT)
        assert gauge.bad_payloads == 4
        assert hub.points.value(MQTT + "online").value is True


def test_a_wildcard_topic_is_a_config_error_naming_the_key(tmp_path: Path):
    data = {
        "site": {"name": "x"},
        "zones": [{"id": "nord", "name": "Nord"}],
        "devices": [
            {
                "id": "g",
                "type": "hydro.mqtt_gauge",
                "zone": "nord",
                "config": {"topic": "gauges/#", "thresholds": THRESHOLDS},
            }
        ],
    }
    config = parse_config(data, source="city.toml", base_dir=tmp_path)
    problems = check_config(config, make_plugin_manager(entry_points=False))
    assert any("devices[0].config.topic" in p and "no MQTT wildcard" in p for p in problems), (
        problems
    )
