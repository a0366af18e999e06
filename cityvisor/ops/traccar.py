"""Vehicle positions from a Traccar server's API, where a city already runs one.

Instead of (or beside) trackers posting to cityvisor's own OsmAnd port, a
city whose vehicles report to a Traccar server lets cityvisor poll it:
``GET /api/devices`` maps Traccar's device ids to their ``uniqueId`` (the
``id`` the tracker sends, which ``[[plugins.ops.crews]] tracker`` names) and
``GET /api/positions`` (without parameters: the last known position of every
device) gives latitude, longitude, ``fixTime`` and ``speed`` in knots. The
API token goes as a bearer token. A server that is down, slow or answers
nonsense is logged and retried with capped backoff; the fleet keeps the
last good positions and nothing else stops.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from .crews import KNOT_M_S, Fleet, Position

if TYPE_CHECKING:
    from .settings import TraccarSettings

__all__ = ["TraccarPoller"]

log = logging.getLogger(__name__)

MAX_BODY = 8 * 2**20
"""Largest answer read from the Traccar server."""


class TraccarPoller:
    """Poll a Traccar server every ``interval`` seconds and update the fleet."""

    def __init__(self, fleet: Fleet, settings: TraccarSettings) -> None:
        self.fleet = fleet
        self.settings = settings
        self.polls = 0
        self.failures = 0
        self.last_error = ""

    async def run(self) -> None:
        """Poll until cancelled; failures are counted, logged and retried."""
        base = self.settings.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.settings.token}", "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        delay = self.settings.interval
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            while True:
                try:
                    await self.poll_once(http, base)
                    delay = self.settings.interval
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    self.failures += 1
                    self.last_error = str(error) or type(error).__name__
                    log.warning("traccar %s: %s", base, self.last_error)
                    delay = min(60.0, max(delay, self.settings.interval) * 2)
                await anyio.sleep(delay)

    async def poll_once(self, http: aiohttp.ClientSession, base: str) -> int:
        """One poll; return the positions taken. ValueError for an answer that is not Traccar's."""
        devices = await _get(http, f"{base}/api/devices")
        positions = await _get(http, f"{base}/api/positions")
        unique: dict[Any, str] = {}
        for device in devices:
            if isinstance(device, dict) and "id" in device and device.get("uniqueId"):
                unique[device["id"]] = str(device["uniqueId"])
        taken = 0
        for item in positions:
            found = _position(item)
            if found is None:
                continue
            tracker = unique.get(item.get("deviceId"))
            if tracker is None or self.fleet.by_tracker(tracker) is None:
                continue
            self.fleet.update(tracker, found)
            taken += 1
        self.polls += 1
        return taken


async def _get(http: aiohttp.ClientSession, url: str) -> list[Any]:
    async with http.get(url) as response:
        if response.status != 200:
            raise ValueError(f"{url}: HTTP {response.status}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(65_536):
            body.extend(chunk)
            if len(body) > MAX_BODY:
                raise ValueError(f"{url}: answer larger than {MAX_BODY} bytes")
        data = json.loads(body)
    if not isinstance(data, list):
        raise ValueError(f"{url}: expected a JSON list")
    return data


def _position(item: Any) -> Position | None:
    """A Traccar position, or None when it is not usable (kept out, not fatal)."""
    if not isinstance(item, dict):
        return None
    lat, lon = item.get("latitude"), item.get("longitude")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if isinstance(lat, bool) or isinstance(lon, bool):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or item.get("valid") is False:
        return None
    try:
        fixed = dt.datetime.fromisoformat(str(item.get("fixTime", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    if fixed.tzinfo is None:
        fixed = fixed.replace(tzinfo=dt.UTC)
    speed = item.get("speed")
    metres = None
    if isinstance(speed, int | float) and math.isfinite(speed) and speed >= 0:
        metres = speed * KNOT_M_S
    return Position(float(lat), float(lon), int(fixed.timestamp() * 1000), metres)
