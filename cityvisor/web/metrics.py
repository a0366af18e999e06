"""``/metrics``: the hub's health in the Prometheus text exposition format (version 0.0.4).

Counters end in ``_total``; every family has its ``# HELP`` and ``# TYPE``
lines; label values are escaped as the format requires. Rendering reads
counters the hub keeps anyway, so a scrape costs one pass over points and
alarms and no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..core.alarms import AlarmState, Priority
from ..core.commands import CommandOutcome
from ..core.points import QualityStatus
from ..core.points.values import quality_of

if TYPE_CHECKING:
    from .state import WebState

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            rendered = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{rendered}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    return repr(float(value))


def render(state: WebState) -> str:
    """The exposition text of the hub served by ``state``."""
    hub = state.hub
    out = _Exposition()

    qualities: Counter[str] = Counter()
    # Counted by the states' quality codes (a few distinct ones), not by reading
    # every point's value: the city may hold hundreds of thousands.
    codes = Counter(point.state[2] for point in hub.points.points())
    for code, count in codes.items():
        qualities[quality_of(code).status.name.lower()] += count
    out.family("cityvisor_points", "gauge", "Points in the point database, by quality class.")
    for status in QualityStatus:
        out.sample("cityvisor_points", qualities[status.name.lower()], quality=status.name.lower())
    out.family("cityvisor_point_changes_total", "counter", "Point changes accepted since start.")
    out.sample("cityvisor_point_changes_total", hub.points.changes)
    out.family(
        "cityvisor_point_update_rate", "gauge", "Point changes per second over the last minute."
    )
    out.sample("cityvisor_point_update_rate", round(state.rate.per_second, 3))

    alarms = hub.alarms.alarms()
    states: Counter[str] = Counter(a.state.value for a in alarms)
    out.family("cityvisor_alarms", "gauge", "Alarms by ISA-18.2 state.")
    for alarm_state in AlarmState:
        out.sample("cityvisor_alarms", states[alarm_state.value], state=alarm_state.value)
    out.family("cityvisor_alarms_hidden", "gauge", "Alarms hidden from annunciation, by reason.")
    for reason in ("shelved", "suppressed", "out_of_service", "maintenance"):
        out.sample(
            "cityvisor_alarms_hidden", sum(1 for a in alarms if getattr(a, reason)), reason=reason
        )
    out.family(
        "cityvisor_alarms_annunciated",
        "gauge",
        "Annunciated alarms by priority and acknowledgement.",
    )
    counts = hub.alarms.counts_by_priority()
    for priority in Priority:
        entry = counts[str(priority)]
        unacked = entry["unacked"]
        out.sample("cityvisor_alarms_annunciated", unacked, priority=str(priority), acked="false")
        out.sample(
            "cityvisor_alarms_annunciated",
            entry["annunciated"] - unacked,
            priority=str(priority),
            acked="true",
        )
    out.family(
        "cityvisor_alarm_journal_write_errors_total", "counter", "Failed alarm journal writes."
    )
    out.sample("cityvisor_alarm_journal_write_errors_total", hub.alarms.write_errors)
    out.family(
        "cityvisor_journal_entries_replaced_total",
        "counter",
        "Journal entries written as a placeholder (text made safe) because they could not be "
        "written as sent.",
    )
    out.sample(
        "cityvisor_journal_entries_replaced_total", getattr(hub.store, "journal_replaced", 0)
    )

    out.family("cityvisor_commands_total", "counter", "Journaled command attempts by outcome.")
    for outcome in CommandOutcome:
        out.sample(
            "cityvisor_commands_total", hub.commands.outcomes[outcome.value], outcome=outcome.value
        )
    out.family("cityvisor_group_commands_total", "counter", "Group orders by outcome.")
    for outcome in CommandOutcome:
        out.sample(
            "cityvisor_group_commands_total",
            hub.commands.group_outcomes[outcome.value],
            outcome=outcome.value,
        )

    drivers = hub.supervisor.drivers
    out.family("cityvisor_devices", "gauge", "Devices by communication state.")
    online = sum(1 for d in drivers.values() if d.online)
    out.sample("cityvisor_devices", online, state="online")
    out.sample("cityvisor_devices", len(drivers) - online, state="offline")
    out.family("cityvisor_driver_restarts_total", "counter", "Driver restarts since start.")
    out.sample("cityvisor_driver_restarts_total", hub.supervisor.restarts)
    out.family("cityvisor_device_driver_restarts_total", "counter", "Driver restarts per device.")
    for device_id, driver in sorted(drivers.items()):
        out.sample("cityvisor_device_driver_restarts_total", driver.restarts, device=device_id)
    out.family(
        "cityvisor_service_failures_total", "counter", "Plugin service failures (each restarted)."
    )
    for plugin_name in sorted(hub.services):
        out.sample(
            "cityvisor_service_failures_total",
            hub.service_failures[plugin_name],
            plugin=plugin_name,
        )

    pending = getattr(hub.store, "history_pending", None)
    if pending is not None:
        out.family("cityvisor_history_pending", "gauge", "Point changes waiting to be written.")
        out.sample("cityvisor_history_pending", pending)
        out.family(
            "cityvisor_history_dropped_total",
            "counter",
            "History changes dropped because the buffer was full.",
        )
        out.sample("cityvisor_history_dropped_total", getattr(hub.store, "history_dropped", 0))

    counters = state.counters
    out.family("cityvisor_websocket_clients", "gauge", "Connected WebSocket clients.")
    out.sample("cityvisor_websocket_clients", len(state.clients))
    out.family(
        "cityvisor_websocket_resyncs_total",
        "counter",
        "Point re-syncs sent to WebSocket clients that fell behind.",
    )
    out.sample("cityvisor_websocket_resyncs_total", counters["ws_resyncs"])
    out.family(
        "cityvisor_websocket_batches_total",
        "counter",
        "Batches of point changes sent to WebSocket clients: by their watch's shared sender,"
        " or by the client's own task (a client that was behind).",
    )
    shared = counters["ws_shared_batches"]
    out.sample("cityvisor_websocket_batches_total", shared, path="shared")
    out.sample("cityvisor_websocket_batches_total", counters["ws_batches"] - shared, path="own")
    out.family(
        "cityvisor_websocket_dropped_total",
        "counter",
        "WebSocket clients dropped for not reading: send queue full too long, or no pong.",
    )
    for reason in ("send_queue_full", "no_pong"):
        out.sample(
            "cityvisor_websocket_dropped_total", counters[f"ws_dropped:{reason}"], reason=reason
        )
    out.family("cityvisor_http_connections", "gauge", "Open HTTP connections (WebSockets too).")
    out.sample("cityvisor_http_connections", state.guard.connections if state.guard else 0)
    out.family(
        "cityvisor_http_connections_refused_total",
        "counter",
        "Connections refused (429) because their address had too many open.",
    )
    out.sample("cityvisor_http_connections_refused_total", counters["http_connections_refused"])
    out.family(
        "cityvisor_http_read_timeouts_total",
        "counter",
        "Connections closed for not sending a whole request (head and body) in time.",
    )
    out.sample("cityvisor_http_read_timeouts_total", counters["http_read_timeouts"])
    out.family("cityvisor_sessions", "gauge", "Sessions cached by the server (recently used).")
    out.sample("cityvisor_sessions", len(state.sessions))
    out.family("cityvisor_logins_total", "counter", "Login attempts by result.")
    out.sample("cityvisor_logins_total", counters["login"], result="success")
    out.sample("cityvisor_logins_total", counters["login_failed"], result="failure")
    out.sample("cityvisor_logins_total", counters["login_rate_limited"], result="rate_limited")
    out.family(
        "cityvisor_http_internal_errors_total",
        "counter",
        "Requests answered 500 (bugs: see the log).",
    )
    out.sample("cityvisor_http_internal_errors_total", counters["http_500"])
    return out.text()
