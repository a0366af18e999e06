"""The crisis cell: open a crisis (flood, snow, public order, epidemic), follow it, report on it.

The timeline of a crisis is the journal itself between its opening and its
closing (alarms, acknowledgements, commands, incidents, notes): nothing has
to be copied while the crisis runs, and nothing that was journaled can be
missing from it. Notes are journal entries of kind ``crisis`` too. When the
crisis closes, an HTML report (timeline and incident summary) is written
and kept with it. A PDF is left to the browser's print dialog: no PDF tool
that installs from PyPI or Debian without native rendering libraries was
worth the dependency.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry, Store
from cityvisor.core.users import Role, User

from .incidents import Incident

__all__ = ["KINDS", "Crisis", "CrisisCell", "CrisisError", "render_report"]

KINDS = ("flood", "snow", "public_order", "epidemic", "other")
"""The kinds of crisis a cell is opened for."""


class CrisisError(ValueError):
    """A crisis request that cannot be done."""


@dataclass
class Crisis:
    """A crisis: what, who opened and closed it, when."""

    id: int
    kind: str
    title: str
    opened_by: str
    opened_ts: int
    closed_by: str | None = None
    closed_ts: int | None = None
    first_entry: int = 0
    """Journal id of the opening entry: the timeline starts there (a timestamp is not
    enough: other entries of the same millisecond come before it)."""
    last_entry: int | None = None
    """Journal id of the closing entry."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "opened_by": self.opened_by,
            "opened_ts": self.opened_ts,
            "closed_by": self.closed_by,
            "closed_ts": self.closed_ts,
            "open": self.closed_ts is None,
        }


