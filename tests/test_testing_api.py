"""cityvisor.testing.api_client and send_command: a plugin's tests talk to a real hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.core.commands import CommandOutcome
from cityvisor.plugins import demo, web
from cityvisor.testing import api_client, running_hub, send_command, wait_for_point

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Testville"

[store]
path = "t.sqlite"

[web]
port = 0

[[zones]]
id = "nord"
name = "Nord"

[[zones]]
id = "sud"
name = "Sud"

[[devices]]
id = "tank"
type = "demo.tank"
zone = "nord"
config = { period = 0.05, fill_rate = 100, initial_level = 50 }
"""


async def test_the_api_client_is_logged_in_with_the_role_and_zones_asked(tmp_path: Path):
    async with running_hub(CONFIG, tmp_path, plugins=[demo, web]) as hub:
        async with api_client(hub, "olivia", role="operator", zones=["sud"]) as client:
            status, session = await client.get("/api/v1/session")
            assert status == 200
            assert session["user"] == {"name": "olivia", "role": "operator", "zones": ["sud"]}
            status, body = await client.post(
                "/api/v1/devices/tank/commands/set_level", {"arguments": {"setpoint": 60}}
            )
            assert status == 403, body  # the tank is in nord
        async with api_client(hub) as admin:
            status, body = await admin.post(
                "/api/v1/devices/tank/commands/set_level", {"arguments": {"setpoint": 60}}
            )
            assert status == 200, body
            assert body["outcome"] == "succeeded"


async def test_send_command_confirms_and_gets_approval_as_needed(tmp_path: Path):
    async with running_hub(CONFIG, tmp_path, plugins=[demo]) as hub:
        await wait_for_point(hub, "nord/demo/tank/online", lambda v: v.value is True)
        drained = await send_command(hub, "tank", "drain")  # confirm=True
        assert drained.outcome is CommandOutcome.SUCCEEDED
        toggled = await send_command(hub, "tank", "toggle_maintenance")  # two_person=True
        assert toggled.ok and toggled.approver == "tester-second"
        await wait_for_point(hub, "nord/demo/tank/maintenance", lambda v: v.value is True)


async def test_without_a_web_server_the_client_says_what_to_load(tmp_path: Path):
    async with running_hub(CONFIG, tmp_path, plugins=[demo]) as hub:
        with pytest.raises(pytest.fail.Exception, match=r"load cityvisor\.plugins\.web"):
            async with api_client(hub):
                pass
