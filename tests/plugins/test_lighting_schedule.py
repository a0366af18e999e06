"""Lighting schedules: the night's events at Dijon on fixed dates, and the service on a fake clock."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import astral
import astral.sun
import pytest

import cityvisor.plugins.lighting as lighting
from cityvisor import hookimpl
from cityvisor.core.config import check_config, load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.plugins.lighting import LightingCabinet
from cityvisor.plugins.lighting.schedule import (
    OFF,
    LightingState,
    NightSchedule,
    Place,
    ScheduleService,
    next_change,
    night_events,
    state_at,
)
from cityvisor.testing import running_hub, wait_for_point
from tests.hal.modbus_fixtures import HOST
from tests.plugins.conftest import DIJON, city, command_journal, device

pytestmark = pytest.mark.anyio

PARIS = ZoneInfo("Europe/Paris")
PLACE = Place(*DIJON, "Europe/Paris")
OBSERVER = astral.Observer(*DIJON)
DEFAULT = NightSchedule()


def local(*args: int) -> dt.datetime:
    """A Paris wall-clock time, as an aware datetime in UTC."""
    return dt.datetime(*args, tzinfo=PARIS).astimezone(dt.UTC)


def wall(when: dt.datetime) -> str:
    return f"{when.astimezone(PARIS):%H:%M}"


# --------------------------------------------------------------------------- the pure computation


def test_a_winter_night_at_dijon():
    evening = dt.date(2026, 1, 15)
    events = night_events(DEFAULT, PLACE, evening)
    assert [(e.cause, e.state) for e in events] == [
        ("dusk", LightingState(True, 100.0)),
        ("23:00", LightingState(True, 50.0)),
        ("05:30", LightingState(True, 100.0)),
        ("dawn", OFF),
    ]
    dusk, eleven, half_past_five, dawn = (e.at for e in events)
    # Civil dusk and dawn exactly as astral computes them...
    assert dusk == astral.sun.dusk(OBSERVER, evening, tzinfo=PARIS)
    assert dawn == astral.sun.dawn(OBSERVER, dt.date(2026, 1, 16), tzinfo=PARIS)
    # ...which is plausible for Burgundy in January (sunset about 17:20, sunrise 08:10).
    assert "17:30" <= wall(dusk) <= "18:15" and "07:15" <= wall(dawn) <= "08:00"
    assert dusk.date() == evening and dawn.date() == dt.date(2026, 1, 16)
    # Clock-time steps are local time: 23:00 in Paris is 22:00 UTC in winter.
    assert eleven == dt.datetime(2026, 1, 15, 22, tzinfo=dt.UTC)
    assert half_past_five == dt.datetime(2026, 1, 16, 4, 30, tzinfo=dt.UTC)
    assert all(e.at.tzinfo is dt.UTC for e in events)


def test_a_summer_night_skips_the_morning_step_after_dawn():
    evening = dt.date(2026, 6, 21)
    events = night_events(DEFAULT, PLACE, evening)
    assert [e.cause for e in events] == ["dusk", "23:00", "dawn"]
    dusk, eleven, dawn = (e.at for e in events)
    assert dusk == astral.sun.dusk(OBSERVER, evening, tzinfo=PARIS)
    assert dawn == astral.sun.dawn(OBSERVER, dt.date(2026, 6, 22), tzinfo=PARIS)
    assert "22:00" <= wall(dusk) <= "22:45" and "04:45" <= wall(dawn) <= "05:30"
    assert eleven == dt.datetime(2026, 6, 21, 21, tzinfo=dt.UTC)  # CEST is UTC+2
    # The night is about seven hours long at the solstice, fifteen in January.
    assert dt.timedelta(hours=6) < dawn - dusk < dt.timedelta(hours=7, minutes=30)


def test_the_night_the_clocks_go_forward():
    events = night_events(DEFAULT, PLACE, dt.date(2026, 3, 28))  # 02:00 CET -> 03:00 CEST
    eleven, half_past_five = events[1].at, events[2].at
    assert eleven == dt.datetime(2026, 3, 28, 22, tzinfo=dt.UTC)
    assert half_past_five == dt.datetime(2026, 3, 29, 3, 30, tzinfo=dt.UTC)
    assert half_past_five - eleven == dt.timedelta(hours=5, minutes=30)  # one hour less


def test_offsets_move_dusk_and_dawn():
    shifted = NightSchedule(dusk_offset=-15, dawn_offset=20)
    plain = night_events(DEFAULT, PLACE, dt.date(2026, 1, 15))
    moved = night_events(shifted, PLACE, dt.date(2026, 1, 15))
    assert moved[0].at == plain[0].at - dt.timedelta(minutes=15)
    assert moved[-1].at == plain[-1].at + dt.timedelta(minutes=20)


def test_the_state_wanted_through_a_day_and_a_night():
    wanted = {
        (15, 12, 0): OFF,
        (15, 20, 0): LightingState(True, 100.0),
        (15, 23, 30): LightingState(True, 50.0),
        (16, 3, 0): LightingState(True, 50.0),
        (16, 6, 0): LightingState(True, 100.0),
        (16, 9, 0): OFF,
    }
    for (day, hour, minute), state in wanted.items():
        assert state_at(DEFAULT, PLACE, local(2026, 1, day, hour, minute)) == state
    noon = local(2026, 1, 15, 12)
    upcoming = next_change(DEFAULT, PLACE, noon)
    assert upcoming is not None and upcoming.cause == "dusk"
    assert upcoming.at == night_events(DEFAULT, PLACE, dt.date(2026, 1, 15))[0].at
    assert state_at(DEFAULT, PLACE, upcoming.at) == LightingState(True, 100.0)
    after = next_change(DEFAULT, PLACE, local(2026, 1, 16, 9))
    assert after is not None and after.at.astimezone(PARIS).date() == dt.date(2026, 1, 16)


def test_where_the_sun_never_sets_deep_enough_the_lights_stay_off():
    tromso = Place(69.65, 18.96, "Europe/Oslo")
    assert night_events(DEFAULT, tromso, dt.date(2026, 6, 21)) == []
    assert state_at(DEFAULT, tromso, dt.datetime(2026, 6, 21, 23, tzinfo=dt.UTC)) == OFF


def test_a_schedule_reads_from_toml():
    table = tomllib.loads(
        'dusk_level = 80\ncircuits = ["c1"]\ndusk_offset = 10\n'
        'steps = [{ at = "22:30", level = 40 }, { at = 05:00:00, level = 80 }]\n'
    )
    schedule = NightSchedule.model_validate(table)
    assert schedule.steps[0].at == dt.time(22, 30) and schedule.steps[1].at == dt.time(5)
    events = night_events(schedule, PLACE, dt.date(2026, 1, 15))
    assert [(e.cause, e.state.level) for e in events] == [
        ("dusk", 80.0),
        ("22:30", 40.0),
        ("05:00", 80.0),
        ("dawn", None),
    ]


# --------------------------------------------------------------------------- the service


class FakeClock:
    """A wall clock the test moves; the service's sleeps end when it passes their end."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._moved = anyio.Event()
        self._asleep = anyio.Event()

    def __call__(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + dt.timedelta(seconds=seconds)
        while self.now < until:
            self._asleep.set()
            await self._moved.wait()

    async def advance_to(self, when: dt.datetime) -> None:
        """Move the clock, then wait until the service has acted and sleeps again."""
        self.now = when
        self._asleep = anyio.Event()
        moved, self._moved = self._moved, anyio.Event()
        moved.set()
        with anyio.fail_after(30):
            await self._asleep.wait()


class CabinetsOnly:
    """The lighting device type without the plugin's own (real-time) schedule service."""

    @hookimpl
    def cityvisor_device_types(self):
        return [LightingCabinet]


def scheduled_city(sim: LightingSimulator) -> str:
    return city(
        device(
            "cab-1",
            "lighting.cabinet",
            "nord",
            host=HOST,
            port=sim.port,
            circuits=2,
            period=0.1,
            feedback_time=10,
            schedule={},  # the default: 100 % at dusk, 50 % from 23:00, 100 % from 05:30
        ),
        device("cab-2", "lighting.cabinet", "nord", host=HOST, port=sim.port, unit=2, circuits=2),
    )


async def levels(hub: Hub, device_id: str, on: bool, level: float) -> None:
    for circuit in ("c1", "c2"):
        base = f"nord/lighting/{device_id}/{circuit}"
        await wait_for_point(hub, f"{base}/on", lambda v: v.value is on)
        await wait_for_point(hub, f"{base}/level", lambda v: v.value == level)


async def test_the_service_follows_the_night_on_a_fake_clock(tmp_path: Path):
    async with (
        LightingSimulator(HOST, 0, cabinets=2, circuits=2, ramp_rate=100.0, tick=0.02) as sim,
        running_hub(scheduled_city(sim), tmp_path, plugins=[CabinetsOnly()]) as hub,
    ):
        for device_id in ("cab-1", "cab-2"):
            await wait_for_point(
                hub, f"nord/lighting/{device_id}/online", lambda v: v.value is True
            )
        cabinet = hub.devices["cab-1"]
        clock = FakeClock(local(2026, 1, 15, 23, 30))  # the hub starts in the middle of the night
        service = ScheduleService(
            hub.commands, hub.points, [(cabinet, cabinet.config.schedule)], PLACE,
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.run)
            await clock.advance_to(clock.now)  # the catch-up: on, at the 23:00 level
            await levels(hub, "cab-1", True, 50.0)
            await clock.advance_to(local(2026, 1, 16, 5, 31))
            await levels(hub, "cab-1", True, 100.0)
            await clock.advance_to(local(2026, 1, 16, 8, 0))  # after dawn
            await levels(hub, "cab-1", False, 0.0)
            await clock.advance_to(local(2026, 1, 16, 12, 0))  # nothing changes at noon
            await clock.advance_to(local(2026, 1, 16, 19, 0))  # after the next dusk
            await levels(hub, "cab-1", True, 100.0)
            tg.cancel_scope.cancel()

        entries = await command_journal(hub)
        assert {(e.user, e.data["origin"], e.device) for e in entries} == {
            ("system", "schedule", "cab-1")
        }
        orders = [
            (e.data["comment"], e.data["command"], e.data["member"], e.data["arguments"])
            for e in entries
            if e.data["outcome"] == "succeeded"
        ]
        assert orders[:6] == [
            ("schedule: 23:00", "switch_on", "c1", {}),
            ("schedule: 23:00", "switch_on", "c2", {}),
            ("schedule: 23:00", "set_level", "c1", {"level": 50.0}),
            ("schedule: 23:00", "set_level", "c2", {"level": 50.0}),
            ("schedule: 05:30", "set_level", "c1", {"level": 100.0}),
            ("schedule: 05:30", "set_level", "c2", {"level": 100.0}),
        ]
        assert orders[6:8] == [
            ("schedule: dawn", "switch_off", "c1", {}),
            ("schedule: dawn", "switch_off", "c2", {}),
        ]
        # At dusk the circuits ramp to their setpoint (100 %, left at 05:30): no set_level needed.
        assert [o[:3] for o in orders[8:10]] == [
            ("schedule: dusk", "switch_on", "c1"),
            ("schedule: dusk", "switch_on", "c2"),
        ]
        assert all(e.data["outcome"] == "succeeded" for e in entries)
        # The unscheduled cabinet was never touched.
        assert [c.on for c in sim.cabinet(2).circuits] == [False, False]


async def test_the_plugin_runs_a_service_only_for_scheduled_cabinets(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    scheduled = city(device("cab-1", "lighting.cabinet", "nord", host=HOST, port=1, schedule={}))
    async with running_hub(scheduled, tmp_path / "a", plugins=[lighting]) as hub:
        assert set(hub.services) == {"lighting"}
    manual = city(device("cab-1", "lighting.cabinet", "nord", host=HOST, port=1))
    async with running_hub(manual, tmp_path / "b", plugins=[lighting]) as hub:
        assert hub.services == {}


SHARED = """
[plugins.lighting.schedules.residential]
dusk_level = 80
steps = [{ at = "22:30", level = 40 }]
circuits = ["c1"]
"""


async def test_cabinets_follow_a_schedule_shared_by_name(tmp_path: Path):
    text = city(
        device("cab-1", "lighting.cabinet", "nord", host=HOST, port=1, schedule="residential"),
        device("cab-2", "lighting.cabinet", "nord", host=HOST, port=1, unit=2),
    )
    async with running_hub(text + SHARED, tmp_path, plugins=[lighting]) as hub:
        settings = hub.config.settings("lighting")
        assert settings.schedules["residential"].dusk_level == 80
        assert set(hub.services) == {"lighting"}


def test_a_shared_schedule_must_exist_and_fit_the_cabinet(tmp_path: Path):
    text = city(
        device("cab-1", "lighting.cabinet", "nord", host=HOST, port=1, schedule="residentiel"),
        device("cab-2", "lighting.cabinet", "nord", host=HOST, port=1, circuits=1),
        device("cab-3", "lighting.cabinet", "nord", host=HOST, port=1, circuits=1, schedule="wide"),
    )
    wide = '\n[plugins.lighting.schedules.wide]\ncircuits = ["c1", "c2"]\n'
    path = tmp_path / "city.toml"
    path.write_text(text + SHARED + wide)
    config = load_config(path)
    problems = check_config(
        config, make_plugin_manager(builtins=[lighting.__name__], entry_points=False)
    )
    assert any(
        "devices[0].config.schedule: no schedule 'residentiel' in [plugins.lighting.schedules]"
        " (known: residential, wide)" in p
        for p in problems
    ), problems
    assert any(
        "devices[2].config.schedule: schedule 'wide' drives circuit(s) c2" in p for p in problems
    )
    assert len(problems) == 2
