"""The demo city's playbooks: each one checked and dry-run against the city, the flood one run.

The small demo city runs on its simulators (lighting, bollards, cameras,
badge readers on serial lines, junctions, gauges); the flood playbook raises
the underpass bollards through the bollard PLC's simulator and broadcasts
the population alert as a CAP message on the local Mosquitto.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiomqtt
import anyio
import pytest

from cityvisor.automation.playbooks import STOPPED, PlaybookRun
from cityvisor.core.config import check_config, load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.users import Role, User
from cityvisor.demo import tomlfile
from cityvisor.demo.city import SMALL, SimulatedCity
from cityvisor.plugins import automation
from cityvisor.testing import wait_for_point

from ..plugins.test_hydro import broker_is_listening
from .conftest import eventually

pytestmark = pytest.mark.anyio

PLAYBOOKS = Path(automation.__file__).parents[2] / "demo" / "playbooks"
SUE = User("sue", Role.SUPERVISOR, frozenset({"*"}))
ADMIN = User("admin", Role.ADMIN, frozenset({"*"}))
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


@pytest.fixture
def anyio_backend() -> str:
    """The protocol libraries need asyncio."""
    return "asyncio"


@asynccontextmanager
async def demo_city(tmp_path: Path, topic: str) -> AsyncIterator[tuple[SimulatedCity, Hub]]:
    """The small demo city on its simulators, its hub running (the alerts on ``topic``)."""
    city = SimulatedCity(size=SMALL, seed=5, web_port=0)
    async with AsyncExitStack() as simulators:
        await city.start(simulators)
        written = city.config("demo.sqlite")
        written["plugins"]["hydro"]["alerts"]["population"]["cap"]["topic"] = topic
        config_path = tmp_path / "demo-city.toml"
        config_path.write_text(tomlfile.dumps(written), encoding="utf-8")
        config = load_config(config_path)
        plugins = make_plugin_manager(entry_points=False)
        assert check_config(config, plugins) == []  # playbooks and rules included
        hub = Hub(config, plugins)
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            books = automation.playbooks(hub)
            assert books is not None
            with anyio.fail_after(20):
                await books.ready.wait()
            try:
                yield city, hub
            finally:
                tg.cancel_scope.cancel()


async def until(run: PlaybookRun, *states: str, timeout: float = 60) -> None:
    await eventually(lambda: run.state in states, timeout)


def test_the_three_playbooks_of_the_city_are_shipped_with_their_undo_steps():
    titles = {}
    for path in sorted(PLAYBOOKS.glob("*.toml")):
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        titles[path.stem] = document["title"]
        undo = [s for s in document["step"] if "undo" in s]
        assert undo, f"{path.name} declares no undo step"
    assert titles == {
        "accident": "Accident boulevard de Sévigné",
        "confinement": "Confinement : fermer les bâtiments publics",
        "crue": "Crue : fermer les trémies",
    }


async def test_each_playbook_resolves_to_real_targets_and_the_flood_one_runs_end_to_end(
    tmp_path: Path,
) -> None:
    broker_is_listening()
    topic = f"cityvisor-test/{uuid.uuid4().hex}/alertes"
    async with (
        aiomqtt.Client("127.0.0.1", 1883) as mqtt,
        demo_city(tmp_path, topic) as (city, hub),
    ):
        await mqtt.subscribe(topic, qos=1)
        books = automation.playbooks(hub)
        assert books is not None
        assert sorted(books.playbooks) == ["accident", "confinement", "crue"]

        # Dry runs: every group step (and its undo) touches devices of the city.
        expected = {
            "confinement": {
                "lockdown": {r.device_id for r in city.readers},
                "set_watch": {f"camera-{r.door.building}" for r in city.readers},
            },
            "crue": {"raise": {d["id"] for d in _devices(hub, "tremie")}},
            "accident": {
                "go_to_flash": {"carrefour-darcy"},
                "raise": set(city.bollard_ids.values()),
            },
        }
        for name, commands in expected.items():
            steps = books.dry_run(name)
            groups = {s["command"]: s for s in steps if s["kind"] == "group"}
            assert set(groups) == set(commands), name
            for command, targets in commands.items():
                assert targets and set(groups[command]["targets"]) == targets, (name, command)
                if groups[command]["undo"] is not None:
                    assert set(groups[command]["undo_targets"]) == targets
            for step in steps:
                if step["device"]:
                    assert step["device"] in hub.devices, (name, step)

        # The flood: every underpass bollard comes online, then the run.
        tremie = sorted(d["id"] for d in _devices(hub, "tremie"))
        for bollard in tremie:
            await wait_for_point(hub, f"dijon/bollards/{bollard}/online", lambda v: v.value, 40)
        await wait_for_point(
            hub, "dijon/hydro/ouche-pont-des-chartreux/level", lambda v: v.quality.is_good, 40
        )
        run = books.start("crue", SUE)
        await until(run, "waiting_check")
        run.check(SUE)
        with anyio.fail_after(60):
            async for message in mqtt.messages:
                cap = ElementTree.fromstring(bytes(message.payload))  # type: ignore[arg-type]
                break
        await until(run, *STOPPED)
        assert run.state == "done", run.as_json()
        body = run.as_json()
        raised = body["steps"][1]["outcomes"]
        assert sorted(raised) == tremie
        # A bollard with a vehicle on its loop is refused by its interlock, never skipped.
        assert set(raised.values()) <= {"succeeded", "refused"}, raised
        assert body["steps"][2]["outcomes"] == {"population": "queued"}
        identifier = cap.findtext(f"{CAP}identifier") or ""
        assert identifier.startswith(f"playbook:crue:run-{run.id}:step-2")
        assert cap.findtext(f"{CAP}info/{CAP}area/{CAP}areaDesc") == "Ouche, pont des Chartreux"

        async def delivered() -> bool:
            entries = await hub.store.query_journal(kinds=["notification"], limit=10)
            return any(
                e.data.get("alert") == "population" and e.data.get("outcome") == "sent"
                for e in entries
            )

        await eventually(delivered, 10)

        # Undo: the bollards raised come down again (those refused were never raised).
        await books.undo(run, SUE)
        await until(run, "undone")
        lowered = run.as_json()["steps"][1]["outcomes"]
        assert sorted(lowered) == tremie
        assert "sending" not in lowered.values() and "not_sent" not in lowered.values()


def _devices(hub: Hub, tag: str) -> list[dict[str, Any]]:
    return [{"id": d.id} for d in hub.devices.values() if tag in d.info.tags]
