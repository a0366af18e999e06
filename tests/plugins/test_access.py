"""The access family: doors on a simulated OSDP line, badges, lockdown, alarms, CLI and API.

Every test runs a real hub with the access plugin; its doors talk OSDP over
a socat pty pair to simulated readers (libosdp in PD mode).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

import cityvisor.plugins.access as access
from cityvisor.cli import main
from cityvisor.core.alarms import Alarm
from cityvisor.core.commands import CommandRequest
from cityvisor.core.config import check_config, load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.points import PointValue, QualityStatus, now_ms
from cityvisor.core.users import Role, User
from cityvisor.hal.sim.osdp_reader import ReaderLine, SimulatedReader
from cityvisor.plugins.access.rights import pseudonym, pseudonym_key
from cityvisor.testing import running_hub, wait_for_point
from tests.hal import osdp_fixtures
from tests.hal.osdp_fixtures import KEY, OsdpLine

pytestmark = pytest.mark.anyio

osdp_line = osdp_fixtures.osdp_line
no_osdp_threads = osdp_fixtures.no_osdp_threads

OPERATOR = User("olivia", Role.OPERATOR)
SUPERVISOR = User("sam", Role.SUPERVISOR)

# Doors a and b are in the zone "centre" (the town hall and the school), c in "nord" (the gym).
DOORS = {
    "door-a": (1, "centre", "mairie"),
    "door-b": (2, "centre", "ecole"),
    "door-c": (3, "nord", "gym"),
}


def deployment(port: str, *, key: str = KEY.hex(), held_open_time: float = 30.0) -> str:
    """A deployment file with the three doors on one line."""
    text = """
        [site]
        name = "Testville"
        [store]
        path = "city.sqlite"
        flush_interval = 0.05
        [[zones]]
        id = "centre"
        name = "Centre"
        [[zones]]
        id = "nord"
        name = "Nord"
    """
    for door, (address, zone, building) in DOORS.items():
        text += f"""
        [[devices]]
        id = "{door}"
        type = "access.door"
        zone = "{zone}"
        [devices.config]
        port = "{port}"
        address = {address}
        building = "{building}"
        secure_channel_key = "{key}"
        held_open_time = {held_open_time}
        strike_pulse = 1.0
        """
    return "\n".join(line.strip() for line in text.splitlines())


async def badges(directory: Path, *commands: str) -> None:
    """Run ``cityvisor badges`` commands on the test deployment (in a thread: it runs its own loop)."""
    for command in commands:
        argv = ["badges", "-c", str(directory / "cityvisor-test.toml"), *command.split()]
        assert await anyio.to_thread.run_sync(main, argv) == 0, command


@asynccontextmanager
async def city(
    tmp_path: Path,
    line: OsdpLine,
    *setup: str,
    reader_key: bytes = KEY,
    extra: str = "",
    plugins: Sequence[Any] = (),
    **options: Any,
) -> AsyncIterator[tuple[Hub, dict[str, SimulatedReader]]]:
    """The simulated readers on the line, the badges set up with the CLI, and a running hub."""
    (tmp_path / "cityvisor-test.toml").write_text(deployment(line.panel, **options) + extra)
    await badges(tmp_path, *setup)
    with ReaderLine(line.readers) as readers:
        sims = {d: readers.add_reader(a, scbk=reader_key) for d, (a, _, _) in DOORS.items()}
        config = tmp_path / "cityvisor-test.toml"
        async with running_hub(config, tmp_path, plugins=[access, *plugins]) as hub:
            yield hub, sims


def value(hub: Hub, door: str, point: str) -> PointValue:
    """A door's point, by its name."""
    zone = DOORS[door][1]
    return hub.points.value(f"{zone}/access/{door}/{point}")


async def wait_value(hub: Hub, door: str, point: str, expected: Any, timeout: float = 10) -> None:
    """Wait until a door's point holds ``expected`` with good quality."""
    point_id = f"{DOORS[door][1]}/access/{door}/{point}"
    await wait_for_point(
        hub, point_id, lambda v: v.quality.is_good and v.value == expected, timeout
    )


