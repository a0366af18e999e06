"""Push the published entities to an NGSI-LD context broker (``[opendata.broker]``).

Every ``interval`` seconds the entities of every dataset are sent with
``POST /ngsi-ld/v1/entityOperations/upsert`` (normalized, ``@context`` in
each entity, ``application/ld+json``), at most :data:`BATCH` per request.
A request that fails for a reason that may pass (no connection, timeout,
429, 5xx) is retried up to ``retries`` times with a doubling delay; one the
broker refuses (another 4xx) is not retried. Failures are logged and
journaled, never raised: the hub's other services go on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from cityvisor.core.config import OpenDataBroker

from .entities import with_context
from .publish import Publication, digest
from .values import Values

if TYPE_CHECKING:
    from cityvisor.core.store import Store

__all__ = ["BATCH", "BrokerClient", "PushResult"]

log = logging.getLogger(__name__)

BATCH = 100
"""Entities per upsert request."""

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"


class PushResult:
    """What one push did: entities accepted, batches that failed and why."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed: list[str] = []
        self.attempts = 0

    @property
    def ok(self) -> bool:
        """True when every batch was accepted."""
        return not self.failed


class BrokerClient:
    """The client side of the push: one aiohttp session, bounded retries."""

    def __init__(
        self,
        settings: OpenDataBroker,
        publication: Publication,
        values: Values,
        store: Store,
        *,
        first_delay: float = 1.0,
    ) -> None:
        self.settings = settings
        self.publication = publication
        self.values = values
        self.store = store
        self.first_delay = first_delay
        self._last_shape = ""
        self._failing = False

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if self.settings.tenant:
            headers["NGSILD-Tenant"] = self.settings.tenant
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        return headers

    async def push(self, session: aiohttp.ClientSession) -> PushResult:
        """Send every dataset's entities once; journal the push when what it sends changes."""
        entities: list[dict[str, Any]] = []
        for dataset in self.publication.datasets.values():
            entities += [with_context(e.normalized()) for e in await dataset.entities(self.values)]
        result = PushResult()
        for first in range(0, len(entities), BATCH):
            batch = entities[first : first + BATCH]
            error = await self._send(session, batch, result)
            if error is None:
                result.sent += len(batch)
            else:
                result.failed.append(error)
        shape = digest([[e["id"], sorted(e)] for e in entities])
        if result.ok and (shape != self._last_shape or self._failing):
            self._last_shape = shape
            await self.publication.record(
                self.store,
                f"open data: {result.sent} entities pushed to the context broker",
                {"via": "broker", "entities": [e["id"] for e in entities], "shape": shape},
            )
        if not result.ok and not self._failing:
            await self.publication.record(
                self.store,
                "open data: the context broker refused or did not answer the push",
                {"via": "broker", "errors": result.failed[:5]},
            )
        self._failing = not result.ok
        return result

    async def _send(
        self, session: aiohttp.ClientSession, batch: list[dict[str, Any]], result: PushResult
    ) -> str | None:
        """Send one batch with bounded retries; None on success, else the last error."""
        delay = self.first_delay
        error = ""
        url = self.settings.url + UPSERT
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)
            result.attempts += 1
            try:
                async with session.post(
                    url, json=batch, headers=self._headers(), timeout=timeout
                ) as response:
                    text = await response.text()
                    if response.status in (200, 201, 204):
                        return None
                    error = f"HTTP {response.status}: {text[:200]}"
                    if response.status == 207:
                        return f"some entities refused: {text[:200]}"
                    if response.status != 429 and response.status < 500:
                        break  # the broker refuses this batch: retrying would not help
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = f"{type(failure).__name__}: {failure}"
            log.warning("open data push to %s failed (%s), attempt %d", url, error, attempt + 1)
        log.error("open data push to %s failed: %s", url, error)
        return error

    async def __call__(self) -> None:
        """The service: push every ``interval`` seconds until cancelled."""
        async with aiohttp.ClientSession() as session:
            while True:
                result = await self.push(session)
                if result.ok:
                    log.info("open data: %d entities pushed", result.sent)
                await anyio.sleep(self.settings.interval)
