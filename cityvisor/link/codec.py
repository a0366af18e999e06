"""Sparkplug B payloads and topics: points and commands to protobuf bytes and back.

The wire format is the Eclipse Tahu ``sparkplug_b.proto`` message
``Payload``, as compiled in the ``pysparkplug`` distribution (installed
without its MQTT dependency, see decision 0019). This module uses only its
generated protobuf classes, not its client, so the MQTT side stays aiomqtt.

A point becomes a metric named by its id relative to the device
(``c1/level``, ``online``), with an alias (an integer unique in the node)
that the data messages use instead of the name. A birth carries every
metric with its datatype and the point's declaration as properties (unit,
labels, documentation, zone, family, member, writable), so that a central
hub can build the same point. A point whose quality is not good carries the
``Quality`` property (OPC's 0 bad, 64 uncertain, 192 good) and its reason.

Commands and their results travel as String metrics holding JSON
(:data:`COMMAND_PREFIX`, :data:`RESULT_METRIC`), documented in docs/link.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cityvisor.core.points import DataType, PointSpec, PointValue, Quality, QualityStatus

try:
    from pysparkplug._protobuf import sparkplug_b_pb2 as _pb
except ImportError as error:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "the Sparkplug B link needs the protobuf codec of pysparkplug: "
        "pip install --no-deps pysparkplug==0.6.1 protobuf (see docs/link.md)"
    ) from error

__all__ = [
    "BDSEQ_METRIC",
    "COMMAND_PREFIX",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "RESULT_ALIAS",
    "RESULT_METRIC",
    "BirthMetric",
    "Decoded",
    "DecodedMetric",
    "SparkplugError",
    "Topic",
    "command_payload",
    "data_payload",
    "death_payload",
    "decode",
    "device_birth_payload",
    "metric_datatype",
    "metric_quality",
    "metric_value",
    "node_birth_payload",
    "parse",
    "point_spec",
    "rebirth_payload",
    "result_payload",
    "state_payload",
]

NAMESPACE = "spBv1.0"
"""The Sparkplug B topic namespace."""
BDSEQ_METRIC = "bdSeq"
"""The NBIRTH/NDEATH metric that pairs a death with its birth."""
REBIRTH_METRIC = "Node Control/Rebirth"
"""The NCMD metric that asks an edge node to publish its births again."""
COMMAND_PREFIX = "Command/"
"""A DCMD metric ``Command/<name>`` (String, JSON) orders the device's command ``<name>``."""
RESULT_METRIC = "Command/Result"
"""The DDATA metric (String, JSON) that carries what became of an ordered command."""

Payload: Any = _pb.Payload  # type: ignore[attr-defined]  # generated code
"""The protobuf message of every Sparkplug B payload but STATE."""

# Sparkplug datatypes (the proto's DataType enum) used here.
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15

_TO_SPARKPLUG = {
    DataType.BOOL: BOOLEAN,
    DataType.INT: INT64,
    DataType.FLOAT: DOUBLE,
    DataType.STR: STRING,
    DataType.ENUM: INT32,
}
_FROM_SPARKPLUG = {
    **{t: DataType.INT for t in (INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64)},
    DATETIME: DataType.INT,
    FLOAT: DataType.FLOAT,
    DOUBLE: DataType.FLOAT,
    BOOLEAN: DataType.BOOL,
    STRING: DataType.STR,
    TEXT: DataType.STR,
    UUID: DataType.STR,
}
_INT_TYPES = frozenset((INT8, INT16, INT32, UINT8, UINT16, UINT32))
_LONG_TYPES = frozenset((INT64, UINT64, DATETIME))

QUALITY_PROPERTY = "Quality"
QUALITY_REASON_PROPERTY = "QualityReason"
_OPC_QUALITY = {QualityStatus.BAD: 0, QualityStatus.UNCERTAIN: 64, QualityStatus.GOOD: 192}

_PROPERTY_STRING = STRING
_PROPERTY_INT = INT32
_PROPERTY_BOOL = BOOLEAN


class SparkplugError(ValueError):
    """A payload or topic that does not follow Sparkplug B (or this hub's use of it)."""


