"""How the demo city writes its operating procedures (the checklists its alarms refer to)."""

from __future__ import annotations

from typing import Any

__all__ = ["procedure"]


def procedure(id_: str, title: tuple[str, str], *steps: tuple[str, str]) -> dict[str, Any]:
    """A ``[[procedures]]`` entry: its id, a French and English title, and its steps."""
    return {
        "id": id_,
        "version": 1,
        "title": {"fr": title[0], "en": title[1]},
        "steps": [{"fr": fr, "en": en} for fr, en in steps],
    }
