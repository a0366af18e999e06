"""The supervisor: drivers start, fail, are marked bad at once, and come back alone."""

from __future__ import annotations

import logging

import anyio
import pytest
from anyio.abc import TaskStatus

from cityvisor import DeviceConfig, DeviceError, DeviceInfo, DeviceType, point
from cityvisor.core.devices import Supervisor
from cityvisor.core.points import PointDB, Quality

pytestmark = pytest.mark.anyio


class FlakyConfig(DeviceConfig):
    fail_times: int = 0
    reason: str = "comm_failure"
    retry_after: float | None = None


class Flaky(DeviceType):
    """A device that fails a given number of times, then runs and publishes forever."""

    family = "test"
    Config = FlakyConfig
    value = point(float, unit="W")

    attempts = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config: FlakyConfig = self.config  # type: ignore[assignment]
        type(self).attempts += 1
        self.attempts_here = getattr(self, "attempts_here", 0) + 1
        if self.attempts_here <= config.fail_times:
            raise DeviceError(
                "equipment not answering", reason=config.reason, retry_after=config.retry_after
            )
        task_status.started()
        self.publish({"value": 1.0})
        await anyio.sleep_forever()


class Crashing(DeviceType):
    """Publishes once, then raises an unexpected exception (a plugin bug)."""

    family = "test"
    value = point(float)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.publish({"value": 5.0})
        await anyio.sleep(0.05)
        raise ZeroDivisionError("bug in the plugin")


def make(db: PointDB, cls: type[DeviceType], device_id: str, **config) -> DeviceType:
    device = cls(DeviceInfo(device_id, cls.type_name, "zone-a"), cls.Config(**config), db)
    device.declare_points()
    return device


async def wait_value(db: PointDB, point_id: str, predicate, timeout: float = 5.0):
    result = await db.wait_for(point_id, predicate, timeout)
    assert result is not None, f"{point_id} never satisfied the condition: {db.value(point_id)}"
    return result


async def test_a_failing_driver_is_restarted_with_backoff_and_recovers():
    db = PointDB()
    supervisor = Supervisor(db, min_backoff=0.01, max_backoff=0.05)
    device = make(db, Flaky, "flaky-1", fail_times=3)
    supervisor.add(device)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        await wait_value(db, device.point_id("online"), lambda v: v.value is True)
        await wait_value(db, device.point_id("value"), lambda v: v.quality.is_good)
        tg.cancel_scope.cancel()
    state = supervisor.drivers["flaky-1"]
    assert state.restarts == 3
    assert "equipment not answering" in state.last_error


async def test_a_crashing_driver_marks_its_points_bad_and_no_other_device_notices():
    db = PointDB()
    supervisor = Supervisor(db, min_backoff=0.5, max_backoff=1.0)
    crashing = make(db, Crashing, "crash-1")
    healthy = make(db, Flaky, "healthy-1")
    supervisor.add(crashing)
    supervisor.add(healthy)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        await wait_value(db, crashing.point_id("value"), lambda v: v.value == 5.0)
        bad = await wait_value(db, crashing.point_id("value"), lambda v: v.quality.is_bad)
        assert bad.quality == Quality.bad("comm_failure")
        assert bad.value == 5.0  # last value kept, flagged bad
        assert db.value(crashing.point_id("online")).value is False
        assert db.value(healthy.point_id("online")).value is True
        assert db.value(healthy.point_id("value")).quality.is_good
        tg.cancel_scope.cancel()


async def test_a_config_error_waits_retry_after_instead_of_storming():
    db = PointDB()
    supervisor = Supervisor(db, min_backoff=0.001, max_backoff=0.01)
    device = make(
        db, Flaky, "misconfigured", fail_times=1000, reason="config_error", retry_after=60.0
    )
    supervisor.add(device)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        bad = await wait_value(
            db,
            device.point_id("value"),
            lambda v: v.quality.is_bad and v.quality.reason == "config_error",
        )
        assert bad.quality.reason == "config_error"
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert device.attempts_here == 1
    assert supervisor.drivers["misconfigured"].next_attempt_in == 60.0


class Scripted(DeviceType):
    """Fails with the HAL's retry_after a number of times, then comes up and is lost."""

    family = "test"
    Config = FlakyConfig
    value = point(float)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config: FlakyConfig = self.config  # type: ignore[assignment]
        self.attempts_here = getattr(self, "attempts_here", 0) + 1
        if self.attempts_here <= config.fail_times:
            raise DeviceError("connection refused", retry_after=config.retry_after)
        task_status.started()
        await anyio.sleep(0.02)
        raise DeviceError("connection lost")


async def test_retries_the_hal_times_neither_stack_nor_inflate_the_backoff(
    caplog: pytest.LogCaptureFixture,
):
    db = PointDB()
    supervisor = Supervisor(db, min_backoff=0.05, max_backoff=10.0)
    device = make(db, Scripted, "refusing", fail_times=20, retry_after=0.005)
    supervisor.add(device)
    state = supervisor.drivers["refusing"]
    with caplog.at_level(logging.DEBUG, logger="cityvisor.device.test"):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await wait_value(db, device.point_id("online"), lambda v: v.value is True)
            await wait_value(db, device.point_id("online"), lambda v: v.value is False)
            # 20 refusals retried when the HAL said, then one loss: the first step of the
            # supervisor's own backoff, not the 21st.
            assert state.restarts == 21
            assert state.next_attempt_in <= 0.05
            tg.cancel_scope.cancel()
    lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "cityvisor.device.test"
    ]
    loud = [m for level, m in lines if level >= logging.INFO]
    # Offline (refused), back online, offline again (another reason): three lines, not 21.
    assert len(loud) == 3, loud
    assert "connection refused" in loud[0] and "online again after 20" in loud[1]
    assert "connection lost" in loud[2]


async def test_a_driver_that_never_signals_ready_times_out():
    class Silent(DeviceType):
        family = "test"
        value = point(float)

        async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED):
            await anyio.sleep_forever()

    db = PointDB()
    supervisor = Supervisor(db, min_backoff=10, start_timeout=0.05)
    device = make(db, Silent, "silent")
    supervisor.add(device)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        await wait_value(db, device.point_id("online"), lambda v: v.value is False)
        tg.cancel_scope.cancel()
    assert "no answer within" in supervisor.drivers["silent"].last_error


async def test_shutdown_cancels_every_driver_promptly():
    db = PointDB()
    supervisor = Supervisor(db)
    for i in range(50):
        supervisor.add(make(db, Flaky, f"d{i}"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await wait_value(db, "zone-a/test/d49/online", lambda v: v.value is True)
            tg.cancel_scope.cancel()
    # Cancellation is not a failure: points are not flagged bad at shutdown.
    assert db.value("zone-a/test/d0/value").quality.is_good


def test_device_type_declarations_are_collected():
    assert set(Flaky.point_specs) == {"online", "value"}
    assert "communication_lost" in Flaky.alarm_specs
    assert not Flaky.alarm_specs["communication_lost"].suppressible
    assert Flaky.type_name == "test.flaky"


def test_a_declaration_on_an_unknown_point_is_refused_at_class_creation():
    from cityvisor import alarm

    with pytest.raises(TypeError, match="unknown point 'nope'"):

        class Broken(DeviceType):
            family = "test"
            x = point(float)
            bad = alarm("nope", high=1)
