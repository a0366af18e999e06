"""MQTT for the HAL: subscriptions that feed a driver, and publications, over aiomqtt.

Gauges on a LoRa or cellular network often report through an MQTT broker
(the city's Mosquitto): one JSON payload per gauge on its own topic. A
driver opens a :func:`subscription` for its topic and iterates over
:class:`MqttMessage` objects; a broker that refuses or drops the connection
raises :class:`MqttConnectionError`, a
:class:`~cityvisor.core.devices.DeviceError` with reason ``comm_failure``,
so the supervisor marks the device bad and restarts it with backoff.
:func:`publish` sends one message (an alert for downstream systems, a
simulator's reading).

Incoming messages wait in a bounded queue (``max_queued``): a flood of
messages drops the oldest at the client, never grows memory. Credentials
come from the config and are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiomqtt

from cityvisor.core.devices import DeviceError
from cityvisor.core.points import now_ms

__all__ = ["MqttConnectionError", "MqttMessage", "publish", "subscription"]

log = logging.getLogger(__name__)


class MqttConnectionError(DeviceError):
    """The broker cannot be reached, refused us, or dropped the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="comm_failure")


@dataclass(frozen=True)
class MqttMessage:
    """One message received: its topic, its payload bytes, and when it arrived (epoch ms)."""

    topic: str
    payload: bytes
    received_at: int


def _client(
    host: str, port: int, username: str, password: str, identifier: str | None, timeout: float
) -> aiomqtt.Client:
    return aiomqtt.Client(
        host,
        port,
        username=username or None,
        password=password or None,
        identifier=identifier,
        timeout=timeout,
        max_queued_incoming_messages=256,
    )


@asynccontextmanager
async def subscription(
    host: str,
    port: int,
    topic: str,
    *,
    username: str = "",
    password: str = "",
    identifier: str | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[AsyncIterator[MqttMessage]]:
    """Subscribe to ``topic`` (wildcards allowed) and yield the stream of its messages.

    ::

        async with subscription("127.0.0.1", 1883, "gauges/ouche-1") as messages:
            async for message in messages:
                ...

    Raises :class:`MqttConnectionError` when the connection cannot be made or
    is lost while iterating.
    """
    broker = f"{host}:{port}"
    try:
        async with _client(host, port, username, password, identifier, timeout) as client:
            await client.subscribe(topic, qos=1)

            async def messages() -> AsyncIterator[MqttMessage]:
                try:
                    async for message in client.messages:
                        payload = message.payload
                        data = payload if isinstance(payload, bytes) else str(payload).encode()
                        yield MqttMessage(str(message.topic), data, now_ms())
                except aiomqtt.MqttError as error:
                    raise MqttConnectionError(f"MQTT broker {broker}: {error}") from None

            yield messages()
    except aiomqtt.MqttError as error:
        raise MqttConnectionError(f"MQTT broker {broker}: {error}") from None


async def publish(
    host: str,
    port: int,
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    username: str = "",
    password: str = "",
    timeout: float = 5.0,
) -> None:
    """Publish one message (QoS 1 by default: the broker acknowledged it when this returns)."""
    try:
        async with _client(host, port, username, password, None, timeout) as client:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
    except aiomqtt.MqttError as error:
        raise MqttConnectionError(f"MQTT broker {host}:{port}: {error}") from None
