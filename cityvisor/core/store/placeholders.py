"""What is written instead of a journal entry that cannot be written as sent, whatever the backend.

A journal entry whose text has no UTF-8 form, whose number is beyond 64
bits, or whose data JSON cannot hold is not dropped: a **placeholder** is
written in its place, the same entry with its text made safe and
``data["replaced"]`` saying which fields were changed and why. The SQLite
and the PostgreSQL journals both use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..points import now_ms
from ..text import MAX_INTEGER, MIN_INTEGER, safe_text
from .interface import JournalEntry


def placeholder(entry: JournalEntry, ts: Any, reason: str) -> JournalEntry:
    """What is written instead of ``entry``: its text made storable, and why."""
    fields = []
    if not (isinstance(ts, int) and 0 <= ts <= MAX_INTEGER):
        fields.append("ts")
        ts = now_ms()
    texts: dict[str, str | None] = {}
    for name in ("kind", "message", "user", "device", "point", "alarm"):
        value = getattr(entry, name)
        safe = None if value is None else storable(value)
        if safe != value or (name == "kind" and not safe):
            fields.append(name)
        texts[name] = safe
    try:
        json.dumps(dict(entry.data), default=str, ensure_ascii=False).encode("utf-8")
        data_ok = True
    except Exception:
        data_ok = False
    if not data_ok:
        fields.append("data")
    kept = storable_data(entry.data)
    if not isinstance(kept, dict):
        kept = {"original": kept}
    return JournalEntry(
        kind=texts["kind"] or "journal",
        message=texts["message"] or "",
        user=texts["user"],
        device=texts["device"],
        point=texts["point"],
        alarm=texts["alarm"],
        data={
            **kept,
            "replaced": {"reason": reason, "fields": fields or ["unknown"]},
        },
        ts=ts,
    )


def storable(value: Any) -> str:
    """``value`` as text SQLite always stores: lone surrogates escaped, at most 10,000 characters."""
    text = value if isinstance(value, str) else _short_repr(value)
    return safe_text(text)[:10_000]


def _short_repr(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        return repr(value)[:10_000]
    except Exception:
        return f"<{type(value).__name__}>"


def storable_data(data: Any, depth: int = 0) -> Any:
    """``data`` with everything JSON and SQLite cannot hold turned into safe text."""
    if depth > 20:
        return "<nested too deep>"
    if data is None or isinstance(data, bool | float):
        return data
    if isinstance(data, int):
        return data if MIN_INTEGER <= data <= MAX_INTEGER else _short_repr(data)
    if isinstance(data, str):
        return storable(data)
    if isinstance(data, Mapping):
        return {storable(key): storable_data(value, depth + 1) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [storable_data(value, depth + 1) for value in data[:1000]]
    return storable(data)
