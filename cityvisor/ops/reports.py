"""Citizen reports (Open311 GeoReport v2): a broken lamp reported from a phone, followed to closed.

A report (service, location, description, optional photo, optional name,
e-mail and phone) lands as an incident in the zone of the **nearest located
device** (zones have no geometry in the deployment file; a report far from
any device goes to ``default_zone``). The citizen gets the request id and a
token; with the token, ``GET requests/{id}.json`` tells them whether the
request is ``open`` or ``closed`` (when its incident is resolved).

Personal data (name, e-mail, phone) is stored apart from what operators
see, shown only to ``personal_data_role`` and purged after
``retention_days``. Photos are decoded and re-encoded with Pillow, which
drops their EXIF block (GPS position, camera serial) entirely: the location
kept is the one the report declares.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import sqlite_utils

from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry, Store
from cityvisor.core.users import SYSTEM, Role, User

from .crews import great_circle_m
from .incidents import Incident, IncidentBook, State
from .settings import Open311Service, Open311Settings

__all__ = ["RateLimiter", "Report", "ReportDesk", "ReportError", "strip_photo"]

log = logging.getLogger(__name__)

PERSONAL = ("first_name", "last_name", "email", "phone")
"""The fields of a report that identify a person."""
MAX_PIXELS = 40_000_000
"""Largest photo accepted, in pixels (a decompression bomb is refused before decoding)."""


class ReportError(ValueError):
    """A report that cannot be accepted; ``field`` names the GeoReport parameter at fault."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass
class Report:
    """One citizen report as stored (personal fields are None once purged)."""

    id: str
    service_code: str
    description: str
    lat: float
    lon: float
    address: str
    zone: str
    status: str
    status_notes: str
    requested_ts: int
    updated_ts: int
    incident: int | None
    personal: dict[str, str | None]
    has_photo: bool

    def georeport(self, service: Open311Service | None) -> dict[str, Any]:
        """The request as GeoReport v2 ``GET requests/{id}.json`` shows it (no personal data)."""
        return {
            "service_request_id": self.id,
            "status": self.status,
            "status_notes": self.status_notes,
            "service_name": service.name if service else self.service_code,
            "service_code": self.service_code,
            "description": self.description,
            "requested_datetime": _iso(self.requested_ts),
            "updated_datetime": _iso(self.updated_ts),
            "address": self.address,
            "lat": self.lat,
            "long": self.lon,
        }

    def as_json(self, *, personal: bool) -> dict[str, Any]:
        """What an operator sees; the personal fields only if ``personal``."""
        body = {
            "id": self.id,
            "service_code": self.service_code,
            "description": self.description,
            "location": [self.lat, self.lon],
            "address": self.address,
            "zone": self.zone,
            "status": self.status,
            "status_notes": self.status_notes,
            "requested_ts": self.requested_ts,
            "updated_ts": self.updated_ts,
            "incident": self.incident,
            "photo": self.has_photo,
        }
        if personal:
            body["personal"] = dict(self.personal)
        return body