def metric_datatype(dtype: DataType) -> int:
    """The Sparkplug datatype a point of type ``dtype`` is published as."""
    return _TO_SPARKPLUG[dtype]


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class Topic:
    """A Sparkplug B topic: ``spBv1.0/<group>/<type>/<node>[/<device>]`` or ``spBv1.0/STATE/<host>``."""

    message_type: str
    group: str = ""
    node: str = ""
    device: str | None = None

    @classmethod
    def parse(cls, text: str) -> Topic:
        """Parse a topic; raise :class:`SparkplugError` for one outside the namespace."""
        parts = text.split("/")
        if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == "STATE":
            return cls("STATE", node=parts[2])
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
            raise SparkplugError(f"not a Sparkplug B topic: {text!r}")
        return cls(parts[2], parts[1], parts[3], parts[4] if len(parts) == 5 else None)

    def __str__(self) -> str:
        if self.message_type == "STATE":
            return f"{NAMESPACE}/STATE/{self.node}"
        base = f"{NAMESPACE}/{self.group}/{self.message_type}/{self.node}"
        return base if self.device is None else f"{base}/{self.device}"


def state_payload(online: bool, timestamp: int) -> bytes:
    """The JSON body of a host application's STATE message (Sparkplug 3.0)."""
    return json.dumps({"online": online, "timestamp": timestamp}).encode()


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True, slots=True)
class BirthMetric:
    """One point as a birth announces it: name, alias, declaration, current value."""

    name: str
    alias: int
    spec: PointSpec
    value: PointValue
    zone: str = ""
    family: str = ""
    member: str | None = None


def _set_value(metric: Any, datatype: int, value: Any) -> None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        metric.is_null = True
        return
    if datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype in _INT_TYPES:
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype in _LONG_TYPES:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    else:
        metric.string_value = str(value)


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


def _get_value(metric: Any, datatype: int) -> Any:
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None:
        return None
    raw = getattr(metric, field)
    if datatype in (INT8, INT16, INT32):
        return _signed(raw, 32)
    if datatype == INT64:
        return _signed(raw, 64)
    return raw


def _property(properties: Any, key: str, datatype: int, value: Any) -> None:
    properties.keys.append(key)
    item = properties.values.add()
    item.type = datatype
    if datatype == _PROPERTY_BOOL:
        item.boolean_value = bool(value)
    elif datatype == _PROPERTY_INT:
        item.int_value = int(value)
    else:
        item.string_value = str(value)


def _quality_properties(metric: Any, quality: Quality) -> None:
    if quality.is_good:
        return
    _property(metric.properties, QUALITY_PROPERTY, _PROPERTY_INT, _OPC_QUALITY[quality.status])
    if quality.reason:
        _property(metric.properties, QUALITY_REASON_PROPERTY, _PROPERTY_STRING, quality.reason)


RESULT_ALIAS = 1
"""The alias of the node's ``Command/Result`` metric (device metrics start after it)."""


def node_birth_payload(timestamp: int, bd_seq: int) -> bytes:
    """An NBIRTH (seq 0): ``bdSeq``, ``Node Control/Rebirth`` and ``Command/Result``."""
    payload = Payload(timestamp=timestamp, seq=0)
    metric = payload.metrics.add(name=BDSEQ_METRIC, timestamp=timestamp, datatype=INT64)
    metric.long_value = bd_seq
    metric = payload.metrics.add(name=REBIRTH_METRIC, timestamp=timestamp, datatype=BOOLEAN)
    metric.boolean_value = False
    metric = payload.metrics.add(
        name=RESULT_METRIC, alias=RESULT_ALIAS, timestamp=timestamp, datatype=STRING
    )
    metric.is_null = True
    return bytes(payload.SerializeToString())


def death_payload(timestamp: int, bd_seq: int | None = None, seq: int | None = None) -> bytes:
    """An NDEATH (with ``bdSeq``, no seq) or a DDEATH (with ``seq``)."""
    payload = Payload(timestamp=timestamp)
    if seq is not None:
        payload.seq = seq
    if bd_seq is not None:
        metric = payload.metrics.add(name=BDSEQ_METRIC, datatype=INT64)
        metric.long_value = bd_seq
    return bytes(payload.SerializeToString())


