"""Aggregates per street: devices grouped by a tag prefix, small groups left out.

The hub is built and never run (as ``cityvisor export`` does); its history
is written to and read from a real SQLite store on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.points import PointValue, Quality, now_ms
from cityvisor.opendata.values import StoreValues
from cityvisor.plugins.opendata import publication

pytestmark = pytest.mark.anyio

HOUR = 3_600_000

BOLLARD = """
[[devices]]
id = "borne-{n}"
type = "bollards.bollard"
zone = "centre"
tags = ["pieton", "street:{street}"]
config = {{ host = "127.0.0.1", port = 1502, unit = {n} }}
"""

CONFIG = """
[site]
name = "Streetville"

[store]
path = "streets.sqlite"

[[zones]]
id = "centre"
name = "Centre"
{bollards}
[opendata]
enabled = true

[opendata.families.bollards.aggregate.vehicle_on_loop]
by = "tag:street:"
statistic = "count"
"""


async def test_vehicles_are_counted_per_street_per_hour_for_streets_of_three_bollards(
    tmp_path: Path,
):
    streets = ["rue-monge", "rue-monge", "rue-monge", "rue-vauban"]
    bollards = "".join(BOLLARD.format(n=n, street=s) for n, s in enumerate(streets, 1))
    path = tmp_path / "city.toml"
    path.write_text(CONFIG.format(bollards=bollards), encoding="utf-8")
    hub = Hub(load_config(path), make_plugin_manager(entry_points=False))
    published = publication(hub)
    dataset = published.datasets["bollards"]
    start = now_ms() - now_ms() % HOUR - 2 * HOUR
    await hub.store.open()
    try:
        for n, minute in ((1, 5), (2, 10), (3, 15), (3, 20), (4, 5)):
            point = hub.points.get(f"centre/bollards/borne-{n}/vehicle_on_loop")
            for offset, value in ((0, True), (1, False)):
                ts = start + (minute + offset) * 60_000
                hub.store.record(PointValue(point.id, value, Quality.GOOD, ts, ts), point.spec)
        await hub.store.flush_history()
        rows = await published.aggregate(dataset, StoreValues(hub.store), start, now_ms())
    finally:
        await hub.store.close()
    assert {row["group"] for row in rows} == {"rue-monge"}, "rue Vauban has one bollard"
    assert [(row["value"], row["devices"]) for row in rows] == [(4.0, 3), (0.0, 3)]
    assert rows[0]["end"] == rows[1]["start"]
