"""Alert broadcast: e-mail, webhook and CAP 1.2 messages, exactly once per threshold crossing.

A deployment declares its alerts in ``[plugins.hydro.alerts.<name>]``
(who is told, for which stages, over which channels), and each gauge lists
the alerts its crossings broadcast (``alerts = ["prefecture"]``). When a
threshold alarm is *raised* (a crossing), every channel of every alert that
covers that stage gets one **delivery**, keyed by the crossing (the alarm id
and the time it was raised) and the alert and channel names. Deliveries are
rows of a table of the hub's store, written before anything is sent:

* a key already in the table is never delivered again, so an alarm raised
  once (its state survives a restart) is broadcast once, restart or not;
* a delivery that fails stays pending and is retried with a backoff (2 s,
  doubling, at most ``retry_max`` s) until it succeeds; one that was sent
  is marked so before the next is tried;
* every outcome (sent, failed with its reason) is a ``notification`` entry
  of the journal.

Receivers see the key: as the e-mail's ``Message-ID``, the webhook's
``Idempotency-Key`` header and the CAP message's ``identifier``, so a crash
between the send and the mark (the only window where a delivery can be sent
twice) is still one alert for a receiver that keeps the keys it saw.

Nothing here is specific to water: :class:`AlertBroadcaster` takes
:class:`Crossing` objects from any family; the hydro plugin feeds it from its
threshold alarms.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Literal
from xml.etree import ElementTree

import aiohttp
import anyio
import pydantic
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cityvisor.core.store import JournalEntry
from cityvisor.hal import mqtt

__all__ = [
    "CAP_NAMESPACE",
    "AlertBroadcaster",
    "AlertSpec",
    "AlertsSettings",
    "CapChannel",
    "Crossing",
    "EmailChannel",
    "WebhookChannel",
    "cap_message",
]

log = logging.getLogger(__name__)

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
TABLE = "alert_deliveries"
Stage = Literal["vigilance", "alert", "crisis"]

_Strict = pydantic.ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class EmailChannel(pydantic.BaseModel):
    """An e-mail to a list of addresses, over SMTP."""

    model_config = _Strict
    host: str
    """SMTP server."""
    port: int = pydantic.Field(25, ge=1, le=65535)
    """SMTP port (587 with ``starttls``)."""
    sender: str
    """The ``From`` address."""
    to: list[str] = pydantic.Field(min_length=1)
    """Recipients."""
    starttls: bool = False
    """Upgrade the connection with STARTTLS before logging in."""
    username: str = ""
    """SMTP user, if the server wants a login."""
    password: str = ""
    """SMTP password; keep it in the environment: ``${NAME}``."""
    timeout: float = pydantic.Field(10.0, gt=0)
    """Seconds the SMTP conversation may take."""


class WebhookChannel(pydantic.BaseModel):
    """A JSON POST to a URL (a messaging gateway, a crisis management tool)."""

    model_config = _Strict
    url: pydantic.HttpUrl
    """Where to POST."""
    token: str = ""
    """Sent as ``Authorization: Bearer <token>`` when set; from the environment: ``${NAME}``."""
    headers: dict[str, str] = {}
    """Extra headers, not secret (they are shown in config dumps): put secrets in ``token``."""
    timeout: float = pydantic.Field(10.0, gt=0)
    """Seconds the request may take."""


class CapChannel(pydantic.BaseModel):
    """A CAP 1.2 XML message published on an MQTT topic for downstream systems."""

    model_config = _Strict
    broker: str = "127.0.0.1"
    """MQTT broker."""
    port: int = pydantic.Field(1883, ge=1, le=65535)
    """Its TCP port."""
    topic: str = "cityvisor/alerts/cap"
    """The topic CAP messages are published on (QoS 1)."""
    sender: str
    """The CAP ``sender``: an address that identifies the city (``alerte@ville.fr``)."""
    username: str = ""
    """Broker user, if any."""
    password: str = ""
    """Broker password; from the environment: ``${NAME}``."""


class AlertSpec(pydantic.BaseModel):
    """One declared alert: the stages it covers and the channels it goes out on."""

    model_config = _Strict
    stages: list[Stage] = ["alert", "crisis"]
    """The crossings that broadcast it."""
    email: EmailChannel | None = None
    """E-mail channel."""
    webhook: WebhookChannel | None = None
    """Webhook channel."""
    cap: CapChannel | None = None
    """CAP channel."""

    @pydantic.model_validator(mode="after")
    def _has_a_channel(self) -> AlertSpec:
        if not self.channels:
            raise ValueError("an alert needs at least one of email, webhook, cap")
        return self

    @property
    def channels(self) -> dict[str, Any]:
        """The channels configured, by name."""
        return {
            name: channel
            for name in ("email", "webhook", "cap")
            if (channel := getattr(self, name)) is not None
        }


class AlertsSettings(pydantic.BaseModel):
    """The ``[plugins.hydro]`` table."""

    model_config = _Strict
    alerts: dict[str, AlertSpec] = {}
    """Declared alerts by name: ``[plugins.hydro.alerts.prefecture]``."""
    retry_max: float = pydantic.Field(300.0, gt=0)
    """The longest wait (s) between two attempts of a failing delivery."""


@dataclass(frozen=True)
class Crossing:
    """A threshold crossed upwards: what to broadcast."""

    key: str
    """Identifies the crossing for good: the alarm id and when it was raised."""
    device: str
    zone: str
    stage: Stage
    value: Any
    ts: int
    """When it was crossed (epoch ms)."""
    alerts: tuple[str, ...]
    message: Mapping[str, str]
    area: str = ""


_SEVERITY = {"vigilance": "Moderate", "alert": "Severe", "crisis": "Extreme"}
_URGENCY = {"vigilance": "Expected", "alert": "Immediate", "crisis": "Immediate"}


def _iso(ts_ms: int) -> str:
    # CAP dates carry an explicit offset and no fraction: "2026-12-02T14:05:00+00:00".
    return datetime.fromtimestamp(ts_ms / 1000, UTC).replace(microsecond=0).isoformat()


def cap_message(crossing: Crossing, key: str, sender: str) -> bytes:
    """The CAP 1.2 ``alert`` for a crossing (UTF-8 XML)."""
    ElementTree.register_namespace("", CAP_NAMESPACE)

    def sub(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, f"{{{CAP_NAMESPACE}}}{tag}")
        if text is not None:
            element.text = text
        return element

    alert = ElementTree.Element(f"{{{CAP_NAMESPACE}}}alert")
    for tag, text in (
        ("identifier", key),
        ("sender", sender),
        ("sent", _iso(crossing.ts)),
        ("status", "Actual"),
        ("msgType", "Alert"),
        ("scope", "Public"),
    ):
        sub(alert, tag, text)
    for language, headline in (
        ("fr-FR", crossing.message.get("fr", "")),
        ("en-GB", crossing.message.get("en", "")),
    ):
        if not headline:
            continue
        info = sub(alert, "info")
        sub(info, "language", language)
        sub(info, "category", "Met")
        sub(info, "event", "Crue" if language.startswith("fr") else "Flood")
        sub(info, "urgency", _URGENCY[crossing.stage])
        sub(info, "severity", _SEVERITY[crossing.stage])
        sub(info, "certainty", "Observed")
        sub(info, "headline", headline)
        sub(info, "description", f"{headline}: {crossing.value} m ({crossing.device})")
        parameter = sub(info, "parameter")
        sub(parameter, "valueName", "waterLevel")
        sub(parameter, "value", str(crossing.value))
        area = sub(info, "area")
        sub(area, "areaDesc", crossing.area or crossing.zone)
    return ElementTree.tostring(alert, encoding="utf-8", xml_declaration=True)


def _json(crossing: Crossing, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "device": crossing.device,
        "zone": crossing.zone,
        "stage": crossing.stage,
        "value": crossing.value,
        "crossed_at": _iso(crossing.ts),
        "message": dict(crossing.message),
        "area": crossing.area,
    }


class AlertBroadcaster:
    """Turns crossings into deliveries, stores them, sends them, retries what fails.

    :meth:`offer` is synchronous and never blocks (alarm hooks call it); the
    hub's service runs :meth:`run`. ``settings`` are the plugin's.
    """

    def __init__(self, hub: Any, settings: AlertsSettings) -> None:
        self.hub = hub
        self.settings = settings
        self._send: MemoryObjectSendStream[Crossing]
        self._receive: MemoryObjectReceiveStream[Crossing]
        self._send, self._receive = anyio.create_memory_object_stream[Crossing](256)
        self._wake = anyio.Event()
        self.dropped = 0

    def offer(self, crossing: Crossing) -> None:
        """Queue a crossing for broadcast (from an alarm hook: no I/O, never waits)."""
        try:
            self._send.send_nowait(crossing)
        except anyio.WouldBlock:
            # 256 crossings waiting means the store is stuck: say it loudly, drop this one.
            self.dropped += 1
            log.error("alert broadcast queue full: crossing %s not broadcast", crossing.key)

    def close(self) -> None:
        """Close the queue (the hub does, when it stops)."""
        self._send.close()
        self._receive.close()

    async def run(self) -> None:
        """Record crossings as deliveries and deliver them, until cancelled."""
        await self.hub.store.call(_create_table)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._record_crossings)
            await self._deliver_forever()

    async def _record_crossings(self) -> None:
        async with self._receive:
            async for crossing in self._receive:
                rows = []
                for name in crossing.alerts:
                    spec = self.settings.alerts.get(name)
                    if spec is None or crossing.stage not in spec.stages:
                        continue
                    for channel in spec.channels:
                        rows.append(
                            {
                                "key": f"{crossing.key}/{name}/{channel}",
                                "alert": name,
                                "channel": channel,
                                "crossing": json.dumps(_crossing_json(crossing)),
                                "status": "pending",
                                "attempts": 0,
                                "next_attempt": 0.0,
                                "created": crossing.ts,
                                "error": "",
                            }
                        )
                if rows:
                    # INSERT OR IGNORE: a key already there (this crossing seen before a
                    # restart) is not a new delivery.
                    await self.hub.store.call(
                        lambda db, rows=rows: db[TABLE].insert_all(rows, ignore=True)
                    )
                    self._wake.set()

    async def _deliver_forever(self) -> None:
        while True:
            self._wake = anyio.Event()
            pending = await self.hub.store.call(_pending)
            now = time.time()
            due = [row for row in pending if row["next_attempt"] <= now]
            for row in due:
                await self._deliver(row)
            if due:
                continue  # look again: what failed now has its next attempt
            wait = min((row["next_attempt"] - now for row in pending), default=3600.0)
            with anyio.move_on_after(max(0.05, wait)):
                await self._wake.wait()

    async def _deliver(self, row: dict[str, Any]) -> None:
        spec = self.settings.alerts.get(row["alert"])
        crossing = _crossing_from_json(json.loads(row["crossing"]))
        key = row["key"]
        channel = None if spec is None else spec.channels.get(row["channel"])
        attempts = row["attempts"] + 1
        try:
            if channel is None:
                raise LookupError(f"alert {row['alert']} has no {row['channel']} channel any more")
            await _SENDERS[row["channel"]](channel, crossing, key)
        except Exception as error:  # any failure of the channel: retried, journaled
            delay = min(2.0 * 2 ** (attempts - 1), self.settings.retry_max)
            reason = f"{type(error).__name__}: {error}"
            await self.hub.store.call(
                lambda db: db[TABLE].update(
                    key,
                    {"attempts": attempts, "next_attempt": time.time() + delay, "error": reason},
                )
            )
            await self._journal(
                crossing,
                row,
                f"failed (attempt {attempts}, retry in {delay:g} s): {reason}",
                attempts,
            )
            log.warning("alert %s by %s failed: %s", row["alert"], row["channel"], reason)
            return
        await self.hub.store.call(
            lambda db: db[TABLE].update(
                key,
                {
                    "status": "sent",
                    "attempts": attempts,
                    "sent_at": int(time.time() * 1000),
                    "error": "",
                },
            )
        )
        await self._journal(crossing, row, "sent", attempts)

    async def _journal(
        self, crossing: Crossing, row: dict[str, Any], outcome: str, attempts: int
    ) -> None:
        await self.hub.store.journal(
            JournalEntry(
                kind="notification",
                message=f"alert {row['alert']} by {row['channel']} for {crossing.stage} at {crossing.device}: {outcome}",
                device=crossing.device,
                data={
                    "key": row["key"],
                    "alert": row["alert"],
                    "channel": row["channel"],
                    "stage": crossing.stage,
                    "zone": crossing.zone,
                    "outcome": "sent" if outcome == "sent" else "failed",
                    "attempts": attempts,
                },
            )
        )


def _create_table(db: Any) -> None:
    if TABLE not in db.table_names():
        db[TABLE].create(
            {
                "key": str,
                "alert": str,
                "channel": str,
                "crossing": str,
                "status": str,
                "attempts": int,
                "next_attempt": float,
                "created": int,
                "sent_at": int,
                "error": str,
            },
            pk="key",
        )
        db[TABLE].create_index(["status"])


def _pending(db: Any) -> list[dict[str, Any]]:
    return list(db[TABLE].rows_where("status = ?", ["pending"], order_by="created, key"))


def _crossing_json(crossing: Crossing) -> dict[str, Any]:
    return {
        "key": crossing.key,
        "device": crossing.device,
        "zone": crossing.zone,
        "stage": crossing.stage,
        "value": crossing.value,
        "ts": crossing.ts,
        "alerts": list(crossing.alerts),
        "message": dict(crossing.message),
        "area": crossing.area,
    }


def _crossing_from_json(data: Mapping[str, Any]) -> Crossing:
    return Crossing(**{**data, "alerts": tuple(data["alerts"])})


# --------------------------------------------------------------------------- channels


async def _send_email(channel: EmailChannel, crossing: Crossing, key: str) -> None:
    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Subject"] = crossing.message.get("fr") or crossing.message.get("en", "")
    message["Message-ID"] = f"<{key.replace('/', '.')}@cityvisor>"
    message["Date"] = datetime.fromtimestamp(crossing.ts / 1000, UTC).strftime(
        "%a, %d %b %Y %H:%M:%S +0000"
    )
    lines = [
        crossing.message.get("fr", ""),
        crossing.message.get("en", ""),
        "",
        f"{crossing.device} ({crossing.area or crossing.zone}): {crossing.value} m",
        f"{_iso(crossing.ts)}",
    ]
    message.set_content("\n".join(lines))

    def send() -> None:  # smtplib blocks: in a worker thread
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout) as smtp:
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if channel.username:
                smtp.login(channel.username, channel.password)
            smtp.send_message(message)

    await anyio.to_thread.run_sync(send)


async def _send_webhook(channel: WebhookChannel, crossing: Crossing, key: str) -> None:
    timeout = aiohttp.ClientTimeout(total=channel.timeout)
    headers = {**channel.headers, "Idempotency-Key": key}
    if channel.token:
        headers["Authorization"] = f"Bearer {channel.token}"
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(str(channel.url), json=_json(crossing, key), headers=headers) as response,
    ):
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{channel.url} answered {response.status}")


async def _send_cap(channel: CapChannel, crossing: Crossing, key: str) -> None:
    await mqtt.publish(
        channel.broker,
        channel.port,
        channel.topic,
        cap_message(crossing, key, channel.sender),
        qos=1,
        username=channel.username,
        password=channel.password,
    )


_SENDERS: dict[str, Callable[[Any, Crossing, str], Awaitable[None]]] = {
    "email": _send_email,
    "webhook": _send_webhook,
    "cap": _send_cap,
}
"""How each channel sends a delivery."""
