"""The operations page documents every key of ``[plugins.ops]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.ops.settings import (
    CrewSettings,
    Open311Service,
    Open311Settings,
    OpsSettings,
    TraccarSettings,
    TrackerSettings,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
MODELS = {
    "[plugins.ops]": OpsSettings,
    "[plugins.ops.trackers]": TrackerSettings,
    "[plugins.ops.traccar]": TraccarSettings,
    "[[plugins.ops.crews]]": CrewSettings,
    "[plugins.ops.open311]": Open311Settings,
    "[[plugins.ops.open311.services]]": Open311Service,
}


@pytest.mark.parametrize("header", sorted(MODELS))
def test_every_key_of_the_operations_settings_is_documented(header: str):
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(f"### `{header}`", 1)[1].split("###", 1)[0]
    for key in MODELS[header].model_fields:
        assert f"| `{key}` |" in section, f"{header} {key} is missing from docs/operations.md"