def device_birth_payload(timestamp: int, seq: int, metrics: Sequence[BirthMetric]) -> bytes:
    """A DBIRTH: every point with its datatype, declaration and current value."""
    payload = Payload(timestamp=timestamp, seq=seq)
    for item in metrics:
        spec = item.spec
        datatype = _TO_SPARKPLUG[spec.dtype]
        metric = payload.metrics.add(
            name=item.name, alias=item.alias, timestamp=item.value.source_ts or timestamp
        )
        metric.datatype = datatype
        _set_value(metric, datatype, item.value.value)
        properties = metric.properties
        if spec.unit:
            _property(properties, "engUnit", _PROPERTY_STRING, spec.unit)
        if spec.writable:
            _property(properties, "writable", _PROPERTY_BOOL, True)
        if spec.doc:
            _property(properties, "doc", _PROPERTY_STRING, json.dumps(dict(spec.doc)))
        if spec.labels:
            labels = {str(k): v for k, v in spec.labels.items()}
            _property(properties, "labels", _PROPERTY_STRING, json.dumps(labels))
        for key, value in (("zone", item.zone), ("family", item.family), ("member", item.member)):
            if value:
                _property(properties, key, _PROPERTY_STRING, value)
        if spec.history != "default":
            _property(properties, "history", _PROPERTY_STRING, spec.history)
        _quality_properties(metric, item.value.quality)
    return bytes(payload.SerializeToString())


def data_payload(
    timestamp: int,
    seq: int,
    changes: Iterable[tuple[int, int, PointValue]],
    *,
    historical: bool = False,
) -> bytes:
    """A DDATA: ``(alias, datatype, value)`` per change, with the source timestamp."""
    payload = Payload(timestamp=timestamp, seq=seq)
    add = payload.metrics.add
    for alias, datatype, value in changes:
        metric = add(alias=alias, timestamp=value.source_ts)
        _set_value(metric, datatype, value.value)
        if historical:
            metric.is_historical = True
        if not value.quality.is_good:
            _quality_properties(metric, value.quality)
    return bytes(payload.SerializeToString())


def result_payload(timestamp: int, seq: int, result: Mapping[str, Any]) -> bytes:
    """An NDATA carrying one command's result (``Command/Result``, JSON)."""
    payload = Payload(timestamp=timestamp, seq=seq)
    metric = payload.metrics.add(alias=RESULT_ALIAS, name=RESULT_METRIC, timestamp=timestamp)
    metric.datatype = STRING
    metric.string_value = json.dumps(result, default=str)
    return bytes(payload.SerializeToString())


def rebirth_payload(timestamp: int) -> bytes:
    """An NCMD asking for a rebirth."""
    payload = Payload(timestamp=timestamp)
    metric = payload.metrics.add(name=REBIRTH_METRIC, timestamp=timestamp, datatype=BOOLEAN)
    metric.boolean_value = True
    return bytes(payload.SerializeToString())


