"""The edge role: this hub's devices as a Sparkplug B edge node and its devices.

Every configured device becomes a Sparkplug device of the node
``[plugins.link] node`` in group ``group``. On each connection the node
publishes NBIRTH (seq 0, a new ``bdSeq``, the same ``bdSeq`` in its will,
NDEATH), then one DBIRTH per device with every point, its datatype and its
declaration, then what the disk buffer kept while the broker was away, in
order, with the original timestamps (``is_historical``). After that each
batch of point changes from the PointDB becomes one DDATA per device (seq
0-255, wrapping). An NCMD ``Node Control/Rebirth`` publishes the births
again. With ``primary_hosts`` the node publishes only while one of those
host applications says online in its STATE (Sparkplug's primary host), and
keeps its changes in the disk buffer meanwhile. A DCMD ``Command/<name>`` runs the device's command through this
hub's own command bus, as ``<command_user>:<the central's user>``, so
interlocks, permissions and the audit trail stay here; what became of it
goes back as the node's ``Command/Result`` metric (NDATA, JSON).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiomqtt
import anyio

from cityvisor.core.commands import CommandError, CommandRequest
from cityvisor.core.points import Batch, Point, PointValue, Subscription, now_ms
from cityvisor.core.users import Role, User

from . import codec
from .broker import Backoff, connect
from .buffer import ChangeBuffer
from .settings import LinkSettings

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub

__all__ = ["EdgeNode"]

log = logging.getLogger(__name__)

MAX_METRICS = 500
"""Metrics in one DDATA at most (a large batch goes as several messages)."""
REPLAY_CHUNK = 1000
"""Buffered changes replayed per message."""


class _Metric:
    """One published point: its alias, Sparkplug datatype and device."""

    __slots__ = ("alias", "datatype", "device", "name", "point")

    def __init__(self, alias: int, point: Point, device: str, name: str) -> None:
        self.alias = alias
        self.point = point
        self.datatype = codec.metric_datatype(point.spec.dtype)
        self.device = device
        self.name = name


class EdgeNode:
    """A hub in the ``edge`` role: publishes its devices, runs the central's commands.

    Run :meth:`run` in the hub's task group (the link plugin's service does).
    ``connected`` is True while the births are out and changes flow;
    ``published`` counts metrics sent live, ``replayed`` those sent from the
    disk buffer, ``births`` the NBIRTHs, ``commands`` the DCMDs run,
    ``connection_failures`` the broker connections refused or lost
    (``last_error`` holds the last reason).
    """

    def __init__(self, hub: Hub, settings: LinkSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.group = settings.group
        self.node = settings.node
        self.bd_seq = -1
        self.seq = 0
        self.connected = False
        self.published = 0
        self.replayed = 0
        self.births = 0
        self.commands = 0
        self.connection_failures = 0
        self.last_error = ""
        self.buffer = ChangeBuffer(
            settings.path(hub.config, settings.buffer), settings.buffer_limit
        )
        self._client: aiomqtt.Client | None = None
        self._lock = anyio.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._devices: dict[str, list[_Metric]] = {}
        self._limiter = anyio.CapacityLimiter(16)
        self._running = 0
        self._hosts_online: set[str] = set()
        self._index()

    def _index(self) -> None:
        """Give every published point of every device its alias (stable for the hub's life)."""
        wanted = {p.id for p in self.hub.points.points(self.settings.points)}
        alias = codec.RESULT_ALIAS
        for device_id, device in self.hub.devices.items():
            base = device.base_id + "/"
            metrics = []
            for point in self.hub.points.of_device(device_id):
                if point.id in wanted and point.id.startswith(base):
                    alias += 1
                    metric = _Metric(alias, point, device_id, point.id[len(base) :])
                    self._metrics[point.id] = metric
                    metrics.append(metric)
            self._devices[device_id] = metrics

    def _topic(self, message_type: str, device: str | None = None) -> str:
        return str(codec.Topic(message_type, self.group, self.node, device))

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Follow the points and keep the node connected, until cancelled."""
        await self.buffer.open()
        try:
            async with (
                self.hub.points.subscribe(self.settings.points, max_buffer=256) as changes,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(self._follow, changes)
                await self._stay_connected(tg)
        finally:
            with anyio.CancelScope(shield=True):
                await self.buffer.close()

    async def _stay_connected(self, tg: anyio.abc.TaskGroup) -> None:
        backoff = Backoff()
        broker = f"{self.settings.host}:{self.settings.port}"
        while True:
            self.bd_seq = await self.buffer.next_bd_seq()
            will = aiomqtt.Will(
                self._topic("NDEATH"), codec.death_payload(now_ms(), self.bd_seq), qos=1
            )
            client = connect(
                self.settings, self.hub.config, f"cityvisor-{self.group}-{self.node}", will
            )
            try:
                async with client:
                    await client.subscribe(self._topic("NCMD"), qos=1)
                    await client.subscribe(self._topic("DCMD") + "/+", qos=1)
                    self._hosts_online.clear()
                    for host in self.settings.primary_hosts:
                        await client.subscribe(str(codec.Topic("STATE", node=host)), qos=1)
                    if not self.settings.primary_hosts:
                        await self._go_online(client)
                    backoff.reset()
                    try:
                        async for message in client.messages:
                            await self._received(client, message, tg)
                    except anyio.get_cancelled_exc_class():
                        # A deliberate stop: say so (a crash leaves it to the will).
                        with anyio.move_on_after(2, shield=True):
                            death = codec.death_payload(now_ms(), self.bd_seq)
                            await client.publish(self._topic("NDEATH"), death, qos=1)
                        raise
            except aiomqtt.MqttError as error:
                self.connection_failures += 1
                self.last_error = str(error)
                if self.connected:
                    log.warning("sparkplug edge %s: broker %s lost (%s)", self.node, broker, error)
                else:
                    log.debug("sparkplug edge %s: broker %s: %s", self.node, broker, error)
            finally:
                self._client = None
                self.connected = False
            await anyio.sleep(backoff.next())

    async def _go_online(self, client: aiomqtt.Client) -> None:
        """Births, then the buffer, then live changes."""
        async with self._lock:
            await self._birth(client)
            await self._replay(client)
            self._client = client
            self.connected = True
        log.info("sparkplug edge %s/%s publishing", self.group, self.node)

    async def _host_state(self, client: aiomqtt.Client, host: str, raw: bytes) -> None:
        """A primary host's STATE: publish while one is online, buffer while none is."""
        log.debug("sparkplug edge %s: STATE of %s: %r", self.node, host, raw)
        try:
            state = json.loads(raw) if raw else {}
            online = isinstance(state, dict) and state.get("online") is True
        except ValueError:
            online = False
        if online:
            self._hosts_online.add(host)
        else:
            self._hosts_online.discard(host)
        if self._hosts_online and self._client is None:
            await self._go_online(client)
        elif not self._hosts_online and self._client is not None:
            log.warning("sparkplug edge %s: no primary host online: buffering", self.node)
            async with self._lock:
                self._client = None
                self.connected = False

    # -- births and data -------------------------------------------------------

    async def _birth(self, client: aiomqtt.Client) -> None:
        """NBIRTH then every DBIRTH, with current values (the caller holds the lock)."""
        self.seq = 0
        now = now_ms()
        await client.publish(self._topic("NBIRTH"), codec.node_birth_payload(now, self.bd_seq))
        for device_id, metrics in self._devices.items():
            birth = [
                codec.BirthMetric(
                    m.name,
                    m.alias,
                    m.point.spec,
                    m.point.current,
                    m.point.zone,
                    m.point.family,
                    m.point.member,
                )
                for m in metrics
            ]
            payload = codec.device_birth_payload(now, self._next_seq(), birth)
            await client.publish(self._topic("DBIRTH", device_id), payload)
        self.births += 1

    async def _replay(self, client: aiomqtt.Client) -> None:
        """Send what the buffer kept, oldest first; delete each part once it is on the wire.

        QoS 0 like every data message (Sparkplug's rule), so that the
        broker never reorders replayed and live messages of one node.
        """
        while True:
            row, changes = await self.buffer.oldest(REPLAY_CHUNK)
            if not changes:
                return
            for payload, topic, count in self._data(changes, historical=True):
                await client.publish(topic, payload)
                self.replayed += count
            await self.buffer.delete_through(row)

    def _data(
        self, changes: Iterable[PointValue], *, historical: bool = False
    ) -> list[tuple[bytes, str, int]]:
        """The DDATA messages for ``changes``, one or more per device, in order."""
        by_device: dict[str, list[tuple[int, int, PointValue]]] = defaultdict(list)
        metrics = self._metrics
        for change in changes:
            metric = metrics.get(change.id)
            if metric is not None:
                by_device[metric.device].append((metric.alias, metric.datatype, change))
        now = now_ms()
        messages = []
        for device_id, items in by_device.items():
            topic = self._topic("DDATA", device_id)
            for start in range(0, len(items), MAX_METRICS):
                part = items[start : start + MAX_METRICS]
                payload = codec.data_payload(now, self._next_seq(), part, historical=historical)
                messages.append((payload, topic, len(part)))
        return messages

    async def _follow(self, changes: Subscription) -> None:
        """Publish each batch of changes, or keep it on disk while the broker is away."""
        async for message in changes:
            values: Sequence[PointValue]
            if isinstance(message, Batch):
                values = message.changes
            elif message.lost == 0:
                continue  # the first snapshot: the births carry it
            else:
                # Changes were lost between the PointDB and us: the current values stand in.
                log.warning(
                    "sparkplug edge %s: %d changes lost, sending values", self.node, message.lost
                )
                values = message.snapshot
            async with self._lock:
                client = self._client
                if client is not None:
                    try:
                        for payload, topic, count in self._data(values):
                            await client.publish(topic, payload)
                            self.published += count
                        continue
                    except aiomqtt.MqttError:
                        self._client = None
                        self.connected = False
                await self.buffer.append([v for v in values if v.id in self._metrics])

    # -- commands --------------------------------------------------------------

    async def _received(
        self, client: aiomqtt.Client, message: aiomqtt.Message, tg: anyio.abc.TaskGroup
    ) -> None:
        try:
            topic = codec.Topic.parse(str(message.topic))
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else b""
            if topic.message_type == "STATE":
                await self._host_state(client, topic.node, raw)
                return
            decoded = codec.decode(raw)
        except codec.SparkplugError as error:
            log.warning("sparkplug edge %s: %s on %s", self.node, error, message.topic)
            return
        if topic.message_type == "NCMD":
            for metric in decoded.metrics:
                if metric.name == codec.REBIRTH_METRIC and metric.value:
                    log.info("sparkplug edge %s: rebirth requested", self.node)
                    async with self._lock:
                        if self._client is client:  # not while it waits for a primary host
                            await self._birth(client)
            return
        if topic.message_type != "DCMD" or topic.device is None:
            return
        for metric in decoded.metrics:
            if not metric.name.startswith(codec.COMMAND_PREFIX):
                log.warning(
                    "sparkplug edge %s: DCMD metric %r on %s is not a command; ignored",
                    self.node,
                    metric.name,
                    topic.device,
                )
                continue
            name = metric.name[len(codec.COMMAND_PREFIX) :]
            if self._running >= 256:
                await self._answer(
                    {
                        "id": _order_id(metric.value),
                        "outcome": "refused",
                        "detail": "too many commands in progress at the edge",
                    }
                )
                continue
            self._running += 1
            tg.start_soon(self._command, topic.device, name, metric.value)

    async def _command(self, device_id: str, name: str, text: Any) -> None:
        """Run one ordered command through the command bus and send its result back."""
        try:
            order_id = _order_id(text)
            try:
                order = json.loads(text) if isinstance(text, str) else None
                if not isinstance(order, dict):
                    raise ValueError("the order is not a JSON object")
                arguments = order.get("arguments") or {}
                if not isinstance(arguments, dict):
                    raise ValueError("arguments must be an object")
            except ValueError as error:
                await self._answer(
                    {
                        "id": order_id,
                        "device_id": device_id,
                        "command": name,
                        "outcome": "refused",
                        "detail": f"bad order: {error}",
                    }
                )
                return
            user = User(
                f"{self.settings.command_user}:{order.get('user') or 'unknown'}",
                Role.parse(self.settings.command_role),
                frozenset({"*"}),
            )
            request = CommandRequest(
                device_id,
                name,
                arguments,
                order.get("member"),
                user,
                str(order.get("comment") or ""),
                origin="sparkplug",
                confirmation=order.get("confirmation"),
            )
            self.commands += 1
            async with self._limiter:
                try:
                    result = await self.hub.commands.execute(request)
                except CommandError as error:
                    if error.result is None:
                        raise
                    result = error.result
            answer = result.as_json()
            answer["edge_id"] = answer.pop("id")  # the edge's own audit id of the attempt
            await self._answer({"id": order_id, **answer})
        finally:
            self._running -= 1

    async def _answer(self, result: dict[str, Any]) -> None:
        async with self._lock:
            client = self._client
            if client is None:
                log.warning(
                    "sparkplug edge %s: result of %s not sent (broker away)",
                    self.node,
                    result["id"],
                )
                return
            payload = codec.result_payload(now_ms(), self._next_seq(), result)
            try:
                await client.publish(self._topic("NDATA"), payload)
            except aiomqtt.MqttError as error:
                log.warning(
                    "sparkplug edge %s: result of %s not sent: %s", self.node, result["id"], error
                )


def _order_id(text: Any) -> str:
    try:
        order = json.loads(text)
        return str(order.get("id", "")) if isinstance(order, dict) else ""
    except (TypeError, ValueError):
        return ""
