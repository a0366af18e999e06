"""Evidence with alarms: the snapshot of the moment an alarm rises, stored with the alarm.

A device names the cameras that watch it (``watched_by`` in its config
entry). When an alarm of that device, or of a camera itself, is raised, the
``cityvisor_alarm_transition`` hook (synchronous, no I/O) hands
``(alarm id, camera ids, time)`` to :class:`Evidence` through a bounded
memory stream; a full stream drops the request and counts it
(:attr:`Evidence.dropped`), it never blocks the alarm manager. The service
(:meth:`Evidence.run`, started by ``cityvisor_startup``) takes each camera's
picture through the shared :class:`~.snapshots.SnapshotCache` (a frame at
most a second old is the picture of that moment, and a wall of browsers
watching the camera already paid for it), stores it, and journals it.

Images are stored as blobs in the store's SQLite file (table
``camera_evidence``), not as files beside it: one transaction keeps row and
image together (no orphan files, no dangling paths), a backup of the store
is a backup of the evidence, and nothing depends on where the store lives.
Alarm snapshots are few (tens of kilobytes per raised alarm); CCTV images
may be kept one month at most, so rows older than each camera's
``evidence_days`` are pruned every hour. A failed capture is stored too,
with its error and no image, so the operator sees why there is no picture.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import anyio
import sqlite_utils

from cityvisor.core.alarms import COMMUNICATION_ALARM
from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry

from .snapshots import SnapshotCache

__all__ = ["KEY", "TABLE", "CameraServices", "Evidence"]

log = logging.getLogger(__name__)

KEY = "cameras.services"
"""The key of the plugin's :class:`CameraServices` in ``hub.resources``."""
TABLE = "camera_evidence"
DAY_MS = 86_400_000
MAX_DAYS = 30.0


class CameraServices:
    """What the cameras plugin shares across one hub: the snapshot cache and the evidence.

    Hooks reach it with :meth:`of`; devices through ``self.resources``.
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.snapshots = SnapshotCache(self.fetch)
        self.evidence = Evidence(hub, self.snapshots)

    @classmethod
    def of(cls, hub: Any) -> CameraServices:
        """The hub's instance, created on first use."""
        services: CameraServices = hub.resources.get(KEY, lambda: cls(hub))
        return services

    def camera(self, camera_id: str) -> Any:
        """The camera device with this id; KeyError if there is none."""
        device = self.hub.devices.get(camera_id)
        if device is None or device.family != "cameras" or not hasattr(device, "snapshot"):
            raise KeyError(camera_id)
        return device

    async def fetch(self, camera_id: str) -> bytes:
        """A fresh JPEG from the camera (what the cache calls)."""
        snapshot: bytes = await self.camera(camera_id).snapshot()
        return snapshot

    def close(self) -> None:
        """Forget the cached images and close the evidence stream (the hub stops)."""
        self.snapshots.clear()
        self.evidence.close()


class _Request(NamedTuple):
    alarm_id: str
    cameras: tuple[str, ...]
    ts: int


