"""Playbook runs survive a restart of the hub as history; one cut short is shown interrupted."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from cityvisor.automation.playbooks import PastRun, PlaybookError, Playbooks
from cityvisor.automation.runs import TABLE
from cityvisor.core.hub import Hub
from cityvisor.core.users import Role, User
from cityvisor.plugins import automation, demo
from cityvisor.testing import running_hub, wait_for_point

from .conftest import eventually, write_config

pytestmark = pytest.mark.anyio

SUE = User("sue", Role.SUPERVISOR, frozenset({"*"}))

PLAYBOOK = """
title = "Lower the north"

[[step]]
group = "set_level"
zone = "nord"
arguments = { setpoint = 30 }
undo = { command = "set_level", arguments = { setpoint = 60 } }

[[step]]
check = "Look at the north's tanks"
"""


def deployment(tmp_path: Path) -> Path:
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "lower.toml").write_text(PLAYBOOK, encoding="utf-8")
    rules = '[[rule]]\nname = "idle"\nwhen = "centre/demo/tank-a/level > 99"\n'
    rules += '[[rule.then]]\nnotify = "full"\n'
    return write_config(tmp_path, rules, extra='playbooks = "playbooks"\n')


async def saved_state(hub: Hub, run_id: int) -> str | None:
    """The state of a run as the store holds it."""
    row = await hub.store.call(
        lambda db: db.execute(f"SELECT state FROM {TABLE} WHERE id = ?", [run_id]).fetchone()
    )
    return None if row is None else row[0]


async def books_of(hub: Hub) -> Playbooks:
    books = automation.playbooks(hub)
    assert books is not None
    with anyio.fail_after(10):
        await books.ready.wait()
    return books


async def test_runs_and_their_outcomes_are_read_back_after_a_restart(tmp_path: Path) -> None:
    path = deployment(tmp_path)
    async with running_hub(path, tmp_path, plugins=[demo, automation]) as hub:
        books = await books_of(hub)
        for tank in ("tank-n1", "tank-n2"):
            await wait_for_point(hub, f"nord/demo/{tank}/online", lambda v: v.value is True)
        finished = books.start("lower", SUE)
        await eventually(lambda: finished.state == "waiting_check", 20)
        finished.check(SUE)
        await eventually(lambda: finished.state == "done", 20)
        cut_short = books.start("lower", SUE)
        await eventually(lambda: cut_short.state == "waiting_check", 20)
        done_body = finished.as_json()
    # The hub stopped with the second run waiting for its check.

    async with running_hub(path, tmp_path, plugins=[demo, automation]) as hub:
        books = await books_of(hub)
        assert sorted(books.runs) == [finished.id, cut_short.id]
        past = books.runs[finished.id]
        assert isinstance(past, PastRun)
        assert past.as_json() == done_body
        assert past.as_json()["steps"][0]["outcomes"] == {
            "tank-n1": "succeeded",
            "tank-n2": "succeeded",
        }
        interrupted = books.runs[cut_short.id].as_json()
        assert interrupted["state"] == "interrupted"
        assert interrupted["interrupted_in"] == "waiting_check"
        assert interrupted["steps"][0]["outcomes"] == done_body["steps"][0]["outcomes"]
        # History only: nothing of it runs again.
        with pytest.raises(PlaybookError, match="history"):
            books.runs[cut_short.id].check(SUE)
        with pytest.raises(PlaybookError, match="history"):
            await books.undo(books.runs[finished.id], SUE)
        # A new run gets the next number.
        again = books.start("lower", SUE)
        assert again.id == cut_short.id + 1
        await eventually(lambda: again.state == "waiting_check", 20)
        again.abort(SUE)

        async def saved_aborted() -> bool:
            return await saved_state(hub, again.id) == "aborted"

        await eventually(saved_aborted, 20)

    # A third start: the interrupted run stays interrupted, the aborted one is aborted.
    async with running_hub(path, tmp_path, plugins=[demo, automation]) as hub:
        books = await books_of(hub)
        states = {run_id: run.as_json()["state"] for run_id, run in books.runs.items()}
        assert states == {finished.id: "done", cut_short.id: "interrupted", again.id: "aborted"}
