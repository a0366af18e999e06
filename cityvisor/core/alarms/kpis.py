"""Flood detection and ISA-18.2 KPIs: raise rates per zone, floods, bad actors, chattering, stale alarms."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..points import now_ms
from .journal import _wall_ms
from .model import Alarm, Transition
from .parts import _AlarmManagerParts, _Flood

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def _burst(stamps: list[int], window_ms: int) -> int:
    """The most timestamps (sorted) that fit in any window of ``window_ms``."""
    best = 0
    start = 0
    for end, ts in enumerate(stamps):
        while ts - stamps[start] > window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


class _FloodAndKpis(_AlarmManagerParts):
    """The manager's flood detection and KPIs."""

    def _count_raise(self, alarm: Alarm, ts: int) -> None:
        self._raise_log.append((ts, alarm.id))
        flood = self._flood.get(alarm.zone)
        if flood is None:
            flood = self._flood[alarm.zone] = _Flood()
        flood.raises.append(ts)
        self._update_flood(alarm.zone, flood, ts)

    def _update_flood(self, zone: str, flood: _Flood, now: int) -> None:
        cutoff = now - int(self.flood_window * 1000)
        raises = flood.raises
        while raises and raises[0] <= cutoff:
            raises.popleft()
        count = len(raises)
        if not flood.active and count > self.flood_start:
            flood.active = True
            flood.since = now
            flood.floods += 1
            kind = "flood_started"
        elif flood.active and count < self.flood_end:
            flood.active = False
            flood.total_ms += now - (flood.since or now)
            flood.since = None
            kind = "flood_ended"
        else:
            return
        log.warning("alarm flood in zone %s: %s (%d raised)", zone, kind, count)
        self._record(
            Transition(
                kind,
                "",
                now,
                value=count,
                data={"zone": zone, "raised": count, "window_s": self.flood_window},
            ),
            None,
        )

    def _check_floods(self) -> None:
        now = now_ms()
        for zone, flood in self._flood.items():
            if flood.active:
                self._update_flood(zone, flood, now)

    # ------------------------------------------------------------------ KPIs

    def kpis(
        self,
        now_ms: int | None = None,
        period: float | None = None,
        zones: Callable[[str], bool] | None = None,
    ) -> dict[str, Any]:
        """ISA-18.2 alarm-system performance figures, JSON-ready.

        ``zones``: figures about the zones it accepts only (a reader's zones).

        - ``zones``: per zone, alarms raised in the current ``flood_window``,
          the same as a rate per 10 minutes, the flood state and time spent
          in flood;
        - ``bad_actors``: the 10 alarms raised most often over ``period``
          seconds (default ``kpi_horizon``);
        - ``chattering``: alarms raised ``chatter_count`` times or more
          within ``chatter_window`` seconds during the period;
        - ``stale``: annunciated alarms active for longer than ``stale_after`` seconds.
        """
        now = now_ms if now_ms is not None else _wall_ms()
        period = self.kpi_horizon if period is None else period
        since = now - int(period * 1000)
        window_ms = int(self.flood_window * 1000)
        seen = zones or (lambda zone: True)
        alarms = [a for a in self._alarms.values() if seen(a.zone)]
        floods = {z: f for z, f in self._flood.items() if seen(z)}
        per_zone: dict[str, dict[str, Any]] = {}
        for zone, flood in sorted(floods.items()):
            recent = sum(1 for ts in flood.raises if ts > now - window_ms)
            in_flood_ms = flood.total_ms + (now - flood.since if flood.since is not None else 0)
            per_zone[zone] = {
                "raised": recent,
                "per_10_min": recent * 600.0 / self.flood_window,
                "flood": flood.active,
                "flood_since": flood.since,
                "floods": flood.floods,
                "time_in_flood_s": in_flood_ms / 1000,
            }
        horizon = now - int(self.kpi_horizon * 1000)
        while self._raise_log and self._raise_log[0][0] < horizon:
            self._raise_log.popleft()
        by_alarm: dict[str, list[int]] = {}
        known = {a.id for a in alarms} if zones is not None else None
        for ts, alarm_id in self._raise_log:
            if since <= ts <= now and (known is None or alarm_id in known):
                by_alarm.setdefault(alarm_id, []).append(ts)
        bad_actors = sorted(by_alarm.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:10]
        chatter_ms = int(self.chatter_window * 1000)
        chattering = sorted(
            alarm_id
            for alarm_id, stamps in by_alarm.items()
            if _burst(stamps, chatter_ms) >= self.chatter_count
        )
        stale_ms = int(self.stale_after * 1000)
        stale = sorted(
            a.id
            for a in alarms
            if a.annunciated
            and a.active
            and a.raised_at is not None
            and now - a.raised_at > stale_ms
        )
        return {
            "ts": now,
            "flood_window_s": self.flood_window,
            "period_s": period,
            "zones": per_zone,
            "in_flood": sorted(z for z, f in floods.items() if f.active),
            "bad_actors": [{"alarm": a, "raised": len(s)} for a, s in bad_actors],
            "chattering": chattering,
            "stale": stale,
            "annunciated": sum(1 for a in alarms if a.annunciated),
            "unacked": sum(1 for a in alarms if not a.acked),
            "shelved": sum(1 for a in alarms if a.shelved),
            "suppressed": sum(1 for a in alarms if a.suppressed),
            "out_of_service": sum(1 for a in alarms if a.out_of_service),
            "maintenance": sum(1 for a in alarms if a.maintenance),
            "by_priority": self.counts_by_priority(zones),
        }