class CrisisCell:
    """Crises, one open at a time; opening and closing need ``role``."""

    def __init__(self, store: Store, role: Role = Role.SUPERVISOR) -> None:
        self.store = store
        self.role = role
        self.crises: dict[int, Crisis] = {}
        self.listeners: list[Callable[[Crisis], None]] = []
        """Called synchronously with a crisis once it is opened or closed (rules watch it)."""

    def _tell(self, crisis: Crisis) -> None:
        for listener in self.listeners:
            listener(crisis)

    async def open_store(self) -> None:
        """Create the table if needed and load the crises."""
        rows = await self.store.call(_load)
        self.crises = {c.id: c for c in rows}

    @property
    def current(self) -> Crisis | None:
        """The open crisis, if any."""
        return next((c for c in self.crises.values() if c.closed_ts is None), None)

    def get(self, crisis_id: int) -> Crisis:
        """A crisis by id; CrisisError if unknown."""
        try:
            return self.crises[crisis_id]
        except KeyError:
            raise CrisisError(f"unknown crisis {crisis_id}") from None

    def _authorise(self, user: User, action: str) -> None:
        if not user.has_role(self.role):
            raise PermissionError(f"{user.name} may not {action}: it needs the {self.role} role")

    async def open(self, user: User, kind: str, title: str) -> Crisis:
        """Open a crisis (journaled); only one may be open."""
        self._authorise(user, "open a crisis")
        if kind not in KINDS:
            raise CrisisError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if not title.strip():
            raise CrisisError("title: a crisis needs a title")
        if self.current is not None:
            raise CrisisError(f"crisis {self.current.id} is already open")
        crisis = Crisis(max(self.crises, default=0) + 1, kind, title.strip(), user.name, now_ms())
        opened = await self._journal(
            crisis, user, f"crisis {crisis.id} opened ({kind}): {crisis.title}"
        )
        crisis.first_entry = opened.id or 0
        await self.store.call(lambda db: _save(db, crisis, None))
        self.crises[crisis.id] = crisis
        self._tell(crisis)
        return crisis

    async def note(self, user: User, text: str) -> JournalEntry:
        """Add a note to the open crisis's timeline (operator)."""
        if not user.has_role(Role.OPERATOR):
            raise PermissionError(
                f"{user.name} may not write in the crisis: it needs the operator role"
            )
        crisis = self.current
        if crisis is None:
            raise CrisisError("no crisis is open")
        if not text.strip():
            raise CrisisError("text: the note is empty")
        return await self._journal(crisis, user, text.strip(), note=True)

    async def timeline(self, crisis: Crisis, limit: int = 5000) -> list[JournalEntry]:
        """What the journal holds between the crisis's opening and closing, oldest first."""
        until = crisis.closed_ts + 1 if crisis.closed_ts is not None else None
        entries = await self.store.query_journal(since=crisis.opened_ts, until=until, limit=limit)
        last = crisis.last_entry
        return [
            e
            for e in reversed(entries)
            if (e.id or 0) >= crisis.first_entry and (last is None or (e.id or 0) <= last)
        ]

    async def close(self, user: User, summary: str, incidents: Sequence[Incident]) -> Crisis:
        """Close the open crisis (journaled) and write its HTML report."""
        self._authorise(user, "close a crisis")
        crisis = self.current
        if crisis is None:
            raise CrisisError("no crisis is open")
        closed = await self._journal(crisis, user, f"crisis {crisis.id} closed: {summary.strip()}")
        crisis.last_entry = closed.id
        crisis.closed_by = user.name
        crisis.closed_ts = now_ms()
        timeline = await self.timeline(crisis)
        report = render_report(crisis, timeline, incidents, summary)
        await self.store.call(lambda db: _save(db, crisis, report))
        self._tell(crisis)
        return crisis

    async def report(self, crisis_id: int) -> str | None:
        """The HTML report of a closed crisis."""

        def read(db: sqlite_utils.Database) -> str | None:
            row = db.execute("SELECT report FROM ops_crises WHERE id = ?", [crisis_id]).fetchone()
            return row[0] if row else None

        return await self.store.call(read)

    async def _journal(
        self, crisis: Crisis, user: User, message: str, *, note: bool = False
    ) -> JournalEntry:
        return await self.store.journal(
            JournalEntry(
                kind="crisis",
                message=message,
                user=user.name,
                data={"crisis": crisis.id, "crisis_kind": crisis.kind, "note": note},
            )
        )


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def render_report(
    crisis: Crisis,
    timeline: Sequence[JournalEntry],
    incidents: Sequence[Incident],
    summary: str,
) -> str:
    """The crisis report: a standalone HTML page (print it to PDF from the browser)."""
    e = html.escape
    window = [
        i
        for i in incidents
        if i.created_ts >= crisis.opened_ts and i.created_ts <= (crisis.closed_ts or now_ms())
    ]
    rows = "\n".join(
        f"<tr><td>{_time(x.ts)}</td><td>{e(x.kind)}</td><td>{e(x.user or '')}</td>"
        f"<td>{e(x.message)}</td></tr>"
        for x in timeline
    )
    incident_rows = "\n".join(
        f"<tr><td>{i.id}</td><td>{e(i.title)}</td><td>{e(i.zone)}</td><td>{e(str(i.priority))}</td>"
        f"<td>{e(i.state.value)}</td></tr>"
        for i in window
    )
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<title>Crise {crisis.id}: {e(crisis.title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #999;padding:.2em .4em;text-align:left;font-size:.9em}}</style>
</head><body>
<h1>Crise {crisis.id} / Crisis {crisis.id}: {e(crisis.title)}</h1>
<p>Type / kind: {e(crisis.kind)}. Ouverte / opened {_time(crisis.opened_ts)} ({e(crisis.opened_by)}),
fermée / closed {_time(crisis.closed_ts)} ({e(crisis.closed_by or "")}).</p>
<h2>Synthèse / Summary</h2><p>{e(summary)}</p>
<h2>Interventions / Incidents ({len(window)})</h2>
<table><tr><th>#</th><th>titre / title</th><th>zone</th><th>priorité</th><th>état / state</th></tr>
{incident_rows}</table>
<h2>Chronologie / Timeline ({len(timeline)})</h2>
<table><tr><th>UTC</th><th>type</th><th>utilisateur / user</th><th>événement / event</th></tr>
{rows}</table>
</body></html>
"""


def _save(db: sqlite_utils.Database, crisis: Crisis, report: str | None) -> None:
    with db.conn:
        db.execute(
            "INSERT OR REPLACE INTO ops_crises VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                crisis.id,
                crisis.kind,
                crisis.title,
                crisis.opened_by,
                crisis.opened_ts,
                crisis.closed_by,
                crisis.closed_ts,
                report,
                crisis.first_entry,
                crisis.last_entry,
            ],
        )


def _load(db: sqlite_utils.Database) -> list[Crisis]:
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops_crises (id INTEGER PRIMARY KEY, kind TEXT, title TEXT,"
        " opened_by TEXT, opened_ts INTEGER, closed_by TEXT, closed_ts INTEGER, report TEXT,"
        " first_entry INTEGER, last_entry INTEGER)"
    )
    return [
        Crisis(*row)
        for row in db.execute(
            "SELECT id, kind, title, opened_by, opened_ts, closed_by, closed_ts, first_entry,"
            " last_entry FROM ops_crises"
        )
    ]
