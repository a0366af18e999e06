"""An entity before rendering, and its renderings: NGSI-LD, GeoJSON feature, CSV rows.

Times are UTC (``iso``); a location is ``(latitude, longitude)`` and becomes
a GeoJSON ``Point`` (longitude first). ``dateObserved`` is added to the
types whose model has it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import CONTEXTS, NGSI_LD_CORE

__all__ = ["CSV_COLUMNS", "Entity", "iso", "with_context"]

OBSERVED_TYPES = frozenset({"WaterObserved", "DeviceMeasurement"})
"""Entity types whose model has ``dateObserved``."""


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``2026-12-02T10:00:00Z``)."""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Entity:
    """One entity before rendering: attributes with their time and unit, relationships."""

    id: str
    type: str
    location: tuple[float, float] | None = None
    """(latitude, longitude)."""
    attributes: dict[str, tuple[Any, int, str]] = field(default_factory=dict)
    """name -> (value, observed at in ms, UN/CEFACT unit code or "")."""
    relationships: dict[str, str] = field(default_factory=dict)
    static: dict[str, Any] = field(default_factory=dict)

    @property
    def observed(self) -> int:
        """The latest observation time of its attributes (0 if none)."""
        return max((ts for _, ts, _ in self.attributes.values()), default=0)

    def key_values(self) -> dict[str, Any]:
        """The simplified representation (``options=keyValues``), as the Smart Data Models' schemas describe it."""
        body: dict[str, Any] = {"id": self.id, "type": self.type, **self.static}
        if self.location is not None:
            body["location"] = _point(self.location)
        body.update({name: value for name, (value, _, _) in self.attributes.items()})
        body.update(self.relationships)
        if self.type in OBSERVED_TYPES and self.observed:
            body["dateObserved"] = iso(self.observed)
        return body

    def normalized(self) -> dict[str, Any]:
        """The normalized NGSI-LD representation: Property, GeoProperty, Relationship."""
        body: dict[str, Any] = {"id": self.id, "type": self.type}
        for name, value in self.static.items():
            body[name] = {"type": "Property", "value": value}
        if self.location is not None:
            body["location"] = {"type": "GeoProperty", "value": _point(self.location)}
        for name, (value, ts, unit) in self.attributes.items():
            attribute: dict[str, Any] = {"type": "Property", "value": value, "observedAt": iso(ts)}
            if unit:
                attribute["unitCode"] = unit
            body[name] = attribute
        for name, target in self.relationships.items():
            body[name] = {"type": "Relationship", "object": target}
        if self.type in OBSERVED_TYPES and self.observed:
            body["dateObserved"] = {"type": "Property", "value": iso(self.observed)}
        return body

    def feature(self) -> dict[str, Any]:
        """The entity as a GeoJSON feature (its key-values as properties)."""
        properties = self.key_values()
        properties.pop("location", None)
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": _point(self.location) if self.location is not None else None,
            "properties": properties,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per attribute (long format: every file has the same columns)."""
        latitude, longitude = self.location if self.location is not None else ("", "")
        return [
            {
                "entity_id": self.id,
                "entity_type": self.type,
                "attribute": name,
                "value": _csv_value(value),
                "unit_code": unit,
                "observed_at": iso(ts),
                "latitude": latitude,
                "longitude": longitude,
            }
            for name, (value, ts, unit) in self.attributes.items()
        ]


CSV_COLUMNS = (
    "entity_id",
    "entity_type",
    "attribute",
    "value",
    "unit_code",
    "observed_at",
    "latitude",
    "longitude",
)


def _point(location: tuple[float, float]) -> dict[str, Any]:
    latitude, longitude = location
    return {"type": "Point", "coordinates": [longitude, latitude]}


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def with_context(entity: Mapping[str, Any]) -> dict[str, Any]:
    """An entity with its ``@context`` (NGSI-LD core and its Smart Data Model's)."""
    contexts = [CONTEXTS[entity["type"]]] if entity["type"] in CONTEXTS else []
    return {**entity, "@context": [*contexts, NGSI_LD_CORE]}
