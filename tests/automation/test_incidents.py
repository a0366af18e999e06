"""Rules and playbooks open incidents and send crews, through the operations layer's public API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from cityvisor.core.config import load_config
from cityvisor.core.config.loading import check_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.users import Role, User
from cityvisor.plugins import automation, demo, ops
from cityvisor.testing import running_hub, send_command, wait_for_point

from .conftest import LEVEL_A, eventually, firings

pytestmark = pytest.mark.anyio

SUE = User("sue", Role.SUPERVISOR, frozenset({"*"}))

CONFIG = """
[site]
name = "Testville"

[store]
path = "incidents.sqlite"
flush_interval = 0.05

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
location = [47.3200, 5.0400]
config = { period = 0.05, fill_rate = 400, initial_level = 50 }

[plugins.automation]
enabled = true
rules = "rules"
playbooks = "playbooks"

[plugins.ops]
enabled = true

[[plugins.ops.crews]]
id = "water-far"
name = "Water crew (far)"
skills = ["demo"]
tracker = "van-1"
token = "token-of-van-one-0123"

[[plugins.ops.crews]]
id = "water-near"
name = "Water crew (near)"
skills = ["demo"]
tracker = "van-2"
token = "token-of-van-two-0123"
"""

RULES = f"""
[[rule]]
name = "tank-a-high"
when = "{LEVEL_A} > 80"

[[rule.then]]
incident = "Tank A overflowing"
zone = "centre"
priority = "high"
skill = "demo"
device = "tank-a"
dispatch = true
"""

PLAYBOOK = """
title = "Tank A drill"

[[step]]
incident = "Tank A drill"
zone = "centre"
skill = "demo"
device = "tank-a"
dispatch = true

[[step]]
group = "set_level"
device = "tank-a"
arguments = { setpoint = 20 }
"""


def write(directory: Path, rules: str = RULES, config: str = CONFIG) -> Path:
    for name, text in (("rules", rules), ("playbooks", PLAYBOOK)):
        (directory / name).mkdir(exist_ok=True)
        (directory / name / "city.toml").write_text(text, encoding="utf-8")
    path = directory / "cityvisor.toml"
    path.write_text(config, encoding="utf-8")
    return path


@pytest.fixture
def anyio_backend() -> str:
    """The operations layer's trackers port needs asyncio."""
    return "asyncio"


@asynccontextmanager
async def city(tmp_path: Path) -> AsyncIterator[Hub]:
    async with running_hub(write(tmp_path), tmp_path, plugins=[demo, ops, automation]) as hub:
        layer = ops.operations(hub)
        books = automation.playbooks(hub)
        engine = automation.engine(hub)
        assert layer is not None and books is not None and engine is not None
        with anyio.fail_after(10):
            await layer.ready.wait()
            await books.ready.wait()
            await engine.ready.wait()
        # The near van is two streets away, the far one across town.
        layer.ingest({"id": "van-1", "lat": "47.3600", "lon": "5.1000"}, "token-of-van-one-0123")
        layer.ingest({"id": "van-2", "lat": "47.3250", "lon": "5.0420"}, "token-of-van-two-0123")
        await wait_for_point(hub, "centre/demo/tank-a/online", lambda v: v.value is True)
        yield hub


async def test_a_rule_opens_an_incident_and_sends_the_nearest_crew(tmp_path: Path) -> None:
    async with city(tmp_path) as hub:
        layer = ops.operations(hub)
        assert layer is not None
        assert (await send_command(hub, "tank-a", "set_level", setpoint=90)).ok
        await eventually(lambda: layer.book.incidents, 10)
        [incident] = layer.book.incidents.values()
        assert (incident.title, incident.zone, incident.source) == (
            "Tank A overflowing",
            "centre",
            "automation",
        )
        assert incident.created_by == "automation"
        assert incident.location == (47.32, 5.04)
        await eventually(lambda: layer.book.get(incident.id).crew is not None, 10)
        incident = layer.book.get(incident.id)
        assert incident.crew == "water-near"
        assert layer.fleet.crews["water-near"].state.value == "dispatched"
        [fired] = await firings(hub, "tank-a-high")
        assert fired.data["values"][LEVEL_A] > 80
        journal = await hub.store.query_journal(kinds=["incident"], limit=10)
        assert any(e.user == "automation" for e in journal)


async def test_a_playbook_step_opens_an_incident_then_the_group_step_runs(tmp_path: Path) -> None:
    async with city(tmp_path) as hub:
        books = automation.playbooks(hub)
        assert books is not None
        [step, group] = books.dry_run("city")
        assert step["incident"]["dispatch"] is True and group["targets"] == ["tank-a"]
        run = books.start("city", SUE)
        await eventually(lambda: run.state in ("done", "failed"), 20)
        body = run.as_json()
        assert run.state == "done", body
        assert body["steps"][0]["outcomes"] == {"incident": "#1", "crew": "water-near"}
        assert body["steps"][1]["outcomes"] == {"tank-a": "succeeded"}
        layer = ops.operations(hub)
        assert layer is not None
        assert layer.book.get(1).created_by == "sue"


def test_check_config_refuses_an_incident_without_the_operations_layer(tmp_path: Path) -> None:
    without_ops = CONFIG.split("[plugins.ops]")[0]
    rules = RULES.replace('zone = "centre"', 'zone = "sud"').replace('"tank-a"\n', '"tank-q"\n')
    path = write(tmp_path, rules, without_ops)
    problems = check_config(
        load_config(path),
        make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, automation]),
    )
    text = "\n".join(problems)
    assert (
        "rules/city.toml: rule[0] (tank-a-high): then[0]: incident: the operations layer is off"
        in (text)
    )
    assert "then[0]: zone: unknown zone 'sud'" in text
    assert "then[0]: device: unknown device 'tank-q'" in text
