"""What a camera tells: its identity, media profiles, PTZ presets and status, and events by topic."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class DeviceInformation:
    """What ``GetDeviceInformation`` says about the camera."""

    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str


@dataclass(frozen=True)
class MediaProfile:
    """A media profile: a stream configuration the camera offers (main stream, sub stream)."""

    token: str
    name: str
    encoding: str = ""
    width: int = 0
    height: int = 0
    ptz: bool = False
    """True if the profile has a PTZ configuration (PTZ calls need such a profile)."""


@dataclass(frozen=True)
class PtzPreset:
    """A stored PTZ position."""

    token: str
    name: str
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None

    def matches(self, status: PtzStatus, tolerance: float = 0.01) -> bool:
        """True if the head stands (idle) at this preset's position."""
        pairs = [(self.pan, status.pan), (self.tilt, status.tilt), (self.zoom, status.zoom)]
        known = [(a, b) for a, b in pairs if a is not None and b is not None]
        return not status.moving and bool(known) and all(abs(a - b) <= tolerance for a, b in known)


@dataclass(frozen=True)
class PtzStatus:
    """Where the PTZ head is and whether it moves."""

    pan: float | None
    tilt: float | None
    zoom: float | None
    moving: bool
    utc_time: dt.datetime | None = None


@dataclass(frozen=True)
class CameraEvent:
    """One event from the camera's PullPoint subscription.

    ``kind`` is ``motion``, ``tamper``, ``input`` or ``other``; ``source``
    names what it concerns (``VideoSource_1``, an input token); ``active`` is
    the state it reports; ``initial`` is True for the current state the
    camera sends when subscribing or on a synchronisation point.
    """

    kind: str
    source: str
    active: bool
    topic: str
    utc_time: dt.datetime | None = None
    initial: bool = False


_TOPICS = (
    ("motion", ("MotionAlarm", "CellMotionDetector/Motion", "MotionDetector", "Motion")),
    ("tamper", ("GlobalSceneChange", "TamperDetector", "Tamper")),
    ("input", ("DigitalInput", "Trigger/Relay")),
)


_TRUE = frozenset({"true", "1", "on", "active"})


def classify_topic(topic: str) -> str:
    """``motion``, ``tamper``, ``input`` or ``other`` for an ONVIF topic (vendors vary)."""
    for kind, markers in _TOPICS:
        if any(marker in topic for marker in markers):
            return kind
    return "other"


def strip_credentials(uri: str | None) -> str:
    """The URI without ``user:password@`` (what may be shown or logged)."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