async def wait_sim(reader: SimulatedReader, predicate: Callable[[SimulatedReader], bool]) -> None:
    """Wait until the simulated reader's state satisfies ``predicate``."""
    assert await anyio.to_thread.run_sync(reader.wait_until, predicate, 10.0)


async def wait_alarm(hub: Hub, alarm_id: str, predicate: Callable[[Alarm], bool]) -> None:
    """Wait until an alarm satisfies ``predicate`` (its state is checked at each event)."""
    alarm = hub.alarms.get(alarm_id)
    with anyio.fail_after(20):
        async with hub.alarms.subscribe() as feed:
            if predicate(alarm):
                return
            async for _ in feed:
                if predicate(alarm):
                    return


async def online(hub: Hub, *doors: str) -> None:
    """Wait until the doors are online and know their mode."""
    for door in doors or DOORS:
        await wait_value(hub, door, "online", True)
        await wait_value(hub, door, "access_mode", 0)


async def journal(hub: Hub, kind: str) -> list[dict[str, Any]]:
    """The journal entries of ``kind``, oldest first, as JSON."""
    entries = await hub.store.query_journal(kinds=[kind], limit=1000)
    return [e.as_json() for e in reversed(entries)]


async def confirm(hub: Hub, order: Any, user: User) -> Any:
    """Confirm a selected command (select-before-operate)."""
    assert order.token, order
    return await hub.commands.confirm(order.token, user)


# --------------------------------------------------------------------------- decisions


