"""``[plugins.ops]``: the operations layer's settings (procedures, crews, trackers, Open311, crisis).

Nothing of the operations layer runs unless ``enabled = true``. Paths are
relative to the deployment file.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from cityvisor.core.devices import DeviceConfig

__all__ = [
    "CrewSettings",
    "Open311Service",
    "Open311Settings",
    "OpsSettings",
    "TraccarSettings",
    "TrackerSettings",
]


class CrewSettings(DeviceConfig):
    """``[[plugins.ops.crews]]``: a field crew and its vehicle's tracker."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    """Identifier of the crew (``lighting-1``)."""
    name: str = Field(min_length=1)
    """What operators read (``Équipe éclairage 1``)."""
    skills: list[str] = Field(min_length=1)
    """What the crew can do: ``lighting``, ``roads``, ``police``, ``network``..."""
    tracker: str = Field(min_length=1, max_length=64)
    """The ``id`` its vehicle's tracker sends (OsmAnd protocol)."""
    token: str = Field(min_length=16)
    """The tracker's secret, sent as ``token=`` (keep it in the environment: ``${TRACKER_1}``)."""
    zones: list[str] = ["*"]
    """Zones the crew is sent to (``*``: every zone)."""


class TrackerSettings(DeviceConfig):
    """``[plugins.ops.trackers]``: the OsmAnd protocol listener, on a port of its own."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int | None = Field(default=5055, ge=0, le=65535)
    """Port (5055 is Traccar's OsmAnd port; 0 picks a free one; none: no listener)."""


class TraccarSettings(DeviceConfig):
    """``[plugins.ops.traccar]``: poll a Traccar server's API for the vehicles' positions."""

    url: str = Field(pattern=r"^https?://")
    """The Traccar server (``https://traccar.example.org``)."""
    token: str = Field(min_length=8)
    """An API token of a Traccar user who sees the vehicles (``${TRACCAR_TOKEN}``)."""
    interval: float = Field(default=10.0, ge=1, le=3600)
    """Seconds between two polls."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one poll may take."""


class Open311Service(DeviceConfig):
    """``[[plugins.ops.open311.services]]``: a kind of report citizens may send."""

    code: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """``service_code`` in GeoReport v2 (``lamp-out``)."""
    name: str = Field(min_length=1)
    """``service_name`` shown to citizens."""
    description: str = ""
    """``description`` of the service."""
    group: str = ""
    """``group`` of the service (``Lighting``)."""
    skill: str | None = None
    """The crew skill an incident of this service needs (for dispatch)."""
    priority: Literal["critical", "high", "medium", "low"] = "low"
    """Priority of the incident a report opens."""


class Open311Settings(DeviceConfig):
    """``[plugins.ops.open311]``: the citizens' GeoReport v2 endpoint (``/open311/v2/``)."""

    enabled: bool = True
    """Serve the endpoint (public: no session)."""
    services: list[Open311Service] = []
    """The services citizens may report to."""
    max_photo_bytes: int = Field(default=2_000_000, ge=10_000, le=20_000_000)
    """Largest photo accepted."""
    max_description: int = Field(default=4000, ge=10, le=100_000)
    """Longest description accepted, in characters."""
    rate_per_hour: int = Field(default=20, ge=1)
    """Reports one address may post per hour."""
    retention_days: float = Field(default=30, gt=0)
    """Days the citizen's name, e-mail and phone are kept before being purged."""
    personal_data_role: Literal["viewer", "operator", "supervisor", "admin"] = "supervisor"
    """The role that may read a report's name, e-mail and phone."""
    default_zone: str | None = None
    """The zone of a report with no located device nearby (default: the first zone)."""


class OpsSettings(DeviceConfig):
    """``[plugins.ops]``: procedures, incidents, crews, citizen reports and the crisis cell."""

    enabled: bool = False
    """Run the operations layer."""
    procedures: str | None = None
    """Directory of procedure files (``*.toml``, ``*.md``), relative to the deployment file."""
    require_procedures: bool = True
    """``check-config`` reports every alarm whose procedure no file declares."""
    road_speed_kmh: float = Field(default=30.0, gt=0, le=200)
    """Average speed turning a great-circle distance into an ETA."""
    crews: list[CrewSettings] = []
    trackers: TrackerSettings = TrackerSettings()
    traccar: TraccarSettings | None = None
    """Poll a Traccar server too (``[plugins.ops.traccar]``)."""
    open311: Open311Settings = Open311Settings()
    crisis_role: Literal["operator", "supervisor", "admin"] = "supervisor"
    """The role that may open and close a crisis."""

    @pydantic.model_validator(mode="after")
    def _unique(self) -> OpsSettings:
        for key in ("id", "tracker"):
            seen = [getattr(c, key) for c in self.crews]
            duplicates = sorted({v for v in seen if seen.count(v) > 1})
            if duplicates:
                raise ValueError(f"crews: duplicate {key} {', '.join(duplicates)}")
        codes = [s.code for s in self.open311.services]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"open311.services: duplicate code {', '.join(duplicates)}")
        return self
