"""What a user may read: the one place that decides, for every route and feed.

``[security] zone_reading`` chooses the site's policy. With ``"all"`` (the
default) everyone reads the whole city and zones limit only what a user may
*do*. With ``"own"`` a user limited to some zones reads only those zones'
devices, points, alarms, journal entries, history, map and exports; admins
and users of every zone (``*``) still read everything.

Handlers get a :class:`Visibility` with :func:`visibility` and ask it:
``sees_zone``, ``sees_device``, ``sees_point``, ``sees_alarm``, and for the
journal a :class:`~cityvisor.core.store.JournalScope`. What a user may not
read answers as if it did not exist (404), so that its existence is not
given away either. Plugins' routes do the same (``visibility(request)``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core.store import JournalScope
from ..core.users import Role, User
from .routing import ApiError
from .state import HUB

if TYPE_CHECKING:
    from ..core.hub import Hub
    from ..core.points import Point

__all__ = ["Visibility", "visibility"]

_KEY = "cityvisor_visibility"


class Visibility:
    """What one user may read under the site's ``[security] zone_reading`` policy."""

    def __init__(self, hub: Hub, user: User) -> None:
        self.hub = hub
        self.user = user
        policy = hub.config.security.zone_reading
        self.everything = policy == "all" or user.has_role(Role.ADMIN) or "*" in user.zones
        """True when nothing is hidden from this user."""
        self.zones = user.zones

    def sees_zone(self, zone: str | None) -> bool:
        """True if the user may read what belongs to ``zone``."""
        return self.everything or (zone is not None and zone in self.zones)

    def sees_device(self, device_id: str | None) -> bool:
        """True if the user may read the device (an unknown device: only when nothing is hidden)."""
        if self.everything:
            return True
        device = self.hub.devices.get(device_id or "")
        return device is not None and device.zone in self.zones

    def sees_point(self, point: Point) -> bool:
        """True if the user may read the point."""
        return self.everything or point.zone in self.zones

    def sees_alarm(self, alarm: Any) -> bool:
        """True if the user may read the alarm (an :class:`~cityvisor.core.alarms.Alarm`
        or its JSON form)."""
        if self.everything:
            return True
        zone = alarm.get("zone") if isinstance(alarm, dict) else alarm.zone
        return zone in self.zones

    @property
    def zone_filter(self) -> Any:
        """``sees_zone`` to hand to the core's filters, or None when nothing is hidden."""
        return None if self.everything else self.sees_zone

    @property
    def point_filter(self) -> Any:
        """``sees_point`` to hand to a subscription, or None when nothing is hidden."""
        return None if self.everything else self.sees_point

    @property
    def point_filter_key(self) -> Any:
        """What ``point_filter`` depends on (the user's zones), so screens with the same zones share one watch."""
        return None if self.everything else frozenset(self.zones)

    def journal_scope(self) -> JournalScope | None:
        """The part of the journal the user may read, or None for all of it."""
        if self.everything:
            return None
        devices = frozenset(d.id for d in self.hub.devices.values() if d.zone in self.zones)
        return JournalScope(devices=devices, zones=frozenset(self.zones), user=self.user.name)

    def device_or_404(self, device_id: str) -> Any:
        """The device, or the 404 of an unknown device if the user may not read it."""
        device = self.hub.devices.get(device_id)
        if device is None or not self.sees_zone(device.zone):
            raise ApiError(404, "unknown_device", f"unknown device {device_id!r}")
        return device


def visibility(request: web.Request) -> Visibility:
    """The :class:`Visibility` of the request's user (made once per request)."""
    found = request.get(_KEY)
    if found is None:
        found = Visibility(request.app[HUB], request["user"])  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request[_KEY] = found
    return found  # type: ignore[no-any-return]
