"""Fixtures for the equipment plugins' tests: simulators on loopback, deployment files, the journal.

Every test runs a real hub (``cityvisor.testing.running_hub``) whose devices
talk Modbus/TCP to a simulator on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from cityvisor.core.hub import Hub
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User
from cityvisor.hal.sim.bollard import BollardSimulator
from cityvisor.hal.sim.lighting import LightingSimulator
from tests.hal.modbus_fixtures import HOST

OPERATOR = User("olivia", Role.OPERATOR)

DIJON = (47.3220, 5.0415)


def toml_value(value: Any) -> str:
    """A Python value as an inline TOML value (enough for device config tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def device(id: str, type: str, zone: str, **config: Any) -> str:
    """One ``[[devices]]`` entry."""
    return (
        f'[[devices]]\nid = "{id}"\ntype = "{type}"\nzone = "{zone}"\n'
        f"config = {toml_value(config)}\n"
    )


def city(*devices: str, coordinates: bool = True) -> str:
    """A deployment file: Dijon's coordinates, two zones, the given devices."""
    site = f"latitude = {DIJON[0]}\nlongitude = {DIJON[1]}\n" if coordinates else ""
    return (
        f'[site]\nname = "Dijon"\ntimezone = "Europe/Paris"\n{site}\n'
        '[store]\npath = "city.sqlite"\nflush_interval = 0.05\n\n'
        '[[zones]]\nid = "nord"\nname = "Nord"\n\n'
        '[[zones]]\nid = "sud"\nname = "Sud"\n\n' + "\n".join(devices)
    )


async def command_journal(hub: Hub) -> list[JournalEntry]:
    """The hub's command journal entries, oldest first."""
    return list(reversed(await hub.store.query_journal(kinds=["command"], limit=1000)))


@pytest.fixture
async def lighting_sim() -> AsyncIterator[LightingSimulator]:
    """A gateway with three 4-circuit cabinets (units 1, 2, 3); levels ramp at 100 %/s."""
    async with LightingSimulator(
        HOST, 0, cabinets=3, circuits=4, ramp_rate=100.0, tick=0.02, seed=7
    ) as sim:
        yield sim


@pytest.fixture
async def bollard_sim() -> AsyncIterator[BollardSimulator]:
    """A gateway with two bollards (units 1 and 2), one-second strokes."""
    async with BollardSimulator(HOST, 0, bollards=2, travel_time=1.0, tick=0.02, seed=7) as sim:
        yield sim
