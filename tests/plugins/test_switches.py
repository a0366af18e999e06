"""The switches family through a real hub: net-snmp's snmpd and snmptrap, and the switch simulator.

snmpd serves the test machine's own interfaces (read-only for interfaces:
its write view holds only the system group, see tests/hal/snmpd.py); the
simulator, on 127.0.0.2 so that its traps come from an address of its own,
accepts port commands. Every wait is on an event (a point value, an alarm
transition) with a generous timeout: the machine is shared.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cityvisor import Quality, Role, User
from cityvisor.core.commands import CommandOutcome, CommandRequest
from cityvisor.core.config import check_config, parse_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.hal.sim.switch import SimulatedSwitch
from cityvisor.hal.snmp import (
    IF_ADMIN_STATUS,
    IF_INDEX,
    IF_OPER_STATUS,
    LINK_DOWN,
    LINK_UP,
    SNMP_IN_BAD_COMMUNITY_NAMES,
    CommunityCredentials,
    SnmpManager,
    UsmCredentials,
)
from cityvisor.plugins import switches
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point
from tests.hal.snmpd import Snmpd, free_udp_port, snmptrap

pytestmark = pytest.mark.anyio

WAIT = 10.0
"""Seconds any wait may take on a busy machine (polls are sub-second here)."""
USM_STATS_WRONG_DIGESTS = "1.3.6.1.6.3.15.1.1.5.0"
OPERATOR = User("operateur", Role.OPERATOR)
INTERFACES = {
    int((path / "ifindex").read_text()): path.name for path in Path("/sys/class/net").iterdir()
}
"""The machine's interfaces by ifIndex: what snmpd's IF-MIB shows."""
LO = next(index for index, name in INTERFACES.items() if name == "lo")


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A net-snmp snmpd on a free port of 127.0.0.1 (see tests/hal/snmpd.py)."""
    agent = Snmpd(tmp_path_factory.mktemp("snmpd"))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatedSwitch]:
    """An 8-port simulated switch on 127.0.0.2, sending its traps to ``simulator.trap_target``."""
    trap_port = free_udp_port()
    async with SimulatedSwitch(
        "sw-sim", host="127.0.0.2", ports=8, trap_target=("127.0.0.1", trap_port)
    ) as switch:
        yield switch


def hub_config(*devices: dict[str, Any]) -> str:
    """A deployment file with one zone and these switches (``id`` plus their config keys)."""
    lines = [
        '[site]\nname = "Réseau"\n[store]\npath = "hub.sqlite"\n[[zones]]\nid = "net"\nname = "Réseau"'
    ]
    for device in devices:
        settings = {key: value for key, value in device.items() if key != "id"}
        inline = ", ".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
        lines.append(f'[[devices]]\nid = "{device["id"]}"\ntype = "switches.switch"\nzone = "net"')
        lines.append(f"config = {{ {inline} }}")
    return "\n".join(lines) + "\n"


def on_snmpd(snmpd: Snmpd, device_id: str, **settings: Any) -> dict[str, Any]:
    """A switch device reading snmpd over v2c (or v3 with ``version="v3"``)."""
    device: dict[str, Any] = {"id": device_id, "host": "127.0.0.1", "port": snmpd.port}
    if settings.get("version") == "v3":
        device |= {"user": snmpd.user, "auth_key": snmpd.auth_key, "priv_key": snmpd.priv_key}
    device |= {"ports": sorted(INTERFACES), "poll_period": 0.5, "timeout": 0.5, "trap_listen": ""}
    return device | settings


def on_simulator(switch: SimulatedSwitch, device_id: str = "sw-sim", **settings: Any) -> dict:
    """A switch device on the simulator, listening for its traps."""
    host, port = switch.address
    assert switch.trap_target is not None
    listen = "{}:{}".format(*switch.trap_target)
    device = {"id": device_id, "host": host, "port": port, "write_community": "private"}
    device |= {"ports": 8, "critical_ports": [1, 3], "timeout": 0.5, "trap_listen": listen}
    return device | settings


def value(hub: Hub, point_id: str) -> Any:
    """A point's current value, which must be of good quality."""
    current = hub.points.value(point_id)
    assert current.quality.is_good, f"{point_id} is {current}"
    return current.value


