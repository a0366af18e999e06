"""Flood alerts: one e-mail, one webhook call and one CAP message per threshold crossing.

Real peers: an SMTP server (aiosmtpd, in its own thread), a webhook
(an aiohttp server that refuses its first calls, as a gateway restarting
would), and the local Mosquitto broker for the CAP messages. The gauge is
the Modbus simulator.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiomqtt
import anyio
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from cityvisor.hal.sim.gauge import HydroGaugeSimulator
from cityvisor.plugins import hydro
from cityvisor.plugins.hydro.alerts import CAP_NAMESPACE
from cityvisor.testing import free_tcp_port, running_hub, wait_for_alarm
from tests.plugins.test_hydro import THRESHOLDS, broker_is_listening

pytestmark = pytest.mark.anyio

WAIT = 20.0
CAP = f"{{{CAP_NAMESPACE}}}"


class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_tcp_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


class Webhook:
    """An HTTP endpoint that answers 503 to its first ``failures`` calls, then 204."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, str, dict[str, Any]]] = []
        self.authorizations: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = 503 if len(self.calls) < self.failures else 204
        self.calls.append((status, request.headers.get("Idempotency-Key", ""), body))
        self.authorizations.append(request.headers.get("Authorization", ""))
        return web.Response(status=status)

    @property
    def accepted(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, body) for status, key, body in self.calls if status == 204]


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[Webhook, int]]:
    hook = Webhook(failures=2)
    app = web.Application()
    app.router.add_post("/alerts", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield hook, port
    finally:
        await runner.cleanup()


class CapFeed:
    """Every message published on a CAP topic, collected by a subscriber of the broker."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.messages: list[bytes] = []


@pytest.fixture
async def cap_feed() -> AsyncIterator[CapFeed]:
    broker_is_listening()
    feed = CapFeed(f"cityvisor-test/{uuid.uuid4().hex}/cap")
    async with aiomqtt.Client("127.0.0.1", 1883) as client:
        await client.subscribe(feed.topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                feed.messages.append(bytes(message.payload))  # type: ignore[arg-type]

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            yield feed
            tg.cancel_scope.cancel()


def deployment(sim: HydroGaugeSimulator, smtp_port: int, webhook_port: int, topic: str) -> str:
    thresholds = ", ".join(f"{k} = {v}" for k, v in THRESHOLDS.items())
    return f"""
[site]
name = "Dijon"

[store]
path = "city.sqlite"
flush_interval = 0.05

[[zones]]
id = "sud"
name = "Sud"

[plugins.hydro]
retry_max = 0.5

[plugins.hydro.alerts.prefecture]
stages = ["alert"]
webhook = {{ url = "http://127.0.0.1:{webhook_port}/alerts", token = "s3cret-hook" }}
cap = {{ topic = "{topic}", sender = "alerte@ville.example" }}

[plugins.hydro.alerts.prefecture.email]
host = "127.0.0.1"
port = {smtp_port}
sender = "veille@ville.example"
to = ["prefecture@example.org", "astreinte@ville.example"]

[[devices]]
id = "ouche-1"
type = "hydro.modbus_gauge"
zone = "sud"

[devices.config]
host = "127.0.0.1"
port = {sim.port}
unit = 1
period = 0.1
alerts = ["prefecture"]
area = "Quai de l'Ouche"
thresholds = {{ {thresholds} }}
"""


async def deliveries_settled(hub: Any, mailbox: Mailbox, hook: Webhook, feed: CapFeed, n: int):
    """Wait until the hub has sent ``n`` deliveries of each channel and nothing is pending."""
    with anyio.fail_after(WAIT):
        while True:
            pending = await hub.store.call(
                lambda db: db["alert_deliveries"].count_where("status = 'pending'")
            )
            counts = (len(mailbox.messages), len(hook.accepted), len(feed.messages))
            if counts == (n, n, n) and not pending:
                return
            await anyio.sleep(0.05)


async def test_a_crossing_broadcasts_one_email_one_webhook_and_one_cap_message(
    tmp_path: Path, smtp, webhook, cap_feed
):
    mailbox, smtp_port = smtp
    hook, webhook_port = webhook
    async with HydroGaugeSimulator(level=0.5, tick=0.05) as sim:
        config = deployment(sim, smtp_port, webhook_port, cap_feed.topic)
        async with running_hub(config, tmp_path, plugins=[hydro]) as hub:
            sim.set_level("g1", 1.6)  # vigilance and alert: only "alert" is broadcast
            await wait_for_alarm(hub, "ouche-1:flood_alert", lambda a: a.active, timeout=WAIT)
            await deliveries_settled(hub, mailbox, hook, cap_feed, 1)
            # Water lapping at the threshold, inside the hysteresis: the same crossing.
            for level in (1.45, 1.55, 1.42, 1.6):
                sim.set_level("g1", level)
                await anyio.sleep(0.3)
            assert (len(mailbox.messages), len(hook.accepted), len(cap_feed.messages)) == (1, 1, 1)

            email = mailbox.messages[0]
            assert email["Subject"] == "Crue : seuil d'alerte atteint"
            assert email["To"] == "prefecture@example.org, astreinte@ville.example"
            assert "Quai de l'Ouche" in email.get_payload()
            # The webhook failed twice, was retried, and every call carried the same key.
            assert [status for status, _key, _body in hook.calls] == [503, 503, 204]
            assert len({key for _status, key, _body in hook.calls}) == 1
            assert set(hook.authorizations) == {"Bearer s3cret-hook"}
            assert "s3cret-hook" not in json.dumps(hub.config.redacted())
            key, body = hook.accepted[0]
            assert body["stage"] == "alert" and body["device"] == "ouche-1"
            cap = ElementTree.fromstring(cap_feed.messages[0])
            assert cap.tag == f"{CAP}alert"
            assert cap.findtext(f"{CAP}status") == "Actual"
            assert cap.findtext(f"{CAP}info/{CAP}severity") == "Severe"
            assert cap.findtext(f"{CAP}info/{CAP}area/{CAP}areaDesc") == "Quai de l'Ouche"
            assert cap.findtext(f"{CAP}identifier").endswith("/prefecture/cap")
            assert key.startswith("ouche-1:flood_alert@") and key.endswith("/prefecture/webhook")

            journal = await hub.store.query_journal(kinds=["notification"], limit=100)
            outcomes = sorted((e.data["channel"], e.data["outcome"]) for e in journal)
            assert outcomes == [
                ("cap", "sent"),
                ("email", "sent"),
                ("webhook", "failed"),
                ("webhook", "failed"),
                ("webhook", "sent"),
            ]

        # A restart while the water is still high: the crossing was broadcast, never again.
        async with running_hub(config, tmp_path, plugins=[hydro]) as hub:
            await wait_for_alarm(hub, "ouche-1:flood_alert", lambda a: a.active, timeout=WAIT)
            await anyio.sleep(1.0)
            assert (len(mailbox.messages), len(hook.accepted), len(cap_feed.messages)) == (1, 1, 1)

            # The water falls below the hysteresis and rises again: a new crossing.
            sim.set_level("g1", 1.2)
            await wait_for_alarm(hub, "ouche-1:flood_alert", lambda a: not a.active, timeout=WAIT)
            sim.set_level("g1", 1.7)
            await wait_for_alarm(hub, "ouche-1:flood_alert", lambda a: a.active, timeout=WAIT)
            await deliveries_settled(hub, mailbox, hook, cap_feed, 2)
            keys = {json.loads(json.dumps(k)) for k, _body in hook.accepted}
            assert len(keys) == 2


async def test_an_alert_a_gauge_names_must_be_declared(tmp_path: Path):
    from cityvisor.core.config import check_config, parse_config
    from cityvisor.core.plugins import make_plugin_manager

    data = {
        "site": {"name": "x"},
        "zones": [{"id": "sud", "name": "Sud"}],
        "devices": [
            {
                "id": "g",
                "type": "hydro.modbus_gauge",
                "zone": "sud",
                "config": {"host": "127.0.0.1", "thresholds": THRESHOLDS, "alerts": ["mairie"]},
            }
        ],
    }
    config = parse_config(data, source="city.toml", base_dir=tmp_path)
    problems = check_config(config, make_plugin_manager(entry_points=False))
    assert any("devices[0].config.alerts: no alert 'mairie'" in p for p in problems), problems
