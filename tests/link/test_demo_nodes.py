"""``cityvisor demo --nodes 3``: three edge hubs in processes of their own and a central."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from tests.link.conftest import broker_is_listening

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PASSWORD = "demo-nodes-password"


async def test_three_communes_reach_the_central_hmi_over_sparkplug(tmp_path: Path):
    broker_is_listening()
    command = [sys.executable, "-m", "cityvisor", "demo", "--nodes", "3", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "demo")]
    environment = {**os.environ, "CITYVISOR_ADMIN_PASSWORD": PASSWORD}
    lines: list[str] = []
    with (tmp_path / "stderr.txt").open("wb") as log:
        async with await anyio.open_process(command, env=environment, stderr=log) as process:
            assert process.stdout is not None
            stdout = TextReceiveStream(process.stdout)
            try:
                with anyio.fail_after(40):
                    buffer = ""
                    async for chunk in stdout:
                        buffer += chunk
                        if "Stop with Ctrl-C." in buffer:
                            break
                lines = buffer.splitlines()
                hmi = next(line for line in lines if line.startswith("HMI of the central: "))
                url = hmi.split()[-1].rstrip("/")
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as http:
                    login = {"username": "admin", "password": PASSWORD}
                    async with http.post(
                        url + "/api/v1/session", json=login, headers={"Origin": url}
                    ) as response:
                        assert response.status == 200, await response.text()
                    found: dict[str, dict] = {}
                    with anyio.fail_after(40):
                        while len(found) < 3:
                            async with http.get(
                                url + "/api/v1/points", params={"pattern": "*/*/demo/*/level"}
                            ) as response:
                                assert response.status == 200
                                body = await response.json()
                            found = {
                                p["id"].split("/")[0]: p
                                for p in body["points"]
                                if p["current"]["quality"]["status"] == "good"
                            }
                            await anyio.sleep(0.5)
                    assert set(found) == {"dijon", "chenove", "talant"}
            finally:
                if process.returncode is None:
                    process.send_signal(2)
                    with anyio.move_on_after(15):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
            assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()
