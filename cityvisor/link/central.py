"""The central role: a Sparkplug B host application that gathers the edges' points.

It announces itself with the retained STATE message of Sparkplug 3.0
(``spBv1.0/STATE/<host_id>``, ``{"online": true, "timestamp": ...}``, its
will the same with ``false``), subscribes to the groups it gathers, and
builds every point an edge's births announce in its own PointDB, under the
node's id (``<node>/<the edge's point id>``), with the declaration the
birth carries. Data messages update them with their source timestamps;
historical ones (an edge's replay after a broker loss) go to history only.

Quality follows the edges: NDEATH (with the bdSeq of the birth it ends) or
DDEATH marks the points ``bad(comm_failure)``; a message out of sequence
marks the node's points ``bad(sequence_gap)`` and asks the node for a
rebirth (NCMD ``Node Control/Rebirth``), as does data from a node whose
birth was never seen. Each node has an ``online`` point and a
communication alarm. Losing the broker marks every gathered point bad.

Commands go out as DCMD ``Command/<name>`` and :meth:`Central.command`
returns what the edge's command bus made of them (or a timeout).

A standby central (``standby_for``) gathers the same points but sends
nothing until the active central's STATE says offline; it then publishes
its own STATE online, asks every node for a rebirth and takes commands
(decision 0019; docs/link.md says what becomes of sessions and commands).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiomqtt
import anyio
import anyio.lowlevel

from cityvisor.core.declarations import alarm
from cityvisor.core.points import DataType, Point, PointSpec, PointValue, Quality, now_ms
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import User

from . import codec
from .broker import Backoff, connect
from .settings import LinkSettings

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub

__all__ = ["Central", "LinkCommandError"]

log = logging.getLogger(__name__)

REBIRTH_INTERVAL = 2.0
"""Seconds between two rebirth requests to one node."""

BIRTH_SLICE = 500
"""Metrics of a device's birth decoded and applied between two turns of the loop (~10-15 ms)."""

_ONLINE_SPEC = PointSpec(
    "online",
    DataType.BOOL,
    doc={"fr": "Nœud de périphérie joignable", "en": "Edge node reachable"},
)


class LinkCommandError(Exception):
    """A command the central cannot send (standby, broker away, unknown node, too many)."""


@dataclass
class _Device:
    points: dict[int, tuple[Point, int]] = field(default_factory=dict)
    """By alias: the central's point and the metric's Sparkplug datatype."""
    by_name: dict[str, Point] = field(default_factory=dict)


@dataclass
class _Node:
    group: str
    node: str
    online: Point
    alive: bool = False
    bd_seq: int | None = None
    seq: int = 0
    devices: dict[str, _Device] = field(default_factory=dict)
    rebirth_at: float = -1e9

    def points(self) -> list[Point]:
        return [p for d in self.devices.values() for p in d.by_name.values()]


