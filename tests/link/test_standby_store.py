"""Two central hubs on one PostgreSQL store: the standby takes over and the journal stays one chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cityvisor.core.store import verify_store
from cityvisor.testing import running_hub, wait_for_point
from tests.core.backends import PostgresBackend, make_backend
from tests.link.conftest import broker_is_listening, central, edge, group_id, tank
from tests.link.test_sparkplug import PLUGINS, WAIT, the_central
from tests.plugins.conftest import OPERATOR

pytestmark = pytest.mark.anyio


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresBackend]:
    with make_backend("postgres", tmp_path) as backend:
        assert isinstance(backend, PostgresBackend)
        yield backend


def on_postgres(config: str, backend: PostgresBackend, local: Path) -> str:
    """The central's deployment file with its store on the shared database (its own local file)."""
    ours = f'[store]\nbackend = "postgres"\npath = "{local}"\ndsn = "{backend.dsn}"\n'
    section = '[store]\npath = "hub.sqlite"\n'
    assert section in config
    return config.replace(section, ours)


async def test_the_standby_on_the_shared_store_carries_the_active_ones_journal_on(
    tmp_path: Path, postgres: PostgresBackend
):
    broker_is_listening()
    group = group_id()
    for name in ("a", "b", "e"):
        (tmp_path / name).mkdir()
    room_a, room_b = f"{group}-a", f"{group}-b"
    standby_file = on_postgres(
        central(group, room_b, standby_for=room_a), postgres, tmp_path / "b" / "local.sqlite"
    )
    active_file = on_postgres(central(group, room_a), postgres, tmp_path / "a" / "local.sqlite")
    level = "longvic/nord/demo/t1/level"
    async with (
        running_hub(standby_file, tmp_path / "b", plugins=PLUGINS) as standby_hub,
        running_hub(edge(group, "longvic", tank("t1")), tmp_path / "e", plugins=PLUGINS),
    ):
        standby = the_central(standby_hub)
        async with running_hub(active_file, tmp_path / "a", plugins=PLUGINS) as hub:
            active = the_central(hub)
            with anyio.fail_after(WAIT):
                await active.wait_born(group, "longvic", "t1")
                while standby.active:  # noqa: ASYNC110  (a flag, no event for it)
                    await anyio.sleep(0.05)
            await wait_for_point(hub, level, lambda v: v.quality.is_good, timeout=WAIT)
            first = await active.command(
                group, "longvic", "t1", "set_level", {"setpoint": 20.0}, user=OPERATOR
            )
            assert first["outcome"] == "succeeded", first
        with anyio.fail_after(WAIT):
            await standby.took_over.wait()
        await wait_for_point(standby_hub, level, lambda v: v.quality.is_good, timeout=WAIT)
        second = await standby.command(
            group, "longvic", "t1", "set_level", {"setpoint": 30.0}, user=OPERATOR
        )
        assert second["outcome"] == "succeeded", second
        await wait_for_point(standby_hub, level, lambda v: v.value == 30.0, timeout=WAIT)

        # One journal, written by both rooms: the standby reads what the active one did,
        # and the chain holds across the two writers.
        entries = await standby_hub.store.query_journal(kinds=["link"], limit=1000)
        hosts = {entry.data.get("host") for entry in entries}
        assert {room_a, room_b} <= hosts, hosts
        commands = [e for e in entries if e.user == OPERATOR.name and "set_level" in e.message]
        assert len(commands) >= 2, [e.message for e in entries]
        state = await verify_store(standby_hub.store)
        assert state.ok, state.broken
        assert state.rows >= len(entries)