class Evidence:
    """Captures, stores, lists and prunes the snapshots that go with alarms."""

    def __init__(
        self,
        hub: Any,
        snapshots: SnapshotCache,
        *,
        buffer: int = 64,
        concurrency: int = 4,
        min_interval: float = 10.0,
    ) -> None:
        self.hub = hub
        self.snapshots = snapshots
        self.min_interval = min_interval
        self._send, self._receive = anyio.create_memory_object_stream[_Request](buffer)
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._last: dict[
            str, float
        ] = {}  # alarm id -> last request: a chattering alarm, one picture
        self._ready = False
        self.requested = 0
        self.dropped = 0
        """Requests refused because the stream was full (the service is behind or not running)."""
        self.stored = 0
        self.failed = 0

    def close(self) -> None:
        """Close the request stream: later requests are dropped."""
        self._send.close()
        self._receive.close()

    # -- the hook side (synchronous, no I/O) -----------------------------------

    def on_transition(self, alarm: Any, transition: Any) -> None:
        """Ask for evidence if ``transition`` raised an annunciated alarm of a watched device."""
        if transition.kind != "raised" or not transition.annunciated:
            return
        device = self.hub.devices.get(alarm.device_id)
        if device is None:
            return
        cameras = [c for c in device.info.watched_by if c in self.hub.devices]
        if device.family == "cameras" and alarm.name != COMMUNICATION_ALARM:
            cameras.append(device.id)  # an offline camera has no picture to give
        if cameras:
            self.request(alarm.id, cameras, transition.ts)

    def request(self, alarm_id: str, cameras: Sequence[str], ts: int) -> bool:
        """Queue a capture without waiting; False if dropped (stream full, or asked just now)."""
        now = anyio.current_time()
        if now - self._last.get(alarm_id, -self.min_interval) < self.min_interval:
            return False
        self._last[alarm_id] = now
        self.requested += 1
        try:
            self._send.send_nowait(_Request(alarm_id, tuple(dict.fromkeys(cameras)), ts))
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self.dropped += 1
            log.warning("evidence for alarm %s dropped: %d requests queued", alarm_id, self.dropped)
            return False
        return True

    # -- the service -------------------------------------------------------------

    async def run(self) -> None:
        """Capture what is asked, at most ``concurrency`` cameras at a time; prune hourly."""
        await self._ensure_table()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._prune_hourly)
            async for item in self._receive:
                for camera_id in item.cameras:
                    # Acquired here, so a slow camera slows the intake instead of piling up
                    # tasks; on behalf of a token the capture task releases.
                    token = object()
                    await self._limiter.acquire_on_behalf_of(token)
                    tg.start_soon(self._capture_released, token, camera_id, item.alarm_id, item.ts)

    async def _capture_released(
        self, token: object, camera_id: str, alarm_id: str, ts: int
    ) -> None:
        try:
            await self.capture(camera_id, alarm_id=alarm_id, ts=ts)
        finally:
            self._limiter.release_on_behalf_of(token)

    async def capture(
        self,
        camera_id: str,
        *,
        alarm_id: str | None = None,
        ts: int | None = None,
        reason: str = "alarm",
    ) -> int:
        """Take the camera's picture and store it (or why there is none); return the row id."""
        ts = ts if ts is not None else now_ms()
        image: bytes | None = None
        error = ""
        try:
            snapshot = await self.snapshots.get(camera_id)
            image = snapshot.jpeg
        except Exception as exc:  # an offline camera is a fact to record, not a crash
            error = str(exc) or type(exc).__name__
        row = {
            "alarm": alarm_id,
            "camera": camera_id,
            "ts": ts,
            "taken_at": now_ms(),
            "reason": reason,
            "size": len(image) if image is not None else 0,
            "error": error,
            "image": image,
        }
        await self._ensure_table()
        evidence_id: int = await self.hub.store.call(lambda db: db[TABLE].insert(row).last_pk)
        if image is None:
            self.failed += 1
            log.info("no evidence from camera %s for alarm %s: %s", camera_id, alarm_id, error)
        else:
            self.stored += 1
        await self.hub.store.journal(
            JournalEntry(
                kind="evidence",
                message=f"snapshot of {camera_id}"
                if image is not None
                else f"no snapshot of {camera_id}: {error}",
                device=camera_id,
                alarm=alarm_id,
                data={"evidence": evidence_id, "size": row["size"], "reason": reason},
            )
        )
        return evidence_id

    # -- reading -----------------------------------------------------------------

    async def list(
        self, *, alarm_id: str | None = None, camera_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Evidence rows (without images), newest first, for an alarm and/or a camera."""
        clauses, args = [], []
        for column, value in (("alarm", alarm_id), ("camera", camera_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT id, alarm, camera, ts, taken_at, reason, size, error FROM {TABLE} {where}"
            " ORDER BY id DESC LIMIT ?"
        )
        await self._ensure_table()
        rows = await self.hub.store.call(lambda db: list(db.execute(sql, [*args, max(1, limit)])))
        keys = ("id", "alarm", "camera", "ts", "taken_at", "reason", "size", "error")
        return [
            {**dict(zip(keys, row, strict=True)), "url": f"/api/v1/cameras/evidence/{row[0]}"}
            for row in rows
        ]

    async def image(self, evidence_id: int) -> tuple[bytes | None, dict[str, Any]] | None:
        """One evidence row's image and details; None if there is no such row."""
        await self._ensure_table()

        def read(db: sqlite_utils.Database) -> Any:
            return db.execute(
                f"SELECT image, alarm, camera, ts FROM {TABLE} WHERE id = ?", [evidence_id]
            ).fetchone()

        row = await self.hub.store.call(read)
        if row is None:
            return None
        return row[0], {"alarm": row[1], "camera": row[2], "ts": row[3]}

    # -- housekeeping --------------------------------------------------------------

    async def prune(self, now: int | None = None) -> int:
        """Delete evidence older than its camera's ``evidence_days`` (30 for unknown cameras)."""
        now = now if now is not None else now_ms()
        days = {
            d.id: float(getattr(d.config, "evidence_days", MAX_DAYS))
            for d in self.hub.devices.values()
            if d.family == "cameras"
        }

        def delete(db: sqlite_utils.Database) -> int:
            deleted = 0
            for camera_id, keep in days.items():
                cursor = db.execute(
                    f"DELETE FROM {TABLE} WHERE camera = ? AND ts < ?",
                    [camera_id, now - int(keep * DAY_MS)],
                )
                deleted += cursor.rowcount
            marks = ", ".join("?" * len(days))
            cursor = db.execute(
                f"DELETE FROM {TABLE} WHERE camera NOT IN ({marks}) AND ts < ?",
                [*days, now - int(MAX_DAYS * DAY_MS)],
            )
            return deleted + cursor.rowcount

        await self._ensure_table()
        return int(await self.hub.store.call(delete))

    async def _prune_hourly(self) -> None:
        while True:
            deleted = await self.prune()
            if deleted:
                log.info("evidence retention: %d snapshots deleted", deleted)
            await anyio.sleep(3600)

    async def _ensure_table(self) -> None:
        if self._ready:
            return

        def create(db: sqlite_utils.Database) -> None:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, alarm TEXT,"
                " camera TEXT NOT NULL, ts INTEGER NOT NULL, taken_at INTEGER NOT NULL,"
                " reason TEXT NOT NULL, size INTEGER NOT NULL, error TEXT NOT NULL, image BLOB)"
            )
            db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_alarm ON {TABLE} (alarm)")
            db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_camera_ts ON {TABLE} (camera, ts)")

        await self.hub.store.call(create)
        self._ready = True