def command_payload(timestamp: int, command: str, order: Mapping[str, Any]) -> bytes:
    """A DCMD ordering ``command`` (the order: id, arguments, member, user, comment)."""
    payload = Payload(timestamp=timestamp)
    metric = payload.metrics.add(
        name=COMMAND_PREFIX + command, timestamp=timestamp, datatype=STRING
    )
    metric.string_value = json.dumps(order)
    return bytes(payload.SerializeToString())


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class DecodedMetric:
    """One metric as received: name or alias, datatype, value, time, quality, properties."""

    name: str
    alias: int | None
    datatype: int
    value: Any
    timestamp: int | None
    quality: Quality
    historical: bool
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded payload: its timestamp, its seq (None when absent) and its metrics."""

    timestamp: int | None
    seq: int | None
    metrics: list[DecodedMetric]


def _properties(metric: Any) -> dict[str, Any]:
    if not metric.HasField("properties"):
        return {}
    found: dict[str, Any] = {}
    for key, item in zip(metric.properties.keys, metric.properties.values, strict=False):
        field = item.WhichOneof("value")
        found[key] = None if field is None else getattr(item, field)
    return found


def metric_value(metric: Any, datatype: int) -> Any:
    """The value of one protobuf metric of ``datatype`` (None when it is null)."""
    return _get_value(metric, datatype)


def metric_quality(metric: Any) -> Quality:
    """The quality one protobuf metric carries (good without a ``Quality`` property)."""
    if not metric.HasField("properties"):
        return Quality.GOOD
    return _quality(_properties(metric))


def _quality(properties: Mapping[str, Any]) -> Quality:
    code = properties.get(QUALITY_PROPERTY)
    if code is None:
        return Quality.GOOD
    reason = str(properties.get(QUALITY_REASON_PROPERTY) or "")
    if code >= 192:
        return Quality.GOOD
    if code >= 64:
        return Quality.uncertain(reason or "edge_uncertain")
    return Quality.bad(reason or "edge_bad")


def parse(raw: bytes) -> Any:
    """The protobuf ``Payload`` of ``raw`` (for a reader that walks the metrics itself).

    :raises SparkplugError: the bytes are not a Sparkplug B payload.
    """
    try:
        return Payload.FromString(raw)
    except Exception as error:  # the protobuf runtime raises its own DecodeError
        raise SparkplugError(f"not a Sparkplug B payload: {error}") from None


def seq_of(payload: Any) -> int | None:
    """The ``seq`` of a parsed payload (:func:`parse`), None when it has none."""
    return payload.seq if payload.HasField("seq") else None


def decode(raw: bytes, datatypes: Mapping[int, int] | None = None) -> Decoded:
    """Decode a payload; ``datatypes`` gives the datatype of each alias (from the birth).

    :raises SparkplugError: the bytes are not a Sparkplug B payload.
    """
    payload = parse(raw)
    return Decoded(
        payload.timestamp if payload.HasField("timestamp") else None,
        seq_of(payload),
        list(decoded_metrics(payload, datatypes)),
    )


def decoded_metrics(
    payload: Any, datatypes: Mapping[int, int] | None = None
) -> Iterator[DecodedMetric]:
    """The metrics of a parsed payload (:func:`parse`), decoded one at a time.

    What :func:`decode` does for every metric at once; a reader of a large
    birth takes them a slice at a time instead, with turns of the loop between.
    """
    for metric in payload.metrics:
        alias = metric.alias if metric.HasField("alias") else None
        datatype = metric.datatype
        if not datatype and alias is not None and datatypes is not None:
            datatype = datatypes.get(alias, 0)
        properties = _properties(metric)
        yield DecodedMetric(
            metric.name,
            alias,
            datatype,
            _get_value(metric, datatype),
            metric.timestamp if metric.HasField("timestamp") else None,
            _quality(properties),
            metric.is_historical,
            properties,
        )


def point_spec(metric: DecodedMetric) -> PointSpec:
    """The declaration of a point a birth announces (its datatype and properties).

    :raises SparkplugError: the metric's datatype has no point type here.
    """
    dtype = _FROM_SPARKPLUG.get(metric.datatype)
    if dtype is None:
        raise SparkplugError(f"metric {metric.name!r}: datatype {metric.datatype} not supported")
    properties = metric.properties
    labels: dict[int, str] | None = None
    if properties.get("labels"):
        try:
            labels = {int(k): str(v) for k, v in json.loads(properties["labels"]).items()}
        except (ValueError, AttributeError):
            raise SparkplugError(f"metric {metric.name!r}: labels are not JSON") from None
        if dtype is DataType.INT:
            dtype = DataType.ENUM
    doc: dict[str, str] = {}
    if properties.get("doc"):
        try:
            doc = {str(k): str(v) for k, v in json.loads(properties["doc"]).items()}
        except (ValueError, AttributeError):
            raise SparkplugError(f"metric {metric.name!r}: doc is not JSON") from None
    return PointSpec(
        metric.name.rsplit("/", 1)[-1],
        dtype,
        unit=str(properties.get("engUnit") or ""),
        writable=bool(properties.get("writable", False)),
        doc=doc,
        labels=labels,
        history=str(properties.get("history") or "default"),
    )
