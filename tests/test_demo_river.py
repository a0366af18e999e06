"""The demo's junctions and river through a real hub: phases change, water rises and falls."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from cityvisor.demo import tomlfile
from cityvisor.demo.river import PROCEDURES, River
from cityvisor.plugins import hydro, signals
from cityvisor.plugins.signals import PHASE_STATES
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(180)]

WAIT = 45.0
GREEN = PHASE_STATES.index("green")


async def test_the_demo_junction_cycles_and_its_gauges_cross_their_thresholds(tmp_path: Path):
    async with AsyncExitStack() as stack:
        river = River(seed=3, time_scale=10)
        await river.start(stack, small=True)
        data = {
            "site": {"name": "Ville de démonstration"},
            "store": {"path": "demo.sqlite", "flush_interval": 0.1},
            "zones": [{"id": "dijon", "name": "Dijon"}],
            "devices": river.devices(),
            "procedures": PROCEDURES,
        }
        config = tomlfile.dumps(data)
        async with running_hub(config, tmp_path, plugins=[signals, hydro]) as hub:
            # Both streets get their green in turn: the junction lives.
            for phase in ("p2", "p4"):
                point = f"dijon/signals/carrefour-darcy/{phase}/state"
                await wait_for_point(hub, point, lambda v: v.value == GREEN, timeout=WAIT)
            gauge = "dijon/hydro/ouche-pont-des-chartreux/"
            await wait_for_point(hub, gauge + "level", lambda v: v.value == 0.6, timeout=WAIT)
            assert river.gauges is not None
            # Twenty seconds at time_scale 10: long enough to be polled above the
            # alert threshold on a loaded machine, short enough for the test.
            river.gauges.rain("g1", peak=1.6, duration=200)
            await wait_for_alarm(
                hub, "ouche-pont-des-chartreux:flood_alert", lambda a: a.active, timeout=WAIT
            )
            await wait_for_alarm(
                hub, "ouche-pont-des-chartreux:vigilance", lambda a: not a.active, timeout=WAIT
            )
