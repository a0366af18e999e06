"""``cityvisor demo``: a living city in one command, stopped cleanly by Ctrl-C.

The end-to-end test runs the real command in a child process with the small
city and a fast life, as a newcomer would run it, and talks to its HMI over
HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tomllib
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from cityvisor.core.config import check_config, load_config
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.demo import SUPERVISOR, tomlfile
from cityvisor.demo.city import FULL, PROCEDURES, SMALL

PASSWORD = "demo password for the test"


def test_the_full_city_has_the_equipment_the_issue_asks_for():
    assert FULL.cameras == 20
    assert sum(count for count, _ in FULL.cabinets.values()) == 40
    assert 280 <= FULL.circuits <= 320
    assert FULL.bollards == 12 and FULL.doors == 10
    assert sum(FULL.switches.values()) == 8
    assert len(FULL.cabinets) == 3
    assert SMALL.circuits < FULL.circuits


def test_the_config_writer_round_trips_what_the_demo_writes():
    data = {
        "site": {"name": "Ville « test »", "latitude": 47.3},
        "web": {"port": 0},
        "zones": [{"id": "a", "name": 'A\\b "quoted"'}],
        "devices": [
            {
                "id": "x",
                "tags": ["t1", "t2"],
                "location": [47.1, 5.2],
                "config": {
                    "schedule": {"steps": [{"at": "23:00", "level": 50}]},
                    "flag": True,
                },
            }
        ],
        "procedures": PROCEDURES[:2],
    }
    text = tomlfile.dumps(data, header="a header\non two lines")
    assert text.startswith("# a header\n# on two lines\n\n[site]\n")
    assert "\n\n\n" not in text
    assert tomllib.loads(text) == data


async def _read_until(lines: list[str], stream: TextReceiveStream, marker: str) -> str:
    buffer = ""
    async for chunk in stream:
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            lines.append(line)
            if line.startswith(marker):
                return line
    raise AssertionError(f"the demo ended before printing {marker!r}: {lines}")


@pytest.mark.slow
@pytest.mark.anyio
async def test_demo_serves_the_hmi_raises_an_alarm_within_a_minute_and_stops_on_ctrl_c(
    tmp_path: Path,
):
    data_dir = tmp_path / "demo"
    command = [sys.executable, "-m", "cityvisor", "demo", "--small", "--port", "0"]
    command += ["--data-dir", str(data_dir), "--life-rate", "20", "--seed", "7"]
    environment = {**os.environ, "CITYVISOR_ADMIN_PASSWORD": PASSWORD}
    lines: list[str] = []
    # stderr goes to a file, read after a failure: a pipe nobody reads could fill up.
    with (tmp_path / "stderr.txt").open("wb") as log:
        async with await anyio.open_process(command, env=environment, stderr=log) as process:
            assert process.stdout is not None
            stdout = TextReceiveStream(process.stdout)
            try:
                with anyio.fail_after(40):  # start-up, on a shared two-core machine
                    await _read_until(lines, stdout, "Life happens on its own")
                hmi = next(line for line in lines if line.startswith("HMI: "))
                second = next(line for line in lines if line.startswith("  second user: "))
                assert second.startswith(f"  second user: {SUPERVISOR} (supervisor), password: ")
                supervisor_password = second.rsplit(" ", 1)[1]
                started = anyio.current_time()
                url = hmi.split()[1].rstrip("/")
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as http:
                    async with http.get(url + "/") as page:
                        assert page.status == 200
                    login = {"username": "admin", "password": PASSWORD}
                    async with http.post(
                        url + "/api/v1/session", json=login, headers={"Origin": url}
                    ) as response:
                        assert response.status == 200, await response.text()
                    # The second user, for two-person approvals, logs in with the printed password.
                    async with (
                        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
                        other.post(
                            url + "/api/v1/session",
                            json={"username": SUPERVISOR, "password": supervisor_password},
                            headers={"Origin": url},
                        ) as response,
                    ):
                        assert response.status == 200, await response.text()
                        assert (await response.json())["user"]["role"] == "supervisor"
                    async with http.get(url + "/api/v1/devices") as response:
                        devices = (await response.json())["devices"]
                    families = {device["family"] for device in devices}
                    assert {
                        "lighting",
                        "bollards",
                        "cameras",
                        "switches",
                        "access",
                        "signals",
                        "hydro",
                    } <= families
                    alarms: list[dict] = []
                    with anyio.fail_after(30):  # the first event, 5 s in, raises one
                        while not alarms:
                            async with http.get(url + "/api/v1/alarms?scope=active") as response:
                                assert response.status == 200
                                alarms = (await response.json())["alarms"]
                            if not alarms:
                                await anyio.sleep(0.5)
                    assert anyio.current_time() - started < 60
                    # Three crews drive (OsmAnd positions) and a citizen reports (Open311).
                    with anyio.fail_after(30):
                        while True:
                            async with http.get(url + "/api/v1/ops/crews") as response:
                                crews = (await response.json())["crews"]
                            async with http.get(url + "/api/v1/ops/incidents") as response:
                                incidents = (await response.json())["incidents"]
                            placed = [c for c in crews if c["position"] is not None]
                            if len(placed) == 3 and any(i["source"] == "report" for i in incidents):
                                break
                            await anyio.sleep(0.5)
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                rest = "".join([chunk async for chunk in stdout])
                status = await process.wait()
    assert status == 0, "\n".join(lines) + rest + (tmp_path / "stderr.txt").read_text()
    assert rest.strip().endswith("demo stopped")
    config = load_config(data_dir / "demo-city.toml")
    assert check_config(config, make_plugin_manager(entry_points=False)) == []
    # The map's offline background: the communes' outlines, next to the config.
    assert config.web.basemap == data_dir / "communes.geojson"
    basemap = json.loads(config.web.basemap.read_text(encoding="utf-8"))
    names = {feature["properties"]["name"] for feature in basemap["features"]}
    assert names == {"Dijon", "Chenôve", "Talant"}
