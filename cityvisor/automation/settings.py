"""``[plugins.automation]``: where the rule files are and who the rules act as."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cityvisor.core.devices import DeviceConfig

__all__ = ["AutomationSettings"]


class AutomationSettings(DeviceConfig):
    """``[plugins.automation]``: rules in TOML files, evaluated inside the hub."""

    enabled: bool = False
    """Nothing of the automation runs unless this is true."""
    rules: str | None = "rules"
    """Directory of rule files (``*.toml``), relative to the deployment file."""
    playbooks: str | None = None
    """Directory of playbook files (``*.toml``), relative to the deployment file (none: no playbooks)."""
    user: str = Field(default="automation", pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    """The name the rules' commands are journaled under."""
    role: Literal["operator", "supervisor"] = "operator"
    """The role the rules' commands run with (every zone)."""
    concurrency: int = Field(default=16, ge=1, le=256)
    """How many firings run their actions at once."""
    batch_interval: float = Field(default=0.01, ge=0, le=1)
    """Seconds the evaluating task waits after a pass, so that changes arriving
    meanwhile are evaluated together (0: evaluate at every change)."""
    queue: int = Field(default=256, ge=1, le=10_000)
    """Firings waiting for their actions; beyond it a firing is refused (and alarmed)."""
