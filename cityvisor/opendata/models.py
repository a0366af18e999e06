"""Open data models: how a device type becomes FIWARE Smart Data Model entities.

A plugin declares one :class:`DataModel` per device type (hook
``cityvisor_opendata_models``): the entity type its devices become, which
point gives which attribute, and, for a device with members
(``per="circuit"``), the entity type each member becomes and the
relationship that links it to its device. A declaration is data: it does
no I/O and knows nothing of HTTP or files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONTEXTS", "UNIT_CODES", "Attribute", "DataModel", "MemberModel"]

NGSI_LD_CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"

CONTEXTS: dict[str, str] = {
    "StreetLight": "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld",
    "StreetlightControlCabinet": "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld",
    "WaterObserved": "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    "Device": "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld",
    "DeviceMeasurement": "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld",
}
"""The Smart Data Models' JSON-LD context of each entity type (named, never fetched)."""

UNIT_CODES: dict[str, str] = {
    "%": "P1",
    "W": "WTT",
    "kW": "KWT",
    "kWh": "KWH",
    "V": "VLT",
    "A": "AMP",
    "°C": "CEL",
    "m": "MTR",
    "cm": "CMT",
    "m³": "MTQ",
    "m3/s": "MQS",
    "s": "SEC",
    "bit/s": "A99",
    "cm/h": "H49",
}
"""UN/CEFACT common codes (NGSI-LD ``unitCode``) for the units points declare."""


@dataclass(frozen=True)
class Attribute:
    """One point published as one attribute of an entity.

    ``point`` is the point's name in the device type (``"level"``, relative
    to the member for a member's entity); ``name`` the Smart Data Model's
    attribute (``"illuminanceLevel"``). The value is converted by ``convert``
    if given, else mapped through ``values`` (an enum point's labels are the
    keys), else multiplied by ``scale``.
    """

    point: str
    name: str
    unit: str = ""
    """UN/CEFACT unit code of the published value; empty: from the point's unit."""
    scale: float | None = None
    values: Mapping[Any, Any] | None = None
    convert: Callable[[Any], Any] | None = None

    def publish(self, value: Any) -> Any:
        """The published value of a point value (None: not published)."""
        if value is None:
            return None
        if self.convert is not None:
            return self.convert(value)
        if self.values is not None:
            return self.values.get(value)
        if (
            self.scale is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return round(value * self.scale, 6)
        return value


@dataclass(frozen=True)
class MemberModel:
    """The entities a device's members become (a lighting cabinet's circuits: ``StreetLight``)."""

    per: str
    """The member kind (``"circuit"``), as the device type's points declare ``per``."""
    entity_type: str
    attributes: Sequence[Attribute] = ()
    relation: str = "refDevice"
    """The member entity's relationship naming its device's entity."""
    static: Mapping[str, Any] = field(default_factory=dict)
    """Attributes with a fixed value; ``"{member}"`` in a string is the member's name."""
    required: tuple[str, ...] = ()
    """Attributes the entity type requires: a member entity without a value for one of
    them (its point bad or never read) is left out rather than published invalid."""


@dataclass(frozen=True)
class DataModel:
    """How one device type is published: its entity type, attributes and members.

    ``private`` names points that could identify a person (a vehicle on a
    loop): a deployment may publish them only aggregated
    (``[opendata.families.<family>.aggregate.<point>]``).
    """

    device_type: str
    entity_type: str
    attributes: Sequence[Attribute] = ()
    member: MemberModel | None = None
    static: Mapping[str, Any] = field(default_factory=dict)
    private: frozenset[str] = frozenset()
    required: tuple[str, ...] = ()
    """Attributes the entity type requires (see :attr:`MemberModel.required`)."""

    def mapped_points(self) -> list[str]:
        """Names of every point an attribute maps (the family's default publication)."""
        names = [a.point for a in self.attributes]
        if self.member is not None:
            names += [a.point for a in self.member.attributes]
        return list(dict.fromkeys(names))


def collect_models(results: Sequence[tuple[str, Any]]) -> dict[str, DataModel]:
    """The models plugins declare, by device type (the last declaration of a type wins)."""
    models: dict[str, DataModel] = {}
    for _plugin, declared in results:
        for model in declared or ():
            if isinstance(model, DataModel):
                models[model.device_type] = model
    return models