def good(predicate: Any = lambda _v: True) -> Any:
    """A predicate for wait_for_point: good quality and ``predicate(value)``."""
    return lambda v: v.quality.is_good and predicate(v.value)


async def polled(hub: Hub, device: str) -> None:
    """Wait until the device is online and its first poll is published."""
    await wait_for_point(hub, f"net/switches/{device}/online", good(bool), timeout=WAIT)
    await wait_for_point(hub, f"net/switches/{device}/uptime", good(), timeout=WAIT)


async def confirmed(hub: Hub, device: str, command: str, port: str) -> Any:
    """Select a command, check that nothing happens before the confirmation, then confirm."""
    selected = await hub.commands.execute(CommandRequest(device, command, {}, port, OPERATOR))
    assert selected.outcome is CommandOutcome.PENDING_CONFIRMATION and selected.token
    return await hub.commands.confirm(selected.token, OPERATOR)


# --------------------------------------------------------------------------- reading


async def test_the_machines_interfaces_appear_as_ports_over_v2c_and_v3(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    config = hub_config(on_snmpd(snmpd, "sw-v2c"), on_snmpd(snmpd, "sw-v3", version="v3"))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        for device in ("sw-v2c", "sw-v3"):
            base = f"net/switches/{device}"
            await polled(hub, device)
            assert value(hub, f"{base}/sys_name") == socket.gethostname()
            assert value(hub, f"{base}/sys_descr").startswith("Linux")
            assert value(hub, f"{base}/uptime") > 0
            for index, name in INTERFACES.items():
                assert value(hub, f"{base}/p{index}/name") == name
            assert value(hub, f"{base}/p{LO}/admin_status") == 1
            assert value(hub, f"{base}/p{LO}/oper_status") == 1
            assert value(hub, f"{base}/p{LO}/speed") >= 0
            assert value(hub, f"{base}/p{LO}/critical_down") is False
            # Rates need two samples: the second poll brings them.
            await wait_for_point(hub, f"{base}/p{LO}/in_rate", good(lambda v: v >= 0), WAIT)
            await wait_for_point(hub, f"{base}/p{LO}/error_rate", good(lambda v: v == 0), WAIT)
        spec = hub.points.get(f"net/switches/sw-v2c/p{LO}/oper_status").spec
        assert spec.label(7) == "lower_layer_down"


async def test_a_listed_port_the_switch_lacks_reads_config_error(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    missing = max(INTERFACES) + 100
    config = hub_config(on_snmpd(snmpd, "sw", ports=[LO, missing]))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        await wait_for_point(hub, f"net/switches/sw/p{LO}/name", good(), timeout=WAIT)
        assert hub.points.value(f"net/switches/sw/p{missing}/name").quality == Quality.bad(
            "config_error"
        )
        others = [index for index in INTERFACES if index != LO]
        assert all(f"net/switches/sw/p{index}/name" not in hub.points for index in others)


# --------------------------------------------------------------------------- commands


async def test_disabling_an_interface_snmpd_protects_fails_cleanly_and_is_journaled(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    config = hub_config(on_snmpd(snmpd, "sw", write_community=snmpd.write_community))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        await polled(hub, "sw")
        result = await confirmed(hub, "sw", "disable_port", f"p{LO}")
        assert result.outcome is CommandOutcome.FAILED
        assert "noAccess" in result.detail
        (entry, *_) = await hub.store.query_journal(kinds=["command"], device="sw")
        assert entry.data["outcome"] == "failed" and "noAccess" in entry.data["detail"]
        assert entry.user == OPERATOR.name
        # A refusal is an answer: the switch stays online and the port as it was.
        assert value(hub, "net/switches/sw/online") is True
        assert value(hub, f"net/switches/sw/p{LO}/admin_status") == 1


async def test_a_simulated_port_is_disabled_and_enabled_after_confirmation(
    tmp_path: Path, simulator: SimulatedSwitch
) -> None:
    # A long period: what changes the points here is the command's read-back.
    config = hub_config(on_simulator(simulator, poll_period=60))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        await polled(hub, "sw-sim")
        selected = await hub.commands.execute(
            CommandRequest("sw-sim", "disable_port", {}, "p3", OPERATOR)
        )
        assert selected.outcome is CommandOutcome.PENDING_CONFIRMATION
        assert simulator.sets == 0 and simulator.port(3).admin_up
        assert selected.token is not None
        result = await hub.commands.confirm(selected.token, OPERATOR)
        assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
        assert result.feedback == 2
        assert not simulator.port(3).admin_up
        assert value(hub, "net/switches/sw-sim/p3/oper_status") == 2
        # Disabled on purpose: a critical port that is off is not "down".
        assert value(hub, "net/switches/sw-sim/p3/critical_down") is False
        result = await confirmed(hub, "sw-sim", "enable_port", "p3")
        assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
        assert simulator.port(3).admin_up
        assert value(hub, "net/switches/sw-sim/p3/admin_status") == 1
        outcomes = [e.data["outcome"] for e in await hub.store.query_journal(kinds=["command"])]
        assert outcomes == ["succeeded", "pending_confirmation"] * 2


async def test_without_a_write_community_port_commands_fail_with_the_reason(
    tmp_path: Path, simulator: SimulatedSwitch
) -> None:
    config = hub_config(on_simulator(simulator, write_community="", trap_listen=""))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        await polled(hub, "sw-sim")
        result = await confirmed(hub, "sw-sim", "disable_port", "p2")
        assert result.outcome is CommandOutcome.FAILED
        assert "write_community" in result.detail
        assert simulator.sets == 0


# --------------------------------------------------------------------------- traps and alarms


async def test_link_traps_update_the_right_port_at_once(
    tmp_path: Path, snmpd: Snmpd, simulator: SimulatedSwitch
) -> None:
    sim = on_simulator(simulator, poll_period=60)  # no poll comes to help: only traps
    on_agent = on_snmpd(snmpd, "sw-snmpd", version="v3", poll_period=60, trap_listen=sim["trap_listen"])  # fmt: skip
    async with running_hub(hub_config(sim, on_agent), tmp_path, plugins=[switches]) as hub:
        for device in ("sw-sim", "sw-snmpd"):
            await polled(hub, device)
        # The simulator's own trap: a critical port losing its link raises the alarm.
        simulator.set_link(3, up=False)
        await wait_for_point(hub, "net/switches/sw-sim/p3/oper_status", good(lambda v: v == 2))
        alarm = await wait_for_alarm(hub, "sw-sim:p3:critical_port_down", lambda a: a.active)
        assert alarm.priority.name == "HIGH"
        # A port that is not critical goes down without an alarm.
        simulator.set_link(4, up=False)
        await wait_for_point(hub, "net/switches/sw-sim/p4/oper_status", good(lambda v: v == 2))
        assert value(hub, "net/switches/sw-sim/p4/critical_down") is False
        assert not hub.alarms.get("sw-sim:p4:critical_port_down").active
        simulator.set_link(3, up=True)
        await wait_for_alarm(hub, "sw-sim:p3:critical_port_down", lambda a: not a.active)

        # net-snmp's snmptrap: a v3 trap signed by snmpd's engine reaches the snmpd device
        # only, and a v2c trap sent from 127.0.0.2 reaches the simulator's device only.
        async with SnmpManager() as manager:
            credentials = UsmCredentials(snmpd.user, snmpd.auth_key, snmpd.priv_key)
            engine_id = await manager.client("127.0.0.1", snmpd.port, credentials=credentials).engine_id()  # fmt: skip
        target = f"udp:{sim['trap_listen']}"
        link_down = [LINK_DOWN, f"{IF_INDEX}.{LO}", "i", str(LO)]
        link_down += [f"{IF_ADMIN_STATUS}.{LO}", "i", "1", f"{IF_OPER_STATUS}.{LO}", "i", "2"]
        v3 = ["-v3", "-e", engine_id.hex(), "-u", snmpd.user, "-l", "authPriv", "-a", "SHA"]
        v3 += ["-A", snmpd.auth_key, "-x", "AES", "-X", snmpd.priv_key]
        await anyio.to_thread.run_sync(lambda: snmptrap(*v3, target, "0", *link_down))
        await wait_for_point(hub, f"net/switches/sw-snmpd/p{LO}/oper_status", good(lambda v: v == 2))  # fmt: skip
        from_sim = ["--clientaddr=127.0.0.2", "-v2c", "-c", "public", target, "0"]
        link_down = [LINK_DOWN, f"{IF_INDEX}.5", "i", "5"]
        await anyio.to_thread.run_sync(lambda: snmptrap(*from_sim, *link_down))
        await wait_for_point(hub, "net/switches/sw-sim/p5/oper_status", good(lambda v: v == 2))
        if LO != 5:
            assert value(hub, f"net/switches/sw-sim/p{LO}/oper_status") == 1


async def test_a_trap_with_values_of_the_wrong_type_applies_the_rest_and_counts_them(
    tmp_path: Path, simulator: SimulatedSwitch, caplog: pytest.LogCaptureFixture
) -> None:
    sim = on_simulator(simulator, poll_period=60)  # no poll comes to help: only traps
    from_sim = ["--clientaddr=127.0.0.2", "-v2c", "-c", "public", f"udp:{sim['trap_listen']}", "0"]
    base = "net/switches/sw-sim"
    async with running_hub(hub_config(sim), tmp_path, plugins=[switches]) as hub:
        await polled(hub, "sw-sim")
        device = hub.supervisor.drivers["sw-sim"].device
        # ifOperStatus as a string and ifAdminStatus as an OID, twice: the link state
        # the trap itself means (down) applies, the two varbinds are ignored and counted.
        wrong = [LINK_DOWN, f"{IF_INDEX}.5", "i", "5", f"{IF_OPER_STATUS}.5", "s", "down"]
        wrong += [f"{IF_ADMIN_STATUS}.5", "o", "1.3.6.1.2.1"]
        for _ in range(2):
            await anyio.to_thread.run_sync(lambda: snmptrap(*from_sim, *wrong))
        await wait_for_point(hub, f"{base}/p5/oper_status", good(lambda v: v == 2))
        with anyio.fail_after(WAIT):
            while device.bad_varbinds < 4:  # noqa: ASYNC110  (the second trap has no point to wait on)
                await anyio.sleep(0.05)
        assert value(hub, f"{base}/p5/admin_status") == 1  # as polled: the OID was no status
        # ifOperStatus 42 is no link state: the point is bad, not 42.
        nonsense = [LINK_UP, f"{IF_INDEX}.6", "i", "6", f"{IF_OPER_STATUS}.6", "i", "42"]
        await anyio.to_thread.run_sync(lambda: snmptrap(*from_sim, *nonsense))
        oper = await wait_for_point(hub, f"{base}/p6/oper_status", lambda v: v.quality.is_bad)
        assert oper.quality == Quality.bad("device_failure:out_of_range")
        assert oper.value == 1  # the last real value, flagged bad
        # A later, valid trap makes it good again.
        fine = [LINK_DOWN, f"{IF_INDEX}.6", "i", "6", f"{IF_OPER_STATUS}.6", "i", "2"]
        await anyio.to_thread.run_sync(lambda: snmptrap(*from_sim, *fine))
        await wait_for_point(hub, f"{base}/p6/oper_status", good(lambda v: v == 2))
        # The driver never crashed: no restart, no communication alarm.
        assert hub.supervisor.drivers["sw-sim"].restarts == 0
        assert hub.alarms.get("sw-sim:communication_lost").counts["raised"] == 0
        assert device.bad_varbinds == 5
    logged = [r.getMessage() for r in caplog.records if "counted from now on" in r.getMessage()]
    assert len(logged) == 3, logged  # once per column and kind of mistake


async def test_rates_and_the_error_rate_alarm_follow_the_counters(
    tmp_path: Path, simulator: SimulatedSwitch
) -> None:
    simulator.set_traffic(2, 80_000_000, 20_000_000)
    config = hub_config(on_simulator(simulator, poll_period=1.0, error_rate_limit=5))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        base = "net/switches/sw-sim"
        await wait_for_point(hub, f"{base}/p2/in_rate", good(bool), timeout=WAIT)
        # Timed by the agent's uptime, read just before the walk: a loaded machine
        # delaying the walk moves a 1 s sample by several percent (the exact
        # arithmetic is unit-tested in tests/hal/test_snmp.py; bytes for bits would be 8x).
        assert value(hub, f"{base}/p2/in_rate") == pytest.approx(80e6, rel=0.25)
        assert value(hub, f"{base}/p2/out_rate") == pytest.approx(20e6, rel=0.25)
        assert value(hub, f"{base}/p2/speed") == 1e9
        rates: list[float] = []  # every in_rate that passed the deadband from now on
        hub.points.add_listener(
            lambda point, new: rates.append(new.value) if point.id == f"{base}/p2/in_rate" else None
        )
        simulator.add_errors(6, in_errors=400)
        await wait_for_alarm(hub, "sw-sim:p6:port_errors", lambda a: a.active, timeout=WAIT)
        assert value(hub, f"{base}/p6/error_rate") > 5
        await wait_for_alarm(hub, "sw-sim:p6:port_errors", lambda a: not a.active, timeout=WAIT)
        # The agent restarts: its counters start again from zero, which is no spike.
        uptime = value(hub, f"{base}/uptime")
        simulator.restart()
        await wait_for_point(hub, f"{base}/uptime", good(lambda v: v < uptime), timeout=WAIT)
        await wait_for_point(hub, f"{base}/uptime", good(lambda v: v > 1.0), timeout=WAIT)
        assert max(rates, default=0) < 80e6 * 1.5  # every accepted change, none a spike
        assert value(hub, f"{base}/p2/in_rate") == pytest.approx(80e6, rel=0.25)


async def test_a_stopped_agent_is_unreachable_then_recovers(tmp_path: Path, snmpd: Snmpd) -> None:
    config = hub_config(on_snmpd(snmpd, "sw", timeout=0.3, ports=[LO]))
    async with running_hub(config, tmp_path, plugins=[switches]) as hub:
        name = f"net/switches/sw/p{LO}/name"
        await polled(hub, "sw")
        await anyio.to_thread.run_sync(snmpd.stop)
        try:
            alarm = await wait_for_alarm(hub, "sw:communication_lost", lambda a: a.active, WAIT)
            assert alarm.priority.name == "HIGH"
            assert hub.points.value(name).quality == Quality.bad("comm_failure")
        finally:
            await anyio.to_thread.run_sync(snmpd.start)
        await wait_for_point(hub, name, good(lambda v: v == "lo"), timeout=WAIT)
        await wait_for_alarm(hub, "sw:communication_lost", lambda a: not a.active, WAIT)


async def test_a_v3_switch_swapped_for_a_spare_with_a_new_engine_id_is_reached_again(
    tmp_path: Path,
) -> None:
    # Two snmpd with their own persistent directories, so their own engine IDs, and the
    # same user and keys (the spare is configured like the switch it replaces), one
    # after the other on the same port.
    first = Snmpd(tmp_path / "switch")
    spare = Snmpd(tmp_path / "spare", port=first.port)
    listen = f"127.0.0.1:{free_udp_port()}"
    config = hub_config(on_snmpd(first, "sw", version="v3", ports=[LO], trap_listen=listen))
    credentials = UsmCredentials(first.user, first.auth_key, first.priv_key)
    name = f"net/switches/sw/p{LO}/name"
    await anyio.to_thread.run_sync(first.start)
    try:
        async with running_hub(config, tmp_path, plugins=[switches]) as hub:
            await polled(hub, "sw")
            async with SnmpManager() as manager:
                old_id = await manager.client("127.0.0.1", first.port, credentials=credentials).engine_id()  # fmt: skip
            await anyio.to_thread.run_sync(first.stop)
            await wait_for_alarm(hub, "sw:communication_lost", lambda a: a.active, WAIT)
            await anyio.to_thread.run_sync(spare.start)
            async with SnmpManager() as manager:
                new_id = await manager.client("127.0.0.1", spare.port, credentials=credentials).engine_id()  # fmt: skip
            assert new_id != old_id
            await wait_for_alarm(hub, "sw:communication_lost", lambda a: not a.active, 3 * WAIT)
            await wait_for_point(hub, name, good(lambda v: v == "lo"), timeout=WAIT)
            lost = hub.alarms.get("sw:communication_lost")
            assert (lost.counts["raised"], lost.counts["cleared"]) == (1, 1)
            # The spare's v3 traps, signed with its own engine ID, are accepted too.
            link_down = [LINK_DOWN, f"{IF_INDEX}.{LO}", "i", str(LO), f"{IF_OPER_STATUS}.{LO}", "i", "2"]  # fmt: skip
            v3 = ["-v3", "-e", new_id.hex(), "-u", spare.user, "-l", "authPriv", "-a", "SHA"]
            v3 += ["-A", spare.auth_key, "-x", "AES", "-X", spare.priv_key, f"udp:{listen}", "0"]
            oper = f"net/switches/sw/p{LO}/oper_status"
            seen: list[Any] = []  # the next poll sets lo back up: record what the trap did
            hub.points.add_listener(lambda p, new: seen.append(new.value) if p.id == oper else None)
            await anyio.to_thread.run_sync(lambda: snmptrap(*v3, *link_down))
            with anyio.fail_after(WAIT):
                while 2 not in seen:  # noqa: ASYNC110  (a listener, not an event, records it)
                    await anyio.sleep(0.05)
    finally:
        await anyio.to_thread.run_sync(first.stop)
        await anyio.to_thread.run_sync(spare.stop)


async def test_wrong_credentials_are_a_config_error_and_an_alarm_not_a_retry_storm(
    tmp_path: Path, snmpd: Snmpd
) -> None:
    async with SnmpManager() as manager:
        probe_v2c = manager.client("127.0.0.1", snmpd.port, credentials=CommunityCredentials("public"))  # fmt: skip
        counters = (SNMP_IN_BAD_COMMUNITY_NAMES, USM_STATS_WRONG_DIGESTS)
        before = await probe_v2c.get(*counters)
        config = hub_config(
            on_snmpd(snmpd, "sw-community", community="not-the-community", ports=[LO]),
            on_snmpd(snmpd, "sw-password", version="v3", auth_key="not-the-password", ports=[LO]),
        )
        async with running_hub(config, tmp_path, plugins=[switches]) as hub:
            for device in ("sw-community", "sw-password"):
                await wait_for_alarm(hub, f"{device}:communication_lost", lambda a: a.active, WAIT)
                quality = hub.points.value(f"net/switches/{device}/p{LO}/name").quality
                assert quality == Quality.bad("config_error")
                state = hub.supervisor.drivers[device]
                assert state.last_reason == "config_error" and state.next_attempt_in >= 60
            await anyio.sleep(1.5)  # a storm would show here: restarts back off from 0.5 s
            assert [hub.supervisor.drivers[d].restarts for d in ("sw-community", "sw-password")] == [1, 1]  # fmt: skip
        after = await probe_v2c.get(*counters)
    # One request, retried once (timeout), for the community; one report for the password.
    assert after[SNMP_IN_BAD_COMMUNITY_NAMES] - before[SNMP_IN_BAD_COMMUNITY_NAMES] <= 2
    assert after[USM_STATS_WRONG_DIGESTS] - before[USM_STATS_WRONG_DIGESTS] <= 2


# --------------------------------------------------------------------------- config


def test_config_mistakes_are_named_before_the_hub_starts() -> None:
    data = {
        "site": {"name": "Réseau"},
        "zones": [{"id": "net", "name": "Réseau"}],
        "devices": [
            {"id": f"sw-{n}", "type": "switches.switch", "zone": "net", "config": config}
            for n, config in enumerate(
                [
                    {"host": "10.0.0.1", "ports": 4, "critical_ports": [9]},
                    {"host": "10.0.0.2", "version": "v3", "user": "noc", "auth_key": "short"},
                    {"host": "10.0.0.3", "trap_listen": "162"},
                ]
            )
        ],
    }
    problems = check_config(parse_config(data), make_plugin_manager(entry_points=False))
    assert len(problems) == 3, problems
    assert "devices[0].config" in problems[0] and "critical_ports [9]" in problems[0]
    assert "devices[1].config" in problems[1] and "8 characters" in problems[1]
    assert "devices[2].config" in problems[2] and "address:port" in problems[2]


def test_two_switches_sending_traps_from_one_address_are_reported() -> None:
    data = {
        "site": {"name": "Réseau"},
        "zones": [{"id": "net", "name": "Réseau"}],
        "devices": [
            {"id": f"sw-{n}", "type": "switches.switch", "zone": "net", "config": config}
            for n, config in enumerate(
                [
                    {"host": "10.0.0.1"},
                    {"host": "10.0.0.2", "trap_source": "10.0.0.1"},
                    {"host": "10.0.0.3", "trap_listen": ""},
                ]
            )
        ],
    }
    problems = check_config(parse_config(data), make_plugin_manager(entry_points=False))
    assert len(problems) == 1 and "devices[1].config.trap_source" in problems[0]
    assert "sw-1" in problems[0] and "sw-0" in problems[0]
