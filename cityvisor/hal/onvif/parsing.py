"""Parsing a camera's SOAP answers into the values cityvisor uses."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .values import (
    _TRUE,
    CameraEvent,
    MediaProfile,
    PtzPreset,
    PtzStatus,
    classify_topic,
    strip_credentials,
)


def _without_userinfo(text: str) -> str:
    return " ".join(strip_credentials(w) if "://" in w else w for w in text.split(" "))


def _duration(seconds: float) -> str:
    return f"PT{max(1, math.ceil(seconds))}S"


def _lifetime(result: Any, default: float) -> float:
    """Seconds the camera granted: TerminationTime - CurrentTime (both in its clock)."""
    current = getattr(result, "CurrentTime", None)
    termination = getattr(result, "TerminationTime", None)
    if isinstance(current, dt.datetime) and isinstance(termination, dt.datetime):
        try:
            return max(1.0, (termination - current).total_seconds())
        except TypeError:  # one naive, one aware: the camera's clock format is broken
            pass
    return default


def _uri(result: Any) -> str:
    uri = getattr(result, "Uri", None)
    if uri is not None and not isinstance(uri, str):
        raise TypeError(f"Uri is a {type(uri).__name__}, not text")
    return strip_credentials(uri)


def _profiles(result: Any) -> list[MediaProfile]:
    profiles = []
    for profile in result or []:
        encoder = getattr(profile, "VideoEncoderConfiguration", None)
        resolution = getattr(encoder, "Resolution", None)
        profiles.append(
            MediaProfile(
                token=str(profile.token),
                name=str(getattr(profile, "Name", "") or profile.token),
                encoding=str(getattr(encoder, "Encoding", "") or ""),
                width=int(getattr(resolution, "Width", 0) or 0),
                height=int(getattr(resolution, "Height", 0) or 0),
                ptz=getattr(profile, "PTZConfiguration", None) is not None,
            )
        )
    return profiles


def _presets(result: Any) -> list[PtzPreset]:
    presets = []
    for preset in result or []:
        if preset.token is None:
            raise ValueError("a preset without a token")
        pan, tilt, zoom = _vector(getattr(preset, "PTZPosition", None))
        presets.append(
            PtzPreset(
                token=str(preset.token),
                name=str(getattr(preset, "Name", "") or preset.token),
                pan=pan,
                tilt=tilt,
                zoom=zoom,
            )
        )
    return presets


def _ptz_status(result: Any) -> PtzStatus:
    if result is None:
        raise ValueError("an empty PTZ status")
    pan, tilt, zoom = _vector(getattr(result, "Position", None))
    move = getattr(result, "MoveStatus", None)
    states = {str(getattr(move, axis, "") or "").upper() for axis in ("PanTilt", "Zoom")}
    when = getattr(result, "UtcTime", None)
    return PtzStatus(
        pan, tilt, zoom, "MOVING" in states, when if isinstance(when, dt.datetime) else None
    )


def _vector(position: Any) -> tuple[float | None, float | None, float | None]:
    pan_tilt = getattr(position, "PanTilt", None)
    zoom = getattr(position, "Zoom", None)

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return (
        number(getattr(pan_tilt, "x", None)),
        number(getattr(pan_tilt, "y", None)),
        number(getattr(zoom, "x", None)),
    )


def _items(container: Any) -> dict[str, str]:
    items = getattr(container, "SimpleItem", None) or []
    return {str(item.Name): str(item.Value) for item in items}


def _event(message: Any) -> CameraEvent | None:
    """A :class:`CameraEvent` from one ``wsnt:NotificationMessage``; None if it has no state."""
    topic_node = getattr(message, "Topic", None)
    topic = str(getattr(topic_node, "_value_1", "") or "").strip()
    body = getattr(getattr(message, "Message", None), "_value_1", None)
    if body is None:
        return None
    source = _items(getattr(body, "Source", None))
    data = _items(getattr(body, "Data", None))
    if not data:
        return None
    kind = classify_topic(topic)
    value = next(iter(data.values()))
    for name in ("State", "IsMotion", "IsTamper", "LogicalState", "Motion", "Tamper"):
        if name in data:
            value = data[name]
            break
    when = getattr(body, "UtcTime", None)
    return CameraEvent(
        kind=kind,
        source=next(iter(source.values()), ""),
        active=value.strip().lower() in _TRUE,
        topic=topic,
        utc_time=when if isinstance(when, dt.datetime) else None,
        initial=str(getattr(body, "PropertyOperation", "")) == "Initialized",
    )
