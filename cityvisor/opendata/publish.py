"""What a deployment publishes: datasets, their entities, history and aggregates.

:class:`Publication` resolves ``[opendata]`` against the hub's devices and
the plugins' :class:`~cityvisor.opendata.models.DataModel` declarations:
one :class:`Dataset` per published family, each with its devices and the
points it may show. It builds :class:`~cityvisor.opendata.entities.Entity`
objects from a :class:`~cityvisor.opendata.values.Values` source (the live
point database, or the store for ``cityvisor export``).

What is never published, whatever the config says: the families in
``SENSITIVE_FAMILIES`` (cameras, access, switches), string points (a
host, a badge number, a stream address could hide in one), a device's
config (hosts, credentials), and points a model declares ``private``
except as aggregates over a large enough group and a long enough bucket.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cityvisor.core.config import SENSITIVE_FAMILIES, Config, OpenDataAggregate, OpenDataFamily
from cityvisor.core.points import DataType, Point, PointValue, now_ms
from cityvisor.core.store import JournalEntry, Store

from .entities import Entity, iso
from .models import UNIT_CODES, Attribute, DataModel
from .values import Values

if TYPE_CHECKING:
    from cityvisor.core.devices import DeviceType

__all__ = ["Dataset", "Publication", "PublishedDevice", "config_problems", "digest"]


# --------------------------------------------------------------------------- datasets


@dataclass
class PublishedDevice:
    """A device of a dataset, with the points it may show."""

    device: DeviceType
    model: DataModel | None
    points: list[Point]
    """The points published as they are (device-level and members')."""

    @property
    def entity_id(self) -> str:
        """The device's own entity id (a ``Device``'s when no model publishes the device)."""
        entity_type = self.model.entity_type if self.model is not None else "Device"
        return f"urn:ngsi-ld:{entity_type}:{self.device.id}"


@dataclass
class Dataset:
    """One published family: its devices, its points, its aggregates."""

    name: str
    settings: OpenDataFamily
    devices: list[PublishedDevice]
    aggregates: dict[str, OpenDataAggregate]

    @property
    def title(self) -> Mapping[str, str]:
        """The title for the catalogue."""
        return self.settings.title or {
            "fr": f"Équipements : {self.name}",
            "en": f"Equipment: {self.name}",
        }

    def points(self) -> list[Point]:
        """Every point published as it is."""
        return [point for device in self.devices for point in device.points]

    def entity_types(self) -> set[str]:
        """The Smart Data Models its entities follow."""
        types: set[str] = set()
        for device in self.devices:
            for entity_id, _, _ in _point_names(device):
                types.add(entity_id.split(":")[2])
            if device.model is not None:
                types.add(device.model.entity_type)
        return types

    def locations(self) -> list[tuple[float, float]]:
        """Where its devices are."""
        return [d.device.info.location for d in self.devices if d.device.info.location]

    async def entities(self, values: Values) -> list[Entity]:
        """The dataset's entities with their current values."""
        current = await values.current(self.points())
        entities: list[Entity] = []
        for published in self.devices:
            entities.extend(_device_entities(published, current))
        return entities


def _device_entities(published: PublishedDevice, current: Mapping[str, PointValue]) -> list[Entity]:
    device, model = published.device, published.model
    location = device.info.location
    main = Entity(published.entity_id, "Device", location)
    main.static["name"] = device.info.name
    required: tuple[str, ...] = ()
    member_required: tuple[str, ...] = ()
    by_attribute: dict[str, Attribute] = {}
    member_attributes: dict[str, Attribute] = {}
    members: dict[str, Entity] = {}
    if model is not None:
        main.type = model.entity_type
        main.static.update(model.static)
        required = model.required
        by_attribute = {a.point: a for a in model.attributes}
        if model.member is not None:
            member_attributes = {a.point: a for a in model.member.attributes}
            member_required = model.member.required
    extra: list[Entity] = []
    for point in published.points:
        value = current.get(point.id)
        name = point.spec.name
        member = point.member
        if member is not None and model is not None and model.member is not None:
            attribute = member_attributes.get(name) if point.spec.per == model.member.per else None
        elif member is None:
            attribute = by_attribute.get(name)
        else:
            attribute = None
        if attribute is not None:
            target = main
            if member is not None and model is not None and model.member is not None:
                target = members.get(member) or members.setdefault(
                    member, _member_entity(published, member)
                )
            _set(target, attribute, point, value)
            continue
        measurement = _measurement(published, point, value)
        if measurement is not None:
            extra.append(measurement)
    entities = [main] if model is not None and _complete(main, required) else []
    entities += [e for e in members.values() if _complete(e, member_required)]
    return entities + extra


def _complete(entity: Entity, required: Sequence[str]) -> bool:
    """True when the entity has every attribute its type requires."""
    present = set(entity.attributes) | set(entity.static) | set(entity.relationships)
    if entity.location is not None:
        present.add("location")
    return all(name in present for name in required)


def _member_entity(published: PublishedDevice, member: str) -> Entity:
    model = published.model
    assert model is not None and model.member is not None
    entity = Entity(
        f"urn:ngsi-ld:{model.member.entity_type}:{published.device.id}:{member}",
        model.member.entity_type,
        published.device.info.location,
    )
    entity.static.update(
        {
            key: value.replace("{member}", member) if isinstance(value, str) else value
            for key, value in model.member.static.items()
        }
    )
    entity.relationships[model.member.relation] = published.entity_id
    return entity


def _published_value(point: Point, value: PointValue | None) -> Any:
    if value is None or not value.quality.is_good or value.value is None:
        return None
    raw = value.value
    if point.spec.dtype is DataType.ENUM:
        return point.spec.label(raw)
    if isinstance(raw, float) and raw != raw:  # NaN is not JSON
        return None
    return raw


def _set(entity: Entity, attribute: Attribute, point: Point, value: PointValue | None) -> None:
    published = attribute.publish(_published_value(point, value))
    if published is None or value is None:
        return  # bad quality or no value yet: the attribute is left out, never shown stale
    unit = attribute.unit or UNIT_CODES.get(point.spec.unit, "")
    entity.attributes[attribute.name] = (published, value.source_ts, unit)


def _measurement(
    published: PublishedDevice, point: Point, value: PointValue | None
) -> Entity | None:
    """A point of no model as a ``DeviceMeasurement`` (None while it has no good value)."""
    if value is None or not value.quality.is_good or value.value is None:
        return None
    relative = f"{point.member}:{point.spec.name}" if point.member else point.spec.name
    entity = Entity(
        f"urn:ngsi-ld:DeviceMeasurement:{published.device.id}:{relative}",
        "DeviceMeasurement",
        published.device.info.location,
    )
    entity.static["controlledProperty"] = point.spec.name
    entity.relationships["refDevice"] = published.entity_id
    raw = value.value
    if isinstance(raw, float) and raw != raw:
        return None
    unit = UNIT_CODES.get(point.spec.unit, "")
    # numValue is what the model requires: a bool is 1 or 0, an enum its code with its label.
    entity.attributes["numValue"] = (
        int(raw) if isinstance(raw, bool) else raw,
        value.source_ts,
        unit,
    )
    if point.spec.dtype is DataType.ENUM:
        entity.attributes["textValue"] = (point.spec.label(raw), value.source_ts, "")
    return entity


# --------------------------------------------------------------------------- the publication


class Publication:
    """What a deployment publishes: ``[opendata]`` resolved against its devices and models."""

    def __init__(
        self,
        config: Config,
        devices: Mapping[str, DeviceType],
        models: Mapping[str, DataModel],
    ) -> None:
        self.config = config
        self.settings = config.opendata
        self.created = now_ms()
        """When this publication was resolved (the catalogue's ``dct:modified``)."""
        self.models = dict(models)
        self.datasets: dict[str, Dataset] = {}
        families = self._families(devices)
        for family, settings in sorted(families.items()):
            if not settings.publish or family in SENSITIVE_FAMILIES:
                continue
            published = []
            for device in sorted(devices.values(), key=lambda d: d.id):
                if device.family != family:
                    continue
                model = self.models.get(device.type_name)
                names = _published_names(type(device), model, settings)
                points = [
                    point
                    for point in device.points.of_device(device.id)
                    if point.spec.name in names
                ]
                published.append(PublishedDevice(device, model, points))
            if published:
                self.datasets[family] = Dataset(family, settings, published, settings.aggregate)

    def _families(self, devices: Mapping[str, DeviceType]) -> dict[str, OpenDataFamily]:
        if self.settings.families:
            return dict(self.settings.families)
        # Nothing declared: every family a model covers, with its mapped points.
        return {
            device.family: OpenDataFamily()
            for device in devices.values()
            if device.type_name in self.models
        }

    def shape(self) -> dict[str, Any]:
        """What is published, without values: datasets, devices, points (for the journal)."""
        return {
            name: {
                "devices": len(dataset.devices),
                "points": sorted({p.spec.name for p in dataset.points()}),
                "aggregates": sorted(dataset.aggregates),
            }
            for name, dataset in self.datasets.items()
        }

    async def record(self, store: Store, message: str, data: Mapping[str, Any]) -> None:
        """Journal what was published (kind ``opendata``)."""
        await store.journal(JournalEntry(kind="opendata", message=message, data=dict(data)))

    async def aggregate(
        self, dataset: Dataset, values: Values, start: int, end: int
    ) -> list[dict[str, Any]]:
        """The dataset's aggregates over ``[start, end)``: complete buckets, large groups only.

        The range is cut to whole buckets that have ended: a bucket still
        filling would let two requests a minute apart tell a minute's count.
        """
        rows: list[dict[str, Any]] = []
        now = now_ms()
        for name, declaration in sorted(dataset.aggregates.items()):
            bucket = int(declaration.bucket * 1000)
            first = start - start % bucket
            last = min(end, now)
            last -= last % bucket
            if last <= first:
                continue
            groups: dict[str, list[PublishedDevice]] = defaultdict(list)
            for published in dataset.devices:
                group = _group(published.device, declaration.by)
                if group is not None:
                    groups[group].append(published)
            for group, members in sorted(groups.items()):
                if len(members) < declaration.minimum_group:
                    continue  # too few devices: each one's value could be told apart
                rows.extend(
                    await _aggregate_group(
                        group, members, name, declaration, values, first, last, bucket
                    )
                )
        return rows

    async def history(
        self, dataset: Dataset, values: Values, start: int, end: int, bucket_ms: int
    ) -> list[dict[str, Any]]:
        """Count, minimum, maximum, mean and last of each published numeric point, per bucket.

        Buckets are aligned on multiples of ``bucket_ms`` since the epoch (whole
        hours for 3600 s), whatever ``start`` is.
        """
        rows: list[dict[str, Any]] = []
        start -= start % bucket_ms
        for published in dataset.devices:
            for entity_id, attribute, point in _point_names(published):
                if point.spec.dtype not in (DataType.FLOAT, DataType.INT, DataType.BOOL):
                    continue
                for bucket in await values.trend(point.id, start, end, bucket_ms):
                    rows.append(
                        {
                            "entity_id": entity_id,
                            "attribute": attribute,
                            "start": iso(bucket.start),
                            "count": bucket.count,
                            "minimum": _number(bucket.minimum),
                            "maximum": _number(bucket.maximum),
                            "mean": _number(bucket.average),
                            "last": _number(bucket.last),
                        }
                    )
        return rows


def _number(value: Any) -> Any:
    return round(float(value), 6) if isinstance(value, int | float) else value


def _point_names(published: PublishedDevice) -> list[tuple[str, str, Point]]:
    """(entity id, attribute name, point) of each published point of a device."""
    model = published.model
    result = []
    for point in published.points:
        name = point.spec.name
        if model is not None:
            if point.member is None:
                mapped = {a.point: a.name for a in model.attributes}
                if name in mapped:
                    result.append((published.entity_id, mapped[name], point))
                    continue
            elif model.member is not None and point.spec.per == model.member.per:
                mapped = {a.point: a.name for a in model.member.attributes}
                if name in mapped:
                    entity = (
                        f"urn:ngsi-ld:{model.member.entity_type}:{published.device.id}:"
                        f"{point.member}"
                    )
                    result.append((entity, mapped[name], point))
                    continue
        relative = f"{point.member}:{name}" if point.member else name
        result.append(
            (f"urn:ngsi-ld:DeviceMeasurement:{published.device.id}:{relative}", "numValue", point)
        )
    return result


def _group(device: DeviceType, by: str) -> str | None:
    if by == "site":
        return "site"
    if by == "zone":
        return device.zone
    prefix = by.removeprefix("tag:")
    tags = sorted(tag for tag in device.info.tags if tag.startswith(prefix))
    return tags[0].removeprefix(prefix) if tags else None


async def _aggregate_group(
    group: str,
    members: list[PublishedDevice],
    name: str,
    declaration: OpenDataAggregate,
    values: Values,
    first: int,
    last: int,
    bucket: int,
) -> list[dict[str, Any]]:
    counts: dict[int, float] = defaultdict(float)
    numbers: dict[int, list[float]] = defaultdict(list)
    for published in members:
        for point in published.device.points.of_device(published.device.id):
            if point.spec.name != name:
                continue
            previous: Any = None
            for value in await values.history(point.id, first, last):
                if not value.quality.is_good or value.value is None:
                    previous = None
                    continue
                moment = value.source_ts - value.source_ts % bucket
                if point.spec.dtype is DataType.BOOL:
                    if value.value and not previous:
                        counts[moment] += 1
                elif value.value != previous:
                    counts[moment] += 1
                if not isinstance(value.value, str):
                    numbers[moment].append(float(value.value))
                previous = value.value
    rows = []
    for moment in range(first, last, bucket):
        statistic = declaration.statistic
        if statistic == "count":
            result: float | None = counts.get(moment, 0.0)
        else:
            found = numbers.get(moment)
            if not found:
                continue
            result = {"sum": sum(found), "mean": sum(found) / len(found), "max": max(found)}[
                statistic
            ]
        rows.append(
            {
                "group": group,
                "attribute": name,
                "statistic": statistic,
                "start": iso(moment),
                "end": iso(moment + bucket),
                "value": round(result, 6) if result is not None else None,
                "devices": len(members),
            }
        )
    return rows


def _published_names(
    device_type: type[DeviceType], model: DataModel | None, settings: OpenDataFamily
) -> set[str]:
    names = (
        settings.points
        if settings.points is not None
        else (model.mapped_points() if model is not None else [])
    )
    private = model.private if model is not None else frozenset()
    specs = device_type.point_specs
    return {
        name
        for name in names
        if name in specs and specs[name].dtype is not DataType.STR and name not in private
    }


def config_problems(
    config: Config, device_types: Mapping[str, type[DeviceType]], models: Mapping[str, DataModel]
) -> list[str]:
    """Problems of ``[opendata]`` once device types and models are known, with key paths."""
    settings = config.opendata
    if not settings.enabled:
        return []
    problems: list[str] = []
    by_family: dict[str, list[type[DeviceType]]] = defaultdict(list)
    for device_type in device_types.values():
        by_family[device_type.family].append(device_type)
    for family, entry in settings.families.items():
        where = f"opendata.families.{family}"
        types = by_family.get(family)
        if not types:
            known = ", ".join(sorted(f for f in by_family if f not in SENSITIVE_FAMILIES))
            problems.append(f"{where}: no device type of family {family!r} (families: {known})")
            continue
        specs = {name: spec for t in types for name, spec in t.point_specs.items()}
        private = {
            name for t in types if t.type_name in models for name in models[t.type_name].private
        }
        if entry.points is None and not any(t.type_name in models for t in types):
            problems.append(
                f"{where}: family {family!r} has no open data model: list the points to publish"
            )
        for index, name in enumerate(entry.points or ()):
            spec = specs.get(name)
            if spec is None:
                problems.append(
                    f"{where}.points[{index}]: {family} has no point {name!r} "
                    f"(its points: {', '.join(sorted(specs))})"
                )
            elif spec.dtype is DataType.STR:
                problems.append(
                    f"{where}.points[{index}]: {name!r} is a string point: "
                    "text is never published (it could hold a host or a name)"
                )
            elif name in private:
                problems.append(
                    f"{where}.points[{index}]: {name!r} could identify a person: "
                    f"publish it only aggregated ([{where}.aggregate.{name}])"
                )
        for name in entry.aggregate:
            spec = specs.get(name)
            if spec is None:
                problems.append(f"{where}.aggregate.{name}: {family} has no point {name!r}")
            elif spec.dtype is DataType.STR:
                problems.append(f"{where}.aggregate.{name}: a string point cannot be aggregated")
    return problems


def digest(data: Any) -> str:
    """A short, stable digest of JSON-ready data."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