class RateLimiter:
    """At most ``rate`` events per ``window`` seconds per key; memory bounded to ``max_keys``."""

    def __init__(self, rate: int, window: float = 3600.0, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.window = window
        self.max_keys = max_keys
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> float:
        """0 if ``key`` may go now, else the seconds to wait."""
        now = anyio.current_time()
        times = self._seen.pop(key, None) or deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        wait = 0.0
        if len(times) >= self.rate:
            wait = self.window - (now - times[0])
        else:
            times.append(now)
        self._seen[key] = times
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return wait


def strip_photo(data: bytes, max_bytes: int) -> bytes:
    """The photo re-encoded as JPEG without any EXIF block (blocking: run it in a thread).

    :raises ReportError: on ``media`` that is too large or not a JPEG/PNG picture.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise ReportError("media", f"photo larger than {max_bytes} bytes", 413)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise ReportError("media", f"expected a JPEG or PNG photo, got {image.format}")
            if image.width * image.height > MAX_PIXELS:
                raise ReportError("media", f"photo larger than {MAX_PIXELS} pixels", 413)
            image.load()
            clean = image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ReportError("media", f"not a readable picture ({error})") from None
    out = io.BytesIO()
    clean.save(out, format="JPEG", quality=85)
    return out.getvalue()


class ReportDesk:
    """Citizen reports: accepted, turned into incidents, followed, purged.

    ``locate(lat, lon)`` gives the zone of a location (the nearest device's).
    """

    def __init__(
        self,
        store: Store,
        book: IncidentBook,
        settings: Open311Settings,
        located: Sequence[tuple[tuple[float, float], str]],
        default_zone: str,
    ) -> None:
        self.store = store
        self.book = book
        self.settings = settings
        self.services = {s.code: s for s in settings.services}
        self.located = list(located)
        self.default_zone = default_zone
        self.limiter = RateLimiter(settings.rate_per_hour)
        book.observers.append(self._incident_changed)

    async def open(self) -> None:
        """Create the table if needed."""
        await self.store.call(_tables)

    def locate(self, lat: float, lon: float) -> str:
        """The zone of the nearest located device, or the default zone."""
        best = min(
            self.located,
            key=lambda item: great_circle_m(item[0], (lat, lon)),
            default=None,
        )
        return best[1] if best is not None else self.default_zone

    def check(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The fields of a ``POST requests.json`` form, checked; ReportError names the first bad."""
        code = form.get("service_code", "")
        if not code:
            raise ReportError("service_code", "missing")
        if code not in self.services:
            raise ReportError("service_code", f"unknown service {code[:40]!r}", 404)
        found: dict[str, Any] = {"service_code": code}
        for name, low, high in (("lat", -90, 90), ("long", -180, 180)):
            raw = form.get(name, "")
            value: float
            if raw == "":
                raise ReportError(name, "missing (the report's location)")
            try:
                value = float(raw)
            except ValueError:
                raise ReportError(name, f"expected a number, got {raw[:40]!r}") from None
            if not low <= value <= high:
                raise ReportError(name, f"expected a number from {low} to {high}")
            found[name] = value
        description = form.get("description", "")
        if not description.strip():
            raise ReportError("description", "missing")
        if len(description) > self.settings.max_description:
            raise ReportError(
                "description", f"longer than {self.settings.max_description} characters"
            )
        for name in ("description", "address_string", *PERSONAL):
            given = form.get(name, "")
            if any(ord(c) < 32 and c not in "\n\t\r" for c in given) or len(given) > 10_000:
                raise ReportError(name, "control characters or too long")
            found[name] = given.strip()
        if found["email"] and "@" not in found["email"]:
            raise ReportError("email", "expected an e-mail address")
        return found

    async def submit(self, fields: Mapping[str, Any], photo: bytes | None) -> tuple[Report, str]:
        """Store a checked report, open its incident; return the report and the citizen's token."""
        clean = None
        if photo:
            limit = self.settings.max_photo_bytes
            clean = await anyio.to_thread.run_sync(strip_photo, photo, limit)
        service = self.services[fields["service_code"]]
        ts = now_ms()
        zone = self.locate(fields["lat"], fields["long"])
        report = Report(
            secrets.token_hex(8),
            service.code,
            fields["description"],
            fields["lat"],
            fields["long"],
            fields["address_string"],
            zone,
            "open",
            "",
            ts,
            ts,
            None,
            {name: fields[name] or None for name in PERSONAL},
            clean is not None,
        )
        token = secrets.token_urlsafe(18)
        await self.store.call(lambda db: _insert(db, report, _digest(token), clean))
        incident = await self.book.create(
            SYSTEM,
            title=f"{service.name}: {report.description[:80]}",
            zone=zone,
            priority=service.priority,
            location=(report.lat, report.lon),
            source="report",
            skill=service.skill,
            links=[("report", report.id)],
        )
        report.incident = incident.id
        await self.store.call(
            lambda db: db.execute(
                "UPDATE ops_reports SET incident = ? WHERE id = ?", [incident.id, report.id]
            )
        )
        return report, token

    async def get(self, report_id: str, token: str | None = None) -> Report | None:
        """A report; with ``token``, only if it is the citizen's token."""
        row = await self.store.call(lambda db: _select(db, report_id))
        if row is None:
            return None
        report, digest = row
        if token is not None and not hmac.compare_digest(digest, _digest(token)):
            return None
        return report

    async def photo(self, report_id: str) -> bytes | None:
        """The report's photo (EXIF-free JPEG), if any."""

        def read(db: sqlite_utils.Database) -> bytes | None:
            row = db.execute("SELECT photo FROM ops_reports WHERE id = ?", [report_id]).fetchone()
            return row[0] if row else None

        return await self.store.call(read)

    def may_read_personal(self, user: User) -> bool:
        """True if ``user`` may read a report's name, e-mail and phone."""
        return user.has_role(Role.parse(self.settings.personal_data_role))

    async def purge(self, now: int | None = None) -> int:
        """Forget the personal data of reports older than the retention; journaled."""
        cutoff = (now or now_ms()) - int(self.settings.retention_days * 86_400_000)

        def forget(db: sqlite_utils.Database) -> int:
            with db.conn:
                cursor = db.execute(
                    "UPDATE ops_reports SET first_name = NULL, last_name = NULL, email = NULL,"
                    " phone = NULL, purged = 1 WHERE purged = 0 AND requested_ts < ?",
                    [cutoff],
                )
            return cursor.rowcount

        count = await self.store.call(forget)
        if count:
            await self.store.journal(
                JournalEntry(
                    kind="report",
                    message=f"personal data of {count} citizen reports purged",
                    user=SYSTEM.name,
                    data={"purged": count, "older_than": cutoff},
                )
            )
        return count

    async def _incident_changed(self, incident: Incident, before: State | None, user: User) -> None:
        if before is None or incident.source != "report":
            return
        if incident.state in (State.RESOLVED, State.CLOSED):
            status, notes = "closed", f"{incident.state.value} by the city"
        else:
            status, notes = "open", incident.state.value.replace("_", " ")
        ids = [link["ref"] for link in incident.links if link["kind"] == "report"]
        ts = now_ms()

        def update(db: sqlite_utils.Database) -> None:
            with db.conn:
                db.conn.executemany(
                    "UPDATE ops_reports SET status = ?, status_notes = ?, updated_ts = ?"
                    " WHERE id = ?",
                    [(status, notes, ts, report_id) for report_id in ids],
                )

        await self.store.call(update)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


_COLUMNS = (
    "id, service_code, description, lat, lon, address, zone, status, status_notes,"
    " requested_ts, updated_ts, incident, first_name, last_name, email, phone,"
    " photo IS NOT NULL, token"
)


def _tables(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops_reports (id TEXT PRIMARY KEY, service_code TEXT,"
        " description TEXT, lat REAL, lon REAL, address TEXT, zone TEXT, status TEXT,"
        " status_notes TEXT, requested_ts INTEGER, updated_ts INTEGER, incident INTEGER,"
        " first_name TEXT, last_name TEXT, email TEXT, phone TEXT, photo BLOB, token TEXT,"
        " purged INTEGER DEFAULT 0)"
    )


def _insert(db: sqlite_utils.Database, report: Report, digest: str, photo: bytes | None) -> None:
    with db.conn:
        db.execute(
            "INSERT INTO ops_reports VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
            [
                report.id,
                report.service_code,
                report.description,
                report.lat,
                report.lon,
                report.address,
                report.zone,
                report.status,
                report.status_notes,
                report.requested_ts,
                report.updated_ts,
                report.incident,
                *(report.personal[name] for name in PERSONAL),
                photo,
                digest,
            ],
        )


def _select(db: sqlite_utils.Database, report_id: str) -> tuple[Report, str] | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM ops_reports WHERE id = ?", [report_id]).fetchone()
    if row is None:
        return None
    report = Report(
        *row[:12],  # type: ignore[misc]
        personal=dict(zip(PERSONAL, row[12:16], strict=True)),
        has_photo=bool(row[16]),
    )
    return report, row[17]
