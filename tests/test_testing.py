"""The helpers shipped for plugin authors work on a real hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.plugins import demo
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Testville"

[store]
path = "t.sqlite"

[[zones]]
id = "z"
name = "Z"

[[devices]]
id = "tank"
type = "demo.tank"
zone = "z"
config = { period = 0.02, initial_level = 97 }
"""


async def test_running_hub_loads_only_the_plugins_given(tmp_path: Path):
    async with running_hub(CONFIG, tmp_path, plugins=[demo]) as hub:
        assert hub.plugins.plugin_names() == ["demo"]
        value = await wait_for_point(hub, "z/demo/tank/level", lambda v: v.quality.is_good)
        assert value.value == 97
        alarm = await wait_for_alarm(hub, "tank:high_water", lambda a: a.active)
        assert alarm.priority.name == "HIGH"


async def test_wait_for_point_fails_the_test_with_the_last_value(tmp_path: Path):
    async with running_hub(CONFIG, tmp_path, plugins=[demo]) as hub:
        with pytest.raises(pytest.fail.Exception, match="did not reach"):
            await wait_for_point(hub, "z/demo/tank/level", lambda v: v.value == -1, timeout=0.1)


async def test_the_store_fixture_is_a_real_file(cityvisor_store, tmp_path: Path):
    from cityvisor.core.store import JournalEntry

    entry = await cityvisor_store.journal(JournalEntry(kind="test", message="hello"))
    assert entry.id == 1
    assert (tmp_path / "cityvisor-test.sqlite").exists()
