"""Map frame time: the HMI's map with tens of thousands of devices, in Chromium.

A hub (one demo tank, the web plugin on a loopback port) serves the HMI to
Debian's Chromium (headless, through Playwright, 1920 x 1080, as the browser
tests run it). ``/api/v1/devices`` answers with ``--devices`` device
summaries shaped as the hub's (spread over three communes, 1 % offline;
Playwright serves that one answer in the hub's place): the HMI loads them
and the map draws them as it would a real deployment's. Measured, in one
run:

- **clustering**: the time to group every device into clusters for a zoom
  (done once per zoom or data change), at the city's zoom and two deeper;
- **drawing**: the time of one frame's redraw (clusters and single devices in
  view, names that fit), while the map pans by 8 px a frame for ``--frames``
  frames at each zoom;
- **frame time**: the interval between animation frames during that pan,
  p50 and p95, and its ratio to the **raw baseline**: the same pan with no
  devices at all (Leaflet and the browser alone), before and after the loaded
  pans (interleaved).

Run ``python -m bench.map_frames`` from the repository root (about 40 s), or
``--quick`` for a smoke run with 5,000 devices. Results are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

PASSWORD = "benchmark password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

CONFIG = """
[site]
name = "Carte chargée"
timezone = "Europe/Paris"
language = "fr"
latitude = 47.3220
longitude = 5.0415

[store]
path = "bench.sqlite"

[web]
host = "127.0.0.1"
port = 0

[[zones]]
id = "dijon"
name = "Dijon"

[[zones]]
id = "chenove"
name = "Chenôve"

[[zones]]
id = "talant"
name = "Talant"

[[devices]]
id = "tank-1"
type = "demo.tank"
zone = "dijon"
name = "Réservoir 1"
location = [47.3220, 5.0415]
config = { period = 3600 }
"""


def devices(count: int) -> list[dict[str, Any]]:
    """``count`` device summaries as /api/v1/devices gives them (seeded spread, 1 % offline)."""
    zones = [("dijon", 47.322, 5.0415), ("chenove", 47.293, 5.007), ("talant", 47.337, 5.006)]
    rng = random.Random(42)
    families = ["lighting", "cameras", "switches", "bollards"]
    listed = []
    for i in range(count):
        zone, latitude, longitude = zones[i % 3]
        location = [latitude + (rng.random() - 0.5) * 0.04, longitude + (rng.random() - 0.5) * 0.06]
        listed.append(
            {
                "id": f"d{i}",
                "type": "demo.tank",
                "family": families[i % 4],
                "zone": zone,
                "name": f"Équipement {i}",
                "label": {"fr": "Équipement", "en": "Device"},
                "tags": [],
                "location": location,
                "watched_by": [],
                "communication": {
                    "online": i % 100 != 1,
                    "restarts": 0,
                    "failures": 0,
                    "last_reason": "",
                    "last_error": "",
                    "answered_ms": None,
                },
                "alarms": {"annunciated": 0, "unacked": 0},
            }
        )
    return listed


MEASURE = """
async ([frames, zoomSteps]) => {
  const box = document.querySelector("#map");
  const view = box.view;
  const map = view.map;
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  map.setView([47.315, 5.02], 13, { animate: false }); // the three communes in view
  await frame();
  const start = map.getZoom();
  const result = [];
  for (let step = 0; step < zoomSteps; step++) {
    map.setView([47.322, 5.0415], start + 2 * step, { animate: false }); // over Dijon
    await frame();
    view.redraw();
    const cluster = view.timing.cluster_ms;
    const intervals = [];
    const draws = [];
    let last = performance.now();
    for (let i = 0; i < frames; i++) {
      map.panBy([i % 120 < 60 ? 8 : -8, 0], { animate: false });
      await frame();
      const now = performance.now();
      intervals.push(now - last);
      draws.push(view.timing.draw_ms);
      last = now;
    }
    result.push({ zoom: map.getZoom(), cluster, intervals, draws, drawn: view.items.length });
  }
  return result;
}
"""


async def measure(
    browser: Any, url: str, listed: list[dict[str, Any]], frames: int, steps: int
) -> Any:
    """Open the map with ``listed`` as the devices the API gives; pan and time it."""
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    body = json.dumps({"devices": listed})

    async def serve_devices(route: Any) -> None:
        await route.fulfill(status=200, content_type="application/json", body=body)

    await page.route("**/api/v1/devices", serve_devices)
    await page.goto(url + "/")
    await page.fill("#login-username", "bench")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#connection[data-status='live']")
    await page.goto(url + "/#/map")
    await page.wait_for_selector(f"#map[data-ready='true'][data-markers='{len(listed)}']")
    result = await page.evaluate(MEASURE, [frames, steps])
    await page.close()
    if errors:
        raise RuntimeError("errors in the page: " + "; ".join(errors))
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(count: int, frames: int) -> int:
    """Measure the map with no devices, then with ``count``; print the figures."""
    import argon2
    from playwright.async_api import async_playwright

    from cityvisor.core.users import Role
    from cityvisor.plugins import demo
    from cityvisor.plugins import web as web_plugin
    from cityvisor.testing import running_hub
    from cityvisor.web import find_server
    from cityvisor.web.auth import Accounts

    directory = Path(tempfile.mkdtemp(prefix="cityvisor-map-bench-"))
    async with running_hub(CONFIG, directory, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(30):
            await server.ready.wait()
        accounts = Accounts(hub.store)
        await accounts.setup()
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        await accounts.add("bench", PASSWORD, Role.VIEWER, ["*"], hasher=cheap)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            # The baseline before and after the loaded pans (interleaved): a burst
            # of load elsewhere during the run shows in both.
            baseline = await measure(browser, server.url, [], frames, 1)
            loaded = await measure(browser, server.url, devices(count), frames, 3)
            baseline += await measure(browser, server.url, [], frames, 1)
            version = browser.version
            await browser.close()
    raw = [interval for step in baseline for interval in step["intervals"]]
    raw_p50 = statistics.median(raw)
    print(f"Chromium {version}, {platform.machine()}, {os.cpu_count()} CPUs, 1920 x 1080")
    print(
        f"raw baseline (no devices): frame p50 {raw_p50:.1f} ms, p95 {percentile(raw, 0.95):.1f} ms"
    )
    worst = 0.0
    for step in loaded:
        p50 = statistics.median(step["intervals"])
        p95 = percentile(step["intervals"], 0.95)
        draw = statistics.median(step["draws"])
        worst = max(worst, p95)
        print(
            f"{count:,} devices, zoom {step['zoom']}: clustering {step['cluster']:.1f} ms,"
            f" draw p50 {draw:.2f} ms, frame p50 {p50:.1f} ms, p95 {p95:.1f} ms"
            f" ({p50 / raw_p50:.2f} x baseline), {step['drawn']} marks drawn"
        )
    print(f"worst frame p95: {worst:.1f} ms")
    return 0


def main() -> None:
    """Run the benchmark (``python -m bench.map_frames``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--quick", action="store_true", help="5,000 devices, 60 frames")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.devices, arguments.frames = 5_000, 60
    logging.basicConfig(level=logging.WARNING)
    sys.exit(anyio.run(run, arguments.devices, arguments.frames))


if __name__ == "__main__":
    main()
