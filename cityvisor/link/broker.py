"""The broker connection both roles use: aiomqtt with TLS, credentials and a will."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import aiomqtt

from .settings import LinkSettings

__all__ = ["Backoff", "connect"]

log = logging.getLogger(__name__)


def connect(
    settings: LinkSettings, config: Any, identifier: str, will: aiomqtt.Will | None
) -> aiomqtt.Client:
    """A client of the configured broker (not yet connected: ``async with`` it).

    A fresh client per connection: the will (NDEATH with its bdSeq, STATE
    offline) is fixed when the connection is made. The password is read from
    the environment here and handed to the MQTT library only.
    """
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=identifier,
        username=settings.username or None,
        password=settings.password() or None,
        keepalive=settings.keepalive,
        will=will,
        tls_context=settings.tls_context(config),
        clean_session=True,
        timeout=10.0,
        max_queued_incoming_messages=10_000,
        max_queued_outgoing_messages=10_000,
    )


class Backoff:
    """Capped exponential delays between connection attempts, with jitter."""

    def __init__(self, minimum: float = 0.2, maximum: float = 10.0) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count this one)."""
        delay = min(self.maximum, self.minimum * math.pow(2, self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        """A connection succeeded: start again from the minimum."""
        self.attempt = 0
