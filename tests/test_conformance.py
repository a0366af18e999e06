"""The conformance check plugin authors run: a good family passes, each breach is named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskStatus

from cityvisor import DeviceConfig, DeviceType, alarm, command, number, point
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.plugins.access import Door
from cityvisor.plugins.bollards import Bollard
from cityvisor.plugins.cameras import Camera
from cityvisor.plugins.demo import Tank
from cityvisor.plugins.lighting import LightingCabinet
from cityvisor.plugins.switches import Switch
from cityvisor.testing import (
    ConformanceError,
    check_device_type,
    declaration_problems,
    free_tcp_port,
)

pytestmark = pytest.mark.anyio


async def test_the_lighting_cabinet_conforms_against_its_simulator():
    port = free_tcp_port()
    report = await check_device_type(
        LightingCabinet,
        {"host": "127.0.0.1", "port": port, "circuits": 2, "period": 0.2},
        lambda: LightingSimulator(port=port, cabinets=1, circuits=2, tick=0.1),
    )
    assert report.points == 2 + 5 + 6 * 2  # online, device_fault, cabinet points, six per circuit
    assert report.online_after is not None
    assert report.bad_after is not None
    assert report.recovered_after is not None


@pytest.mark.parametrize("device_type", [LightingCabinet, Bollard, Switch, Door, Camera, Tank])
def test_the_built_in_families_are_declared_in_full(device_type: type[DeviceType]):
    assert declaration_problems(device_type) == []


class SloppyConfig(DeviceConfig):
    """Settings."""

    speed: float = 1.0


class Sloppy(DeviceType):
    """A device type that breaks the contract in every way a declaration can."""

    family = "sloppy"
    Config = SloppyConfig
    label = {"fr": "Bâclé"}

    level = point(float, doc="level")  # a plain string: the same text for both languages
    state = point(str)
    high = alarm("level", high=10)

    @command(label={"fr": "Régler", "en": "Set"}, speed=number(0, 10))
    async def set_speed(self, speed: float) -> None:
        """Set the speed."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Never ready."""
        await anyio.sleep_forever()


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield None


def test_every_declaration_breach_is_named():
    problems = declaration_problems(Sloppy)
    assert "label has no en text" in problems
    assert "config key 'speed' has no docstring (the config reference shows it)" in problems
    assert "point 'state': doc has no fr and no en text" in problems
    assert "alarm 'high': message has no fr and no en text" in problems
    assert "command 'set_speed': parameter 'speed' has no fr and no en doc" in problems
    assert not any("'level'" in problem and "doc" in problem for problem in problems)


async def test_a_run_that_never_signals_ready_fails_the_check():
    with pytest.raises(ConformanceError) as failure:
        await check_device_type(Sloppy, {"speed": 2}, nothing, timeout=0.5)
    assert any("did not signal ready" in p for p in failure.value.problems)
    assert "Sloppy does not conform" in str(failure.value)


async def test_a_refused_config_is_reported_before_anything_runs():
    with pytest.raises(
        ConformanceError, match=r"refused by Sloppy\.Config: speed: Input should be a valid number"
    ):
        await check_device_type(Sloppy, {"speed": "fast"}, nothing, timeout=0.5)


class Deaf(DeviceType):
    """A driver that does not notice its equipment leaving."""

    family = "deaf"
    label = {"fr": "Sourd", "en": "Deaf"}
    Config = SloppyConfig
    level = point(float, doc={"fr": "Niveau", "en": "Level"})

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish forever, whatever happens."""
        task_status.started()
        while True:
            self.publish({"level": 1.0})
            await anyio.sleep(0.05)


async def test_a_driver_that_keeps_publishing_without_its_equipment_fails_the_check():
    with pytest.raises(ConformanceError) as failure:
        await check_device_type(Deaf, {}, nothing, timeout=0.5)
    problems = failure.value.problems
    assert any("still not bad" in p and "test/deaf/dut/level" in p for p in problems), problems
    assert "online stayed true after the simulator stopped" in problems
