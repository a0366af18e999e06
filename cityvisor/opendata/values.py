"""Where published values come from: the live point database, or the store alone.

:class:`LiveValues` serves the running hub (its current values and its
history); :class:`StoreValues` serves ``cityvisor export``, which has a store
and no running equipment: a point's latest value is its last history row.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cityvisor.core.points import Point, PointValue, now_ms
from cityvisor.core.store import Store, TrendBucket

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub

__all__ = ["LiveValues", "StoreValues", "Values"]


class Values(abc.ABC):
    """Where the published values come from."""

    @abc.abstractmethod
    async def current(self, points: Sequence[Point]) -> dict[str, PointValue]:
        """The latest value of each point that has one, by point id."""

    @abc.abstractmethod
    async def history(self, point_id: str, start: int, end: int) -> list[PointValue]:
        """The recorded values of one point in ``[start, end)``, oldest first."""

    @abc.abstractmethod
    async def trend(self, point_id: str, start: int, end: int, bucket_ms: int) -> list[TrendBucket]:
        """Count, minimum, maximum, mean and last good value per bucket from ``start``."""


class LiveValues(Values):
    """The running hub's point database (current values) and store (history)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def current(self, points: Sequence[Point]) -> dict[str, PointValue]:
        """The point database's current values (what the HMI shows)."""
        return {point.id: point.current for point in points if point.state[3]}  # a source_ts

    async def history(self, point_id: str, start: int, end: int) -> list[PointValue]:
        """The store's history of the point."""
        rows = await self.hub.store.history(point_id, start, end, limit=100_000)
        return [row for row in rows if isinstance(row, PointValue)]

    async def trend(self, point_id: str, start: int, end: int, bucket_ms: int) -> list[TrendBucket]:
        """The store's aggregates (computed by the store, not here)."""
        rows = await self.hub.store.history(point_id, start, end, bucket_ms=bucket_ms)
        return [row for row in rows if isinstance(row, TrendBucket)]


class StoreValues(Values):
    """A store only (``cityvisor export``): the latest value is the last one recorded."""

    def __init__(self, store: Store, *, lookback_days: float = 31.0) -> None:
        self.store = store
        self.lookback_ms = int(lookback_days * 86_400_000)

    async def current(self, points: Sequence[Point]) -> dict[str, PointValue]:
        """The last recorded value of each point, looking back at most ``lookback_days``."""
        now = now_ms()
        found: dict[str, PointValue] = {}
        for point in points:
            # Recent windows first: a point that changes every second has a long history.
            for window in (3_600_000, 86_400_000, self.lookback_ms):
                rows = await self.store.history(point.id, now - window, now + 1, limit=1_000_000)
                values = [row for row in rows if isinstance(row, PointValue)]
                if values:
                    found[point.id] = values[-1]
                    break
        return found

    async def history(self, point_id: str, start: int, end: int) -> list[PointValue]:
        """The store's history of the point."""
        rows = await self.store.history(point_id, start, end, limit=100_000)
        return [row for row in rows if isinstance(row, PointValue)]

    async def trend(self, point_id: str, start: int, end: int, bucket_ms: int) -> list[TrendBucket]:
        """The store's aggregates (computed by the store, not here)."""
        rows = await self.store.history(point_id, start, end, bucket_ms=bucket_ms)
        return [row for row in rows if isinstance(row, TrendBucket)]