class Central:
    """A hub in the ``central`` role: the edges' points in this PointDB, commands to them.

    ``nodes`` maps ``(group, node)`` to what is known of each edge node;
    ``active`` is False for a standby while the active central is online;
    ``gaps``, ``rebirths``, ``historical`` and ``changes`` count sequence
    gaps, rebirth requests, replayed changes sent to history and live
    changes applied.
    """

    def __init__(self, hub: Hub, settings: LinkSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.host_id = settings.host_id
        self.active = not settings.standby_for
        self.connected = False
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.gaps = 0
        self.rebirths = 0
        self.historical = 0
        self.changes = 0
        self.took_over = anyio.Event()
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self._state_ts = 0
        self._peer_seen = anyio.Event()
        self._born = anyio.Event()

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected, gather, and (standby) watch the active central, until cancelled."""
        backoff = Backoff()
        broker = f"{self.settings.host}:{self.settings.port}"
        state_topic = str(codec.Topic("STATE", node=self.host_id))
        while True:
            self._state_ts = now_ms()
            will = aiomqtt.Will(
                state_topic, codec.state_payload(False, self._state_ts), qos=1, retain=True
            )
            client = connect(self.settings, self.hub.config, f"cityvisor-host-{self.host_id}", will)
            try:
                async with client, anyio.create_task_group() as tg:
                    for group in self.settings.groups or ["+"]:
                        await client.subscribe(f"{codec.NAMESPACE}/{group}/#", qos=1)
                    if self.settings.standby_for:
                        peer = str(codec.Topic("STATE", node=self.settings.standby_for))
                        await client.subscribe(peer, qos=1)
                        tg.start_soon(self._grace, client)
                    self._client = client
                    self.connected = True
                    if self.active:
                        await self._announce(client, True)
                    backoff.reset()
                    log.info("sparkplug host %s connected to %s", self.host_id, broker)
                    try:
                        async for message in client.messages:
                            await self._received(client, message)
                    except anyio.get_cancelled_exc_class():
                        if self.active:  # a deliberate stop: offline now, not after the keepalive
                            with anyio.move_on_after(2, shield=True):
                                await self._announce(client, False)
                        raise
            except* aiomqtt.MqttError as errors:  # from the connection or its task group
                error = errors.exceptions[0]
                log.warning("sparkplug host %s: broker %s: %s", self.host_id, broker, error)
            finally:
                self._client = None
                self.connected = False
                self._lost_broker()
            await anyio.sleep(backoff.next())

    async def _announce(self, client: aiomqtt.Client, online: bool) -> None:
        topic = str(codec.Topic("STATE", node=self.host_id))
        await client.publish(topic, codec.state_payload(online, self._state_ts), qos=1, retain=True)

    async def _grace(self, client: aiomqtt.Client) -> None:
        """A standby that never hears of the active central takes over after three keepalives.

        (Long enough for two centrals started together: the active one's
        retained STATE arrives first.)
        """
        with anyio.move_on_after(3 * self.settings.keepalive):
            await self._peer_seen.wait()
            return
        if not self.active:
            log.warning(
                "sparkplug host %s: no STATE from %s", self.host_id, self.settings.standby_for
            )
            await self._take_over(client)

    async def _take_over(self, client: aiomqtt.Client) -> None:
        self.active = True
        await self._announce(client, True)
        for node in list(self.nodes.values()):
            node.rebirth_at = -1e9
            await self._rebirth(client, node)
        await self._journal(f"sparkplug host {self.host_id} is now the active central", {})
        self.took_over.set()

    def _lost_broker(self) -> None:
        for node in self.nodes.values():
            if node.alive:
                node.alive = False
                self._mark(node, Quality.bad("comm_failure"))

    # -- receiving -------------------------------------------------------------

    async def _received(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        raw = message.payload if isinstance(message.payload, bytes) else b""
        log.debug("sparkplug host %s: %s (%d bytes)", self.host_id, message.topic, len(raw))
        try:
            topic = codec.Topic.parse(str(message.topic))
        except codec.SparkplugError:
            return
        if topic.message_type == "STATE":
            # Only the active central's: with every group gathered ("+"), the STATE
            # messages of every host application arrive too.
            if self.settings.standby_for and topic.node == self.settings.standby_for:
                await self._peer_state(client, raw)
            return
        if topic.message_type in ("NCMD", "DCMD"):
            return
        key = (topic.group, topic.node)
        node = self.nodes.get(key)
        try:
            if topic.message_type == "NBIRTH":
                self._node_birth(key, codec.decode(raw))
                return
            if topic.message_type == "NDEATH":
                if node is not None and node.alive:
                    self._node_death(node, codec.decode(raw))
                return
            if node is None or not node.alive:
                node = node or self._node(key)
                await self._rebirth(client, node)
                return
            if topic.message_type == "DDATA":
                # The hot path: the protobuf message itself, no intermediate objects.
                message_data = codec.parse(raw)
                if await self._in_sequence(client, node, codec.seq_of(message_data)):
                    await self._device_data(client, node, topic.device, message_data)
                return
            if topic.message_type == "DBIRTH" and topic.device is not None:
                # Decoded and applied a slice at a time: a device of many points
                # must not hold the loop while its birth is read.
                message_data = codec.parse(raw)
                if await self._in_sequence(client, node, codec.seq_of(message_data)):
                    await self._device_birth(
                        node, topic.device, codec.decoded_metrics(message_data)
                    )
                return
            decoded = codec.decode(raw)
        except codec.SparkplugError as error:
            log.warning("sparkplug host %s: %s on %s", self.host_id, error, message.topic)
            return
        if not await self._in_sequence(client, node, decoded.seq):
            return
        kind = topic.message_type
        if kind == "DDEATH" and topic.device is not None:
            device = node.devices.get(topic.device)
            if device is not None:
                self.hub.points.set_quality(device.by_name.values(), Quality.bad("comm_failure"))
        elif kind == "NDATA":
            self._node_data(decoded)

    async def _in_sequence(self, client: aiomqtt.Client, node: _Node, seq: int | None) -> bool:
        """Check a message's seq; on a gap mark the node bad and ask for a rebirth."""
        if seq is not None and seq == (node.seq + 1) % 256:
            node.seq = seq
            return True
        self.gaps += 1
        log.warning(
            "sparkplug host %s: node %s/%s sent seq %s after %s: rebirth",
            self.host_id,
            node.group,
            node.node,
            seq,
            node.seq,
        )
        node.alive = False
        self._mark(node, Quality.bad("sequence_gap"))
        await self._rebirth(client, node)
        return False

    def _node(self, key: tuple[str, str]) -> _Node:
        group, name = key
        point_id = f"link/{group}/{name}/online"
        points = self.hub.points
        if point_id in points:
            online = points.get(point_id)
        else:
            online = points.register(
                point_id, _ONLINE_SPEC, device_id=f"{group}/{name}", family="link"
            )
            self.hub.alarms.add(
                alarm(
                    point_id,
                    equals=False,
                    priority="high",
                    name="node_lost",
                    message={
                        "fr": f"Nœud {name} injoignable",
                        "en": f"Edge node {name} unreachable",
                    },
                ),
                point_id,
                family="link",
                alarm_id=f"link:{group}:{name}",
            )
        node = self.nodes[key] = _Node(group, name, online)
        return node

    def _node_birth(self, key: tuple[str, str], decoded: codec.Decoded) -> None:
        node = self.nodes.get(key) or self._node(key)
        bd_seq = next((m.value for m in decoded.metrics if m.name == codec.BDSEQ_METRIC), None)
        node.bd_seq = bd_seq
        node.seq = decoded.seq or 0
        node.alive = True
        self.hub.points.update_point(node.online, True)
        log.info("sparkplug host %s: node %s/%s born (bdSeq %s)", self.host_id, *key, bd_seq)

    def _node_death(self, node: _Node, decoded: codec.Decoded) -> None:
        bd_seq = next((m.value for m in decoded.metrics if m.name == codec.BDSEQ_METRIC), None)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            return  # the will of an earlier connection, delivered late
        node.alive = False
        self._mark(node, Quality.bad("comm_failure"))
        log.warning("sparkplug host %s: node %s/%s dead", self.host_id, node.group, node.node)

    def _mark(self, node: _Node, quality: Quality) -> None:
        self.hub.points.set_quality(node.points(), quality)
        self.hub.points.update_point(node.online, False)

    async def _device_birth(
        self, node: _Node, device_id: str, metrics: Iterator[codec.DecodedMetric]
    ) -> None:
        """Register (or re-declare) a device's points from its birth, and apply its values.

        Every :data:`BIRTH_SLICE` metrics the loop gets a turn (messages are
        read one after the other, so no data of the node comes in between).
        """
        device = node.devices.setdefault(device_id, _Device())
        device.points.clear()
        points = self.hub.points
        for n, metric in enumerate(metrics, 1):
            if not n % BIRTH_SLICE:
                await anyio.lowlevel.checkpoint()
            if metric.alias is None or metric.name.startswith(codec.COMMAND_PREFIX):
                continue
            try:
                spec = codec.point_spec(metric)
            except codec.SparkplugError as error:
                log.warning(
                    "sparkplug host %s: %s/%s: %s", self.host_id, node.node, device_id, error
                )
                continue
            properties = metric.properties
            zone = str(properties.get("zone") or "")
            family = str(properties.get("family") or "")
            base = f"{zone}/{family}/{device_id}" if zone and family else device_id
            point_id = f"{node.node}/{base}/{metric.name}"
            point = device.by_name.get(metric.name)
            if point is not None and point.spec != spec:
                points.unregister(point.id)
                point = None
            if point is None:
                if point_id in points:
                    points.unregister(point_id)
                point = points.register(
                    point_id,
                    spec,
                    device_id=f"{node.node}/{device_id}",
                    zone=zone,
                    family=family,
                    member=str(properties.get("member") or "") or None,
                )
                device.by_name[metric.name] = point
            device.points[metric.alias] = (point, metric.datatype)
            self._apply(point, metric)
        self._born.set()
        self._born = anyio.Event()

    async def wait_born(self, group: str, node: str, device: str) -> None:
        """Return once the device's birth has been received (and the node is alive)."""
        while True:
            found = self.nodes.get((group, node))
            if found is not None and found.alive and device in found.devices:
                return
            await self._born.wait()

    def _apply(self, point: Point, metric: codec.DecodedMetric) -> None:
        try:
            self.hub.points.update_point(point, metric.value, metric.quality, metric.timestamp)
            self.changes += 1
        except (TypeError, ValueError) as error:
            self.hub.points.update_point(point, None, Quality.bad("config_error"), metric.timestamp)
            log.warning("sparkplug host %s: %s: %s", self.host_id, point.id, error)

    async def _device_data(
        self, client: aiomqtt.Client, node: _Node, device_id: str | None, payload: Any
    ) -> None:
        """Apply a DDATA: live metrics to the PointDB, historical ones to history."""
        device = node.devices.get(device_id or "")
        if device is None:
            node.alive = False
            await self._rebirth(client, node)
            return
        now = now_ms()
        points = self.hub.points
        store = self.hub.store
        by_alias = device.points
        value_of, quality_of = codec.metric_value, codec.metric_quality
        applied = 0
        for metric in payload.metrics:
            found = by_alias.get(metric.alias) if metric.HasField("alias") else None
            if found is None:
                named = device.by_name.get(metric.name) if metric.name else None
                if named is None:
                    continue
                found = (named, metric.datatype)
            point, datatype = found
            value = value_of(metric, datatype)
            quality = quality_of(metric)
            ts = metric.timestamp or now
            try:
                if metric.is_historical:
                    spec = point.spec
                    coerced = None if value is None else spec.coerce(value)
                    store.record(PointValue(point.id, coerced, quality, ts, now), spec)
                    self.historical += 1
                else:
                    points.update_point(point, value, quality, ts)
                    applied += 1
            except (TypeError, ValueError) as error:
                points.update_point(point, None, Quality.bad("config_error"), ts)
                log.warning("sparkplug host %s: %s: %s", self.host_id, point.id, error)
        self.changes += applied

    def _node_data(self, decoded: codec.Decoded) -> None:
        for metric in decoded.metrics:
            if metric.alias != codec.RESULT_ALIAS and metric.name != codec.RESULT_METRIC:
                continue
            try:
                result = json.loads(metric.value) if isinstance(metric.value, str) else None
            except ValueError:
                result = None
            if not isinstance(result, dict):
                continue
            waiting = self._pending.get(str(result.get("id")))
            if waiting is None:
                log.info(
                    "sparkplug host %s: result of an unknown command %s",
                    self.host_id,
                    result.get("id"),
                )
                continue
            waiting[1].append(result)
            waiting[0].set()

    async def _peer_state(self, client: aiomqtt.Client, raw: bytes) -> None:
        try:
            state = json.loads(raw) if raw else {"online": False}
        except ValueError:
            return
        self._peer_seen.set()
        online = bool(state.get("online")) if isinstance(state, dict) else False
        if not online and not self.active:
            log.warning(
                "sparkplug host %s: %s is offline: taking over",
                self.host_id,
                self.settings.standby_for,
            )
            await self._take_over(client)
        elif online and self.active and self.settings.standby_for:
            log.warning(
                "sparkplug host %s: %s is back: standing by",
                self.host_id,
                self.settings.standby_for,
            )
            self.active = False
            self.took_over = anyio.Event()
            await self._announce(client, False)

    async def _rebirth(self, client: aiomqtt.Client, node: _Node) -> None:
        if not self.active:
            return
        now = anyio.current_time()
        if now - node.rebirth_at < REBIRTH_INTERVAL:
            return
        node.rebirth_at = now
        self.rebirths += 1
        topic = str(codec.Topic("NCMD", node.group, node.node))
        await client.publish(topic, codec.rebirth_payload(now_ms()))

    # -- commands --------------------------------------------------------------

    async def command(
        self,
        group: str,
        node: str,
        device: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        member: str | None = None,
        *,
        user: User,
        comment: str = "",
        confirmation: str | None = None,
    ) -> dict[str, Any]:
        """Order ``command`` to an edge's device; return what its command bus made of it.

        The result is the edge's command result (``outcome``: ``succeeded``,
        ``refused``, ``pending_confirmation`` with a ``token`` to send back
        as ``confirmation``...), or ``timed_out`` when no result came back
        within ``command_timeout``. Journaled here (kind ``link``) with the
        user; the edge journals and audits it as well.

        :raises LinkCommandError: this central is a standby, the broker is
            away, the node is unknown or dead, or too many commands wait.
        """
        client = self._client
        known = self.nodes.get((group, node))
        if not self.active:
            raise LinkCommandError(f"host {self.host_id} is a standby: send it to the active one")
        if client is None:
            raise LinkCommandError("the broker is not reachable")
        if known is None or not known.alive:
            raise LinkCommandError(f"edge node {group}/{node} is not online")
        if len(self._pending) >= self.settings.max_commands:
            raise LinkCommandError(
                f"{self.settings.max_commands} commands already wait for results"
            )
        order_id = uuid.uuid4().hex
        order = {
            "id": order_id,
            "arguments": dict(arguments or {}),
            "member": member,
            "user": user.name,
            "comment": comment,
            "confirmation": confirmation,
        }
        event = anyio.Event()
        results: list[dict[str, Any]] = []
        self._pending[order_id] = (event, results)
        target = f"{group}/{node}/{device}"
        try:
            await client.publish(
                str(codec.Topic("DCMD", group, node, device)),
                codec.command_payload(now_ms(), command, order),
            )
            with anyio.move_on_after(self.settings.command_timeout):
                await event.wait()
        finally:
            del self._pending[order_id]
        result = (
            results[0]
            if results
            else {
                "id": order_id,
                "outcome": "timed_out",
                "detail": f"no result from {group}/{node} within {self.settings.command_timeout:g} s",
            }
        )
        await self._journal(
            f"{user.name}: {command} on {target}: {result.get('outcome')}",
            {
                "target": target,
                "command": command,
                "arguments": order["arguments"],
                "member": member,
                "result": result,
            },
            user=user.name,
        )
        return result

    async def _journal(self, message: str, data: dict[str, Any], user: str | None = None) -> None:
        await self.hub.store.journal(
            JournalEntry(
                kind="link", message=message, user=user, data={"host": self.host_id, **data}
            )
        )