async def test_a_known_badge_is_granted_and_unknown_or_expired_ones_are_denied(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(
        tmp_path,
        osdp_line,
        "add 12:3456 --holder Claire",
        "grant 12:3456 building:mairie",
        "add 12:1000 --holder Paul",
        "grant 12:1000 building:mairie --until 2020-01-01",
    ) as (hub, readers):
        await online(hub, "door-a")
        assert value(hub, "door-a", "secure").value is True
        readers["door-a"].present_card("12:3456")
        await wait_sim(readers["door-a"], lambda r: r.relay_pulses == 1 and "green" in r.leds)
        key = pseudonym_key(tmp_path / "city.sqlite")
        await wait_value(hub, "door-a", "last_badge", pseudonym(key, "12:3456"))
        assert value(hub, "door-a", "last_access").value == 1

        readers["door-a"].present_card("99:9")
        await wait_sim(readers["door-a"], lambda r: "red" in r.leds and r.beeps == 1)
        await wait_value(hub, "door-a", "last_reason", "unknown badge")
        readers["door-a"].present_card("12:1000")
        await wait_value(hub, "door-a", "last_reason", "right expired")
        assert (
            readers["door-a"].relay_pulses == 1 and value(hub, "door-a", "last_access").value == 0
        )

        decisions = await journal(hub, "access")
        assert [(d["data"]["granted"], d["data"]["reason"]) for d in decisions] == [
            (True, "right"),
            (False, "unknown badge"),
            (False, "right expired"),
        ]
        assert decisions[0]["device"] == "door-a" and decisions[0]["data"]["signalled"] is True
        # The GDPR: no badge number anywhere in the journal, only pseudonyms.
        everything = json.dumps(await journal(hub, "access") + await journal(hub, "badges"))
        assert "3456" not in everything and "12:1000" not in everything


async def test_zone_lockdown_denies_all_but_the_exceptions_and_release_restores(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(
        tmp_path,
        osdp_line,
        "add 12:3456 --holder Claire",
        "grant 12:3456 zone:centre",
        "add 12:7777 --holder Maire",
        "grant 12:7777 *",
        "exceptions add 12:7777 zone:centre",
    ) as (hub, readers):
        await online(hub)
        order = await hub.commands.execute_group("lockdown", {}, OPERATOR, zone="centre")
        done = await confirm(hub, order, OPERATOR)
        assert {r.device_id: r.outcome.value for r in done.results} == {
            "door-a": "succeeded",
            "door-b": "succeeded",
        }
        assert value(hub, "door-c", "access_mode").value == 0  # the gym is in another zone
        await wait_sim(readers["door-a"], lambda r: r.led == "red")  # closed, for all to see

        readers["door-b"].present_card("12:3456")
        await wait_value(hub, "door-b", "last_reason", "lockdown")
        readers["door-b"].present_card("12:7777")
        await wait_value(hub, "door-b", "last_reason", "lockdown exception")
        await wait_sim(readers["door-b"], lambda r: r.relay_pulses == 1)
        modes = await hub.store.call(
            lambda db: db.execute("SELECT * FROM access_door_mode").fetchall()
        )
        assert {device: mode for device, mode, _ in modes} == {
            "door-a": "lockdown",
            "door-b": "lockdown",
        }

        # Releasing is a supervisor's decision.
        refused = await hub.commands.execute_group("release", {}, OPERATOR, zone="centre")
        refused = await confirm(hub, refused, OPERATOR)
        assert {r.outcome.value for r in refused.results} == {"refused"}
        done = await confirm(
            hub,
            await hub.commands.execute_group("release", {}, SUPERVISOR, zone="centre"),
            SUPERVISOR,
        )
        assert {r.outcome.value for r in done.results} == {"succeeded"}
        await wait_sim(readers["door-a"], lambda r: r.led == "off")
        readers["door-a"].present_card("12:3456")
        await wait_value(hub, "door-a", "last_reason", "right")
        await wait_sim(readers["door-a"], lambda r: r.relay_pulses == 1)


# --------------------------------------------------------------------------- the door and the line


async def test_door_forced_held_open_and_tamper_raise_their_alarms(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(tmp_path, osdp_line, held_open_time=1.0) as (hub, readers):
        await online(hub, "door-c")
        await wait_value(hub, "door-c", "door_open", False)
        gym = readers["door-c"]
        gym.set_door(True)
        await wait_alarm(hub, "door-c:forced", lambda a: a.active)
        await wait_alarm(hub, "door-c:held_open", lambda a: a.active)
        gym.set_door(False)
        await wait_alarm(hub, "door-c:forced", lambda a: not a.active)
        await wait_value(hub, "door-c", "door_held_open", False)

        # Let in from the control room: the door opens, and it is not forced.
        unlock = await hub.commands.execute(_request("door-c", "unlock_once"))
        assert (await confirm(hub, unlock, OPERATOR)).ok
        await wait_sim(gym, lambda r: r.relay_pulses == 1)
        gym.set_door(True)
        await wait_value(hub, "door-c", "door_open", True)
        assert value(hub, "door-c", "door_forced").value is False
        gym.set_door(False)

        gym.set_tamper(True)
        await wait_alarm(hub, "door-c:tampered", lambda a: a.active)


async def test_an_unplugged_reader_raises_communication_lost_and_comes_back(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(tmp_path, osdp_line) as (hub, readers):
        await online(hub)
        readers["door-a"].unplug()
        await wait_alarm(hub, "door-a:communication_lost", lambda a: a.active)
        quality = value(hub, "door-a", "access_mode").quality
        assert quality.status is QualityStatus.BAD and quality.reason == "comm_failure"
        assert value(hub, "door-b", "online").value is True  # its neighbour on the line carries on
        # A lockdown is the hub's decision: it holds for a door whose reader is away...
        order = await hub.commands.execute(CommandRequest("door-a", "lockdown", {}, None, OPERATOR))
        done = await confirm(hub, order, OPERATOR)
        assert done.outcome.value == "succeeded"
        readers["door-a"].plug()
        await wait_value(hub, "door-a", "online", True, timeout=15)
        # ...and the reader shows it as soon as it is back.
        assert value(hub, "door-a", "access_mode").value == 1
        await wait_sim(readers["door-a"], lambda r: r.led == "red")


async def test_garbage_on_the_line_is_counted_and_the_doors_carry_on(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(tmp_path, osdp_line, "add 1:1 --holder Jo", "grant 1:1 *") as (hub, readers):
        await online(hub)
        osdp_line.noise(b"\x53\x81\x09\x00\x04\x60\x00\xde\xad" + b"noise" * 4)
        await wait_for_point(hub, "centre/access/door-a/line_errors", lambda v: (v.value or 0) > 0)
        readers["door-b"].present_card("1:1")
        await wait_sim(readers["door-b"], lambda r: r.relay_pulses == 1)
        assert all(value(hub, door, "online").value for door in DOORS)


async def test_truncated_frames_ahead_of_replies_cost_no_restart_and_no_alarm(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    # A header announcing 40 bytes with 3 behind it, put on the line right
    # ahead of a real reply, 20 times over about five seconds.
    truncated = b"\x53\x81\x28\x00\x04\x40\x00"
    async with city(tmp_path, osdp_line) as (hub, readers):
        await online(hub)
        restarts = {door: hub.supervisor.drivers[door].restarts for door in DOORS}
        start = now_ms()
        for _ in range(20):
            readers["door-a"].line.inject_before_replies(truncated)
            await anyio.sleep(0.25)
        await anyio.sleep(2)  # a reader taken offline would show within this window
        lost = [
            entry
            for door in DOORS
            for entry in await hub.store.query_journal(
                kinds=["alarm"], alarm=f"{door}:communication_lost", since=start
            )
        ]
        assert lost == []
        assert {door: hub.supervisor.drivers[door].restarts for door in DOORS} == restarts
        assert all(value(hub, door, "online").value for door in DOORS)
        errors = value(hub, "door-a", "line_errors").value or 0
        assert errors >= 20  # every truncated frame was seen and counted


async def test_a_reader_with_another_key_stays_offline_with_a_config_error(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    async with city(tmp_path, osdp_line, reader_key=bytes(16)) as (hub, _):
        point_id = "centre/access/door-a/access_mode"
        await wait_for_point(hub, point_id, lambda v: v.quality.reason == "config_error", 15)
        assert value(hub, "door-a", "online").value is False


# --------------------------------------------------------------------------- config, API


def test_a_door_on_a_missing_serial_port_passes_check_config(tmp_path: Path) -> None:
    path = tmp_path / "city.toml"
    path.write_text(deployment("/dev/ttyUSB-not-plugged"))
    assert check_config(load_config(path), make_plugin_manager(entry_points=False)) == []
    path.write_text(deployment("/dev/ttyUSB0", key="not-a-key"))
    problems = check_config(load_config(path), make_plugin_manager(entry_points=False))
    assert problems and "32 hexadecimal digits" in problems[0]
    clash = deployment("/dev/ttyUSB0").replace("address = 2", "address = 1")
    path.write_text(clash.replace("port = ", "baudrate = 19200\nport = ", 1))
    problems = check_config(load_config(path), make_plugin_manager(entry_points=False))
    assert any("devices[1].config.baudrate: /dev/ttyUSB0 runs at 19200" in p for p in problems)
    assert any("devices[1].config.address: 1 on /dev/ttyUSB0 is door-a's" in p for p in problems)


async def test_the_api_manages_badges_for_supervisors_in_their_zones(
    tmp_path: Path, osdp_line: OsdpLine
) -> None:
    """Through the real web server: sessions, CSRF, the plugin's routes behind them."""
    from cityvisor.plugins import web as web_plugin
    from cityvisor.web import find_server
    from cityvisor.web.auth import Accounts
    from tests.web.conftest import CHEAP, PASSWORD, Client

    web_section = '[web]\nhost = "127.0.0.1"\nport = 0\n'
    async with city(tmp_path, osdp_line, extra=web_section, plugins=[web_plugin]) as (hub, readers):
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        accounts = Accounts(hub.store, hub.config.user_list())
        await accounts.setup()
        users = {
            "sam": (Role.SUPERVISOR, ["*"]),
            "olivia": (Role.OPERATOR, ["*"]),
            "nadia": (Role.SUPERVISOR, ["nord"]),
        }
        clients = {}
        async with aiohttp.ClientSession() as anonymous:
            for name, (role, zones) in users.items():
                await accounts.add(name, PASSWORD, role, zones, hasher=CHEAP)
                session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
                clients[name] = Client(server.url, session)
                await clients[name].login(name)
            try:
                sam, olivia, nadia = clients["sam"], clients["olivia"], clients["nadia"]
                async with anonymous.get(f"{server.url}/api/v1/access/badges") as response:
                    assert response.status == 401
                assert await olivia.get("/api/v1/access/badges") == (
                    403,
                    {"error": "forbidden", "message": "managing badges needs the supervisor role"},
                )
                assert (
                    await sam.post("/api/v1/access/badges", {"number": "5:55", "holder": "Lea"})
                )[0] == 201
                assert (
                    await sam.post("/api/v1/access/badges", {"number": "5:55", "holder": "Lea"})
                )[0] == 409
                assert (await sam.post("/api/v1/access/badges", {"holder": "Lea"}))[0] == 400
                # Text the store cannot hold, or a date past year 9999: refused, naming the field.
                for body in (
                    {"number": "7:77", "holder": "Lea \ud800"},
                    {"number": "7:77", "holder": "Lea", "note": "\x1b[2J"},
                    {"number": "7:77", "holder": "x" * 201},
                ):
                    status, refused = await sam.post("/api/v1/access/badges", body)
                    assert status == 422 and (
                        "holder" in refused["message"] or "note" in refused["message"]
                    ), refused
                status, refused = await sam.post(
                    "/api/v1/access/badges/5:55/rights",
                    {"place": "building:gym", "valid_until": 10**23},
                )
                assert status == 422 and "9999" in refused["message"], refused
                status, right = await sam.post(
                    "/api/v1/access/badges/5:55/rights",
                    {"place": "building:gym", "valid_until": "2099-12-31"},
                )
                assert status == 201
                assert (
                    await nadia.post("/api/v1/access/badges/5:55/rights", {"place": "zone:centre"})
                )[0] == 403
                assert (
                    await nadia.post(
                        "/api/v1/access/badges/5:55/exceptions", {"place": "building:gym"}
                    )
                )[0] == 201
                assert (await sam.post("/api/v1/access/badges/6:66/rights", {"place": "*"}))[
                    0
                ] == 404

                # The door knows at once.
                await online(hub, "door-c")
                readers["door-c"].present_card("5:55")
                await wait_sim(readers["door-c"], lambda r: r.relay_pulses == 1)

                status, listed = await sam.get("/api/v1/access/badges")
                (badge,) = listed["badges"]
                assert badge["holder"] == "Lea" and badge["pseudonym"].startswith("b-")
                assert [r["place"] for r in badge["rights"]] == ["building:gym"]
                assert (await nadia.delete(f"/api/v1/access/rights/{right['id']}"))[0] == 200
                assert (await sam.delete("/api/v1/access/badges/5:55"))[0] == 200
                assert await sam.get("/api/v1/access/badges") == (200, {"badges": []})
            finally:
                for client in clients.values():
                    await client.http.close()

        edits = await journal(hub, "badges")
        assert [(e["user"], e["message"]) for e in edits] == [
            ("sam", "badge enrolled"),
            ("sam", "right granted"),
            ("nadia", "exception granted"),
            ("nadia", "right revoked"),
            ("sam", "badge withdrawn"),
        ]
        assert "5:55" not in json.dumps(edits)


def _request(device: str, command: str) -> Any:
    from cityvisor.core.commands import CommandRequest

    return CommandRequest(device, command, {}, None, OPERATOR)
