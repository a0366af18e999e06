"""Playbook runs kept in the store's own table, so that they survive a restart as history.

A run is saved (as the JSON the API shows) at each journaled moment: its
start, each step's end, a wait for a check or an approval, its end. When
the hub starts again the saved runs are read back; one that was still going
when the hub stopped is marked ``interrupted`` (nothing of it runs again:
an operator starts the playbook anew, and sees what the last run did).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

    from cityvisor.core.store import Store

__all__ = ["TABLE", "RunHistory"]

TABLE = "automation_runs"
FINISHED = ("done", "failed", "aborted", "undone", "interrupted")


class RunHistory:
    """The table of playbook runs in the hub's store (``automation_runs``)."""

    def __init__(self, store: Store, keep: int = 500) -> None:
        self.store = store
        self.keep = keep
        """How many runs are kept (the oldest go first)."""

    async def save(self, run: dict[str, Any]) -> None:
        """Write (or rewrite) one run."""
        body = json.dumps(run, default=str)
        await self.store.call(lambda db: _save(db, run, body, self.keep))

    async def load(self) -> list[dict[str, Any]]:
        """Every kept run, oldest first; one that was going is now ``interrupted``."""
        return await self.store.call(_load)


def _table(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, playbook TEXT,"
        " user TEXT, state TEXT, started_ts INTEGER, body TEXT)"
    )


def _save(db: sqlite_utils.Database, run: dict[str, Any], body: str, keep: int) -> None:
    _table(db)
    with db.conn:
        db.execute(
            f"INSERT OR REPLACE INTO {TABLE} VALUES (?,?,?,?,?,?)",
            [run["id"], run["playbook"], run["user"], run["state"], run["started_ts"], body],
        )
        db.execute(f"DELETE FROM {TABLE} WHERE id <= (SELECT MAX(id) FROM {TABLE}) - ?", [keep])


def _load(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    _table(db)
    runs = []
    for (body,) in db.execute(f"SELECT body FROM {TABLE} ORDER BY id").fetchall():
        run = json.loads(body)
        if run["state"] not in FINISHED:
            run["interrupted_in"] = run["state"]
            run["state"] = "interrupted"
            for step in run["steps"]:
                for target, outcome in step["outcomes"].items():
                    if outcome == "sending":
                        step["outcomes"][target] = "unknown"
        runs.append(run)
    if any(run.get("interrupted_in") for run in runs):
        with db.conn:
            for run in runs:
                if run.get("interrupted_in"):
                    db.execute(
                        f"UPDATE {TABLE} SET state = ?, body = ? WHERE id = ?",
                        [run["state"], json.dumps(run, default=str), run["id"]],
                    )
    return runs
