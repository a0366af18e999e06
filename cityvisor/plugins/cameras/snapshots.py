"""Camera snapshots for browsers: fetched server-side, shared for a second, bounded in memory.

A control room's video wall shows dozens of cameras to several operators,
each browser asking for every picture every second. Cameras are small
embedded computers that a few concurrent HTTP Digest requests slow down, so
the browsers never reach them: ``GET /api/v1/cameras/{id}/snapshot`` goes
through :class:`SnapshotCache`, where

- a picture younger than ``max_age`` (one second) is served from memory;
- concurrent requests for the same camera share one fetch (the first one
  fetches, the others wait for its result): a camera sees at most one
  request per ``max_age``, however many browsers look at it;
- memory is bounded: one picture per camera, least recently used first out
  once ``max_bytes`` are held, and no picture over ``max_image`` bytes.

The routes that serve them are in :mod:`cityvisor.plugins.cameras.routes`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from cityvisor.core.points import now_ms
from cityvisor.hal.onvif import SNAPSHOT_LIMIT

__all__ = ["Snapshot", "SnapshotCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A camera's picture: the JPEG and when it was taken (epoch ms), plus our monotonic time."""

    jpeg: bytes
    taken_at: int
    fetched: float


@dataclass
class _Fetch:
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Snapshot | None = None
    error: Exception | None = None


class SnapshotCache:
    """Each camera's latest picture, shared for ``max_age`` seconds, one fetch at a time.

    ``fetch(camera_id)`` returns a fresh JPEG. Counters: ``fetches`` (that
    reached a camera), ``hits`` (served from memory), ``shared`` (waited for
    another request's fetch), ``evicted``.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[bytes]],
        *,
        max_age: float = 1.0,
        max_bytes: int = 64 * 2**20,
        max_image: int = SNAPSHOT_LIMIT,
    ) -> None:
        self._fetch = fetch
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_image = max_image
        self._entries: OrderedDict[str, Snapshot] = OrderedDict()
        self._inflight: dict[str, _Fetch] = {}
        self.bytes = 0
        self.fetches = 0
        self.hits = 0
        self.shared = 0
        self.evicted = 0

    async def get(self, camera_id: str, max_age: float | None = None) -> Snapshot:
        """The camera's picture, at most ``max_age`` seconds old; raises what the fetch raised."""
        max_age = self.max_age if max_age is None else max_age
        while True:
            entry = self._entries.get(camera_id)
            if entry is not None and anyio.current_time() - entry.fetched < max_age:
                self._entries.move_to_end(camera_id)
                self.hits += 1
                return entry
            flight = self._inflight.get(camera_id)
            if flight is None:
                break
            self.shared += 1
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.result is not None:
                return flight.result
            # The fetching request was cancelled (its browser left): fetch ourselves.
        flight = self._inflight[camera_id] = _Fetch()
        try:
            jpeg = await self._fetch(camera_id)
            self.fetches += 1
            if len(jpeg) > self.max_image:
                raise ValueError(f"snapshot of {camera_id} is {len(jpeg)} bytes, over the limit")
            flight.result = Snapshot(jpeg, now_ms(), anyio.current_time())
            self._keep(camera_id, flight.result)
            return flight.result
        except Exception as error:
            flight.error = error
            raise
        finally:
            del self._inflight[camera_id]
            flight.done.set()

    def _keep(self, camera_id: str, snapshot: Snapshot) -> None:
        old = self._entries.pop(camera_id, None)
        if old is not None:
            self.bytes -= len(old.jpeg)
        self._entries[camera_id] = snapshot
        self.bytes += len(snapshot.jpeg)
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted.jpeg)
            self.evicted += 1

    def clear(self) -> None:
        """Forget every picture."""
        self._entries.clear()
        self.bytes = 0
