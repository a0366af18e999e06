"""Incidents in the store's SQLite file: they, their links and their numbering survive a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.core.users import Role, User

from .conftest import start


@pytest.mark.anyio
async def test_incidents_and_their_history_survive_a_restart(tmp_path: Path):
    olivia = User("olivia", Role.OPERATOR, frozenset({"centre"}))
    async with start(tmp_path) as env:
        book = env.ops.book
        incident = await book.create(olivia, title="Column down", zone="centre")
        await book.move(incident.id, "assigned", olivia, "crew on the way")
        await book.link(incident.id, "note", "lamp post 14", olivia)
    async with start(tmp_path, users=False) as env:
        again = env.ops.book.get(incident.id)
        assert again.state.value == "assigned" and again.title == "Column down"
        assert [(x["kind"], x["ref"]) for x in again.links] == [
            ("state", "assigned"),
            ("note", "lamp post 14"),
        ]
        created = await env.ops.book.create(olivia, title="Next", zone="centre")
        assert created.id == incident.id + 1


@pytest.mark.anyio
async def test_two_operators_moving_one_incident_at_once_make_one_change(tmp_path: Path):
    import anyio

    from cityvisor.ops.incidents import IncidentError

    olivia = User("olivia", Role.OPERATOR, frozenset({"centre"}))
    sue = User("sue", Role.SUPERVISOR)
    async with start(tmp_path, users=False) as env:
        book = env.ops.book
        incident = await book.create(olivia, title="Column down", zone="centre")
        outcomes: list[str] = []

        async def move(user: User) -> None:
            try:
                await book.move(incident.id, "assigned", user)
                outcomes.append("moved")
            except IncidentError as error:
                outcomes.append(str(error))

        async with anyio.create_task_group() as tg:
            tg.start_soon(move, olivia)
            tg.start_soon(move, sue)
        assert outcomes.count("moved") == 1
        assert any("is assigned" in outcome for outcome in outcomes)
        entries = await env.hub.store.query_journal(kinds=["incident"], limit=10)
        assert sum(1 for e in entries if e.data.get("to") == "assigned") == 1
