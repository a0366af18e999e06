"""The SNMP HAL against real peers: net-snmp's snmpd and snmptrap, and the switch simulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

from cityvisor.hal.sim.switch import SimulatedSwitch, simulated_switches
from cityvisor.hal.snmp import (
    IF_ADMIN_STATUS,
    IF_DESCR,
    IF_HC_IN_OCTETS,
    IF_IN_OCTETS,
    IF_INDEX,
    IF_NAME,
    IF_OPER_STATUS,
    IF_TYPE,
    LINK_DOWN,
    LINK_UP,
    SNMP_IN_BAD_COMMUNITY_NAMES,
    SYS_DESCR,
    SYS_LOCATION,
    SYS_NAME,
    SYS_UPTIME,
    CommunityCredentials,
    CounterRate,
    IfAdminStatus,
    IfOperStatus,
    Notification,
    SnmpAuthError,
    SnmpClient,
    SnmpManager,
    SnmpSetRefusedError,
    SnmpTimeoutError,
    TimeTicks,
    TrapReceiver,
    UsmCredentials,
    to_python,
)
from tests.hal.snmpd import Snmpd, snmptrap

pytestmark = pytest.mark.anyio


@pytest.fixture
async def snmp() -> AsyncIterator[SnmpManager]:
    """A manager whose engines are closed after the test."""
    async with SnmpManager() as manager:
        yield manager


def v2c(snmp: SnmpManager, agent: Snmpd, community: str = "public", **options: float) -> SnmpClient:
    """A v2c client of the test agent."""
    options.setdefault("timeout", 0.5)
    return snmp.client(
        "127.0.0.1", agent.port, credentials=CommunityCredentials(community), **options
    )


def v3(
    snmp: SnmpManager, agent: Snmpd, auth_key: str | None = None, **options: float
) -> SnmpClient:
    """A v3 authPriv client of the test agent."""
    options.setdefault("timeout", 0.5)
    credentials = UsmCredentials(agent.user, auth_key or agent.auth_key, agent.priv_key)
    return snmp.client("127.0.0.1", agent.port, credentials=credentials, **options)


# --------------------------------------------------------------------------- reads


async def test_system_group_over_v2c(snmp: SnmpManager, snmpd: Snmpd) -> None:
    values = await v2c(snmp, snmpd).get(SYS_NAME, SYS_DESCR, SYS_UPTIME)
    assert values[SYS_NAME] == socket_hostname()
    assert isinstance(values[SYS_DESCR], str) and values[SYS_DESCR].startswith("Linux")
    assert isinstance(values[SYS_UPTIME], float) and values[SYS_UPTIME] >= 0


async def test_system_group_over_v3_auth_priv(snmp: SnmpManager, snmpd: Snmpd) -> None:
    client = v3(snmp, snmpd)
    values = await client.get(SYS_NAME, SYS_DESCR, SYS_UPTIME)
    assert values[SYS_NAME] == socket_hostname()
    assert isinstance(values[SYS_UPTIME], float)
    assert len(await client.engine_id()) >= 5


async def test_missing_object_reads_as_none(snmp: SnmpManager, snmpd: Snmpd) -> None:
    assert await v2c(snmp, snmpd).get_value("1.3.6.1.2.1.1.99.0") is None


@pytest.mark.parametrize("use_bulk", [True, False], ids=["getbulk", "getnext"])
async def test_walking_if_table_gives_the_machines_ports(
    snmp: SnmpManager, snmpd: Snmpd, use_bulk: bool
) -> None:
    client = snmp.client(
        "127.0.0.1",
        snmpd.port,
        credentials=CommunityCredentials("public"),
        timeout=0.5,
        use_bulk=use_bulk,
        max_repetitions=2,  # several round trips even on a machine with few interfaces
    )
    rows = await client.walk_table(
        {
            "index": IF_INDEX,
            "descr": IF_DESCR,
            "type": IF_TYPE,
            "oper": IF_OPER_STATUS,
            "name": IF_NAME,
            "in": IF_HC_IN_OCTETS,
        }
    )
    names = {row["name"]: index for index, row in rows.items()}
    assert "lo" in names
    lo = rows[names["lo"]]
    assert lo["index"] == names["lo"]
    assert lo["type"] == 24  # softwareLoopback
    assert lo["oper"] == 1  # up
    assert isinstance(lo["in"], int)
    # The walk stopped at the end of each column: nothing from the next column leaked in.
    assert all(
        set(row) <= {"index", "descr", "type", "oper", "name", "in"} for row in rows.values()
    )
    assert list(rows) == sorted(rows)  # type: ignore[type-var]


async def test_walk_with_plain_column_oids(snmp: SnmpManager, snmpd: Snmpd) -> None:
    rows = await v2c(snmp, snmpd).walk_table([IF_NAME, IF_OPER_STATUS])
    assert any(row[IF_NAME] == "lo" for row in rows.values())


# --------------------------------------------------------------------------- writes


async def test_set_of_a_real_interface_is_refused_cleanly(snmp: SnmpManager, snmpd: Snmpd) -> None:
    # The agent's write view excludes interfaces: the refusal is an answer, not a crash.
    with pytest.raises(SnmpSetRefusedError) as refused:
        await v2c(snmp, snmpd, "private").set_admin_status(1, IfAdminStatus.UP)
    assert refused.value.status == "noAccess"
    assert refused.value.oid == f"{IF_ADMIN_STATUS}.1"
    assert refused.value.reason == "config_error"


async def test_set_with_the_read_only_community_is_refused(snmp: SnmpManager, snmpd: Snmpd) -> None:
    with pytest.raises(SnmpSetRefusedError) as refused:
        await v2c(snmp, snmpd, "public").set(SYS_LOCATION, "Dijon")
    assert refused.value.status == "noAccess"


async def test_set_of_a_read_only_object_is_not_writable(snmp: SnmpManager, snmpd: Snmpd) -> None:
    with pytest.raises(SnmpSetRefusedError) as refused:
        await v2c(snmp, snmpd, "private").set(SYS_UPTIME, TimeTicks(1))
    assert refused.value.status == "notWritable"


async def test_set_over_v3_is_confirmed(snmp: SnmpManager, snmpd: Snmpd) -> None:
    client = v3(snmp, snmpd)
    assert await client.set(SYS_LOCATION, "Dijon, salle de supervision") == (
        "Dijon, salle de supervision"
    )
    assert await client.get_value(SYS_LOCATION) == "Dijon, salle de supervision"


# --------------------------------------------------------------------------- failures


async def test_wrong_community_is_a_config_error_without_retry_storm(
    snmp: SnmpManager, snmpd: Snmpd
) -> None:
    before = await v2c(snmp, snmpd).get_value(SNMP_IN_BAD_COMMUNITY_NAMES)
    client = v2c(snmp, snmpd, "not-the-community", timeout=0.3, retries=1)
    started = time.monotonic()
    with pytest.raises(SnmpAuthError) as error:
        await client.get_value(SYS_NAME)
    elapsed = time.monotonic() - started
    assert error.value.reason == "config_error"
    assert error.value.retry_after is not None and error.value.retry_after >= 60
    assert "not-the-community" not in str(error.value)  # secrets never in messages
    # One request, retried once, plus one v3 probe: bounded time and packets.
    assert elapsed < 0.3 * 3 + 0.5
    assert client.requests == 1
    after = await v2c(snmp, snmpd).get_value(SNMP_IN_BAD_COMMUNITY_NAMES)
    assert isinstance(before, int) and after == before + 2


async def test_wrong_v3_password_is_a_config_error_at_once(snmp: SnmpManager, snmpd: Snmpd) -> None:
    client = v3(snmp, snmpd, auth_key="not-the-password", timeout=2.0, retries=3)
    started = time.monotonic()
    with pytest.raises(SnmpAuthError) as error:
        await client.get_value(SYS_NAME)
    # The agent reports usmStatsWrongDigests: no waiting for a timeout.
    assert time.monotonic() - started < 1.0
    assert error.value.reason == "config_error"
    assert error.value.retry_after is not None and error.value.retry_after >= 60
    assert "not-the-password" not in str(error.value)


async def test_wrong_v3_privacy_key_is_told_apart_from_a_dead_agent(
    snmp: SnmpManager, snmpd: Snmpd
) -> None:
    # snmpd drops what it cannot decrypt (a timeout); the v3 probe shows it is alive.
    credentials = UsmCredentials(snmpd.user, snmpd.auth_key, "not-the-privacy-key")
    client = snmp.client("127.0.0.1", snmpd.port, credentials=credentials, timeout=0.3)
    with pytest.raises(SnmpAuthError) as error:
        await client.get_value(SYS_NAME)
    assert error.value.reason == "config_error"
    assert client.requests == 1


async def test_stopped_agent_is_comm_failure_then_the_same_client_recovers(
    snmp: SnmpManager, snmpd: Snmpd
) -> None:
    clients = [v2c(snmp, snmpd, timeout=0.3, retries=1), v3(snmp, snmpd, timeout=0.3, retries=1)]
    for client in clients:
        assert await client.get_value(SYS_NAME)
    await anyio.to_thread.run_sync(snmpd.stop)
    try:
        for client in clients:
            started = time.monotonic()
            with pytest.raises(SnmpTimeoutError) as error:
                await client.get_value(SYS_NAME)
            assert error.value.reason == "comm_failure"
            assert time.monotonic() - started < 0.3 * 2 + 0.4
    finally:
        await anyio.to_thread.run_sync(snmpd.start)
    for client in clients:
        assert await client.get_value(SYS_NAME) == socket_hostname()


async def test_nothing_listening_is_comm_failure(snmp: SnmpManager) -> None:
    from tests.hal.snmpd import free_udp_port

    client = snmp.client(
        "127.0.0.1", free_udp_port(), credentials=CommunityCredentials("public"), timeout=0.2
    )
    with pytest.raises(SnmpTimeoutError):
        await client.get_value(SYS_NAME)


# --------------------------------------------------------------------------- traps


async def test_traps_from_snmptrap_reach_the_registered_device(snmpd: Snmpd) -> None:
    engine_id = "8000000001020304"
    async with TrapReceiver(
        "127.0.0.1",
        0,
        communities=["traps"],
        users=[UsmCredentials("trapuser", "trap-auth-key", "trap-priv-key")],
    ) as receiver:
        stream = receiver.open_stream("127.0.0.1", engine_id=bytes.fromhex(engine_id))
        other: list[Notification] = []
        receiver.register("127.0.0.2", other.append)
        target = f"udp:127.0.0.1:{receiver.address[1]}"
        link_down = [LINK_DOWN, f"{IF_INDEX}.3", "i", "3", f"{IF_ADMIN_STATUS}.3", "i", "1"]
        await anyio.to_thread.run_sync(
            lambda: snmptrap("-v2c", "-c", "traps", target, "4242", *link_down)
        )
        v3_args = ["-v3", "-e", engine_id, "-u", "trapuser", "-l", "authPriv", "-a", "SHA"]
        v3_args += ["-A", "trap-auth-key", "-x", "AES", "-X", "trap-priv-key"]
        await anyio.to_thread.run_sync(lambda: snmptrap(*v3_args, target, "4343", *link_down))
        with anyio.fail_after(5), stream:
            first = await stream.receive()
            second = await stream.receive()
        for notification, version, uptime in ((first, "v2c", 42.42), (second, "v3", 43.43)):
            assert notification.version == version
            assert notification.trap_oid == LINK_DOWN
            assert notification.if_index == 3
            assert notification.uptime == uptime
            assert notification.source[0] == "127.0.0.1"
        assert second.security_name == "trapuser"
        assert other == []
        assert receiver.dispatched == 2


async def test_traps_from_unknown_senders_or_communities_are_not_dispatched(
    snmpd: Snmpd,
) -> None:
    async with TrapReceiver("127.0.0.1", 0, communities=["traps"]) as receiver:
        target = f"udp:127.0.0.1:{receiver.address[1]}"

        def send(community: str) -> None:
            snmptrap("-v2c", "-c", community, target, "0", LINK_DOWN, f"{IF_INDEX}.9", "i", "9")

        await anyio.to_thread.run_sync(send, "traps")  # nobody registered 127.0.0.1 yet
        await anyio.to_thread.run_sync(send, "wrong-community")  # dropped by the engine
        with receiver.open_stream("127.0.0.1") as stream:
            await anyio.to_thread.run_sync(send, "traps")
            with anyio.fail_after(5):
                notification = await stream.receive()
        # Datagrams on loopback arrive in order: the earlier ones were handled before.
        assert notification.if_index == 9
        assert receiver.received == 2
        assert receiver.unknown_senders == 1
        assert receiver.dispatched == 1


async def test_the_receiver_runs_under_a_task_group_until_cancelled(snmpd: Snmpd) -> None:
    receiver = TrapReceiver("127.0.0.1", 0, communities=["traps"])
    async with anyio.create_task_group() as tg:
        await tg.start(receiver.run)
        with receiver.open_stream("127.0.0.1") as stream:
            target = f"udp:127.0.0.1:{receiver.address[1]}"
            await anyio.to_thread.run_sync(
                lambda: snmptrap("-v1", "-c", "traps", target, "", "127.0.0.1", "2", "0", "")
            )
            with anyio.fail_after(5):
                notification = await stream.receive()
            tg.cancel_scope.cancel()
    # A v1 linkDown (generic trap 2) arrives translated to the v2 form.
    assert notification.version == "v1"
    assert notification.trap_oid == LINK_DOWN
    # Stopped: the port is released and the device's stream has ended.
    async with TrapReceiver("127.0.0.1", receiver.address[1]):
        pass


async def test_a_full_device_stream_drops_instead_of_blocking(snmpd: Snmpd) -> None:
    async with TrapReceiver("127.0.0.1", 0, communities=["traps"]) as receiver:
        target = f"udp:127.0.0.1:{receiver.address[1]}"
        with receiver.open_stream("127.0.0.1", max_buffer=1) as stream:
            for uptime in ("1", "2", "3"):
                await anyio.to_thread.run_sync(
                    lambda uptime=uptime: snmptrap("-v2c", "-c", "traps", target, uptime, LINK_DOWN)
                )
            with anyio.fail_after(5):
                first = await stream.receive()
            assert first.uptime == 0.01
            with anyio.fail_after(5):
                while receiver.received < 3:  # noqa: ASYNC110 - counters, nothing to wait on
                    await anyio.sleep(0.01)
            assert receiver.dropped >= 1


# --------------------------------------------------------------------------- counters


def test_counter_rate_in_bits_per_second() -> None:
    rate = CounterRate(bits=64, scale=8)
    assert rate.update(1_000, uptime=10.0) is None
    assert rate.update(126_000, uptime=20.0) == 100_000.0  # 125 kB in 10 s = 100 kbit/s
    assert rate.delta == 125_000


def test_counter32_wrap_is_one_lap_not_a_negative_rate() -> None:
    rate = CounterRate(bits=32)
    rate.update(2**32 - 100, uptime=1.0)
    assert rate.update(400, uptime=2.0) == 500.0


def test_agent_restart_gives_no_rate_instead_of_a_spike() -> None:
    rate = CounterRate(bits=32, scale=8)
    rate.update(4_000_000_000, uptime=1000.0)
    assert rate.update(1_000, uptime=5.0) is None  # sysUpTime went backwards: rebooted
    assert rate.update(2_000, uptime=6.0) == 8_000.0  # and the next sample counts again


def test_counter64_reset_and_impossible_rates_are_dropped() -> None:
    rate = CounterRate(bits=64, max_rate=1e9)
    rate.update(10_000, uptime=1.0)
    assert rate.update(5, uptime=2.0) is None  # went backwards: reset, not a wrap
    assert rate.update(10**12, uptime=3.0) is None  # faster than the port: discontinuity
    assert rate.update(10**12 + 1000, uptime=4.0) == 1000.0


def test_error_rate_from_deltas() -> None:
    errors = CounterRate(bits=32)
    errors.update(7, uptime=100.0)
    assert errors.update(10, uptime=160.0) == 0.05
    assert errors.delta == 3


def test_same_tick_keeps_the_older_sample() -> None:
    rate = CounterRate()
    rate.update(100, uptime=5.0)
    assert rate.update(150, uptime=5.0) is None
    assert rate.update(200, uptime=6.0) == 100.0


def test_values_become_plain_python() -> None:
    from cityvisor.hal.snmp import Counter32, Counter64, IpAddress, ObjectIdentifier, OctetString

    assert to_python(Counter32(5)) == 5
    assert to_python(Counter64(2**40)) == 2**40
    assert to_python(TimeTicks(12345)) == 123.45
    assert to_python(OctetString(b"eth0\x00")) == "eth0"
    assert to_python(OctetString(b"caf\xc3\xa9")) == "café"
    assert to_python(OctetString(b"\x00\x1b\x21\x0a\xff\x01")) == "00:1b:21:0a:ff:01"
    assert to_python(IpAddress("10.1.2.3")) == "10.1.2.3"
    assert to_python(ObjectIdentifier("1.3.6.1.4.1.8072")) == "1.3.6.1.4.1.8072"


def test_credentials_never_show_their_secrets() -> None:
    text = repr(UsmCredentials("admin", "secret-auth", "secret-priv")) + repr(
        CommunityCredentials("secret-community")
    )
    assert "secret" not in text


def socket_hostname() -> str:
    """What snmpd reports as sysName by default."""
    import socket

    return socket.gethostname()


# --------------------------------------------------------------------------- the switch simulator

SIM_USER = UsmCredentials("noc", "sim-auth-key", "sim-priv-key")


async def test_simulator_serves_48_ports_over_v2c_and_v3(snmp: SnmpManager) -> None:
    async with SimulatedSwitch("sw-gare", ports=48, users=[SIM_USER]) as switch:
        host, port = switch.address
        columns = {"name": IF_NAME, "oper": IF_OPER_STATUS, "in": IF_HC_IN_OCTETS}
        for credentials in (CommunityCredentials("public"), SIM_USER):
            client = snmp.client(host, port, credentials=credentials, timeout=0.5)
            rows = await client.walk_table(columns)
            assert list(rows) == list(range(1, 49))
            assert rows[48]["name"] == "ge-0/0/48"
            assert all(row["oper"] == IfOperStatus.UP for row in rows.values())
            assert (await client.get(SYS_NAME))[SYS_NAME] == "sw-gare"
        # 48 rows x 3 columns in a handful of GETBULK round trips, not 144 GETNEXTs.
        assert client.requests <= 6


async def test_simulator_set_admin_down_takes_the_port_down_and_traps(snmp: SnmpManager) -> None:
    async with (
        TrapReceiver("127.0.0.1", 0, communities=["traps"]) as receiver,
        SimulatedSwitch(
            "sw-mairie", ports=8, trap_target=receiver.address, trap_community="traps"
        ) as switch,
    ):
        host, port = switch.address
        writer = snmp.client(host, port, credentials=CommunityCredentials("private"))
        with receiver.open_stream(host) as traps:
            await writer.set_admin_status(5, IfAdminStatus.DOWN)
            with anyio.fail_after(5):
                down = await traps.receive()
            rows = await writer.walk_table({"admin": IF_ADMIN_STATUS, "oper": IF_OPER_STATUS})
            assert rows[5] == {"admin": 2, "oper": 2}
            assert rows[4] == {"admin": 1, "oper": 1}
            await writer.set_admin_status(5, IfAdminStatus.UP)
            with anyio.fail_after(5):
                up = await traps.receive()
        assert (down.trap_oid, down.if_index) == (LINK_DOWN, 5)
        assert (up.trap_oid, up.if_index) == (LINK_UP, 5)
        assert switch.port(5).oper_status is IfOperStatus.UP


async def test_simulator_refuses_sets_like_a_switch(snmp: SnmpManager) -> None:
    async with SimulatedSwitch("sw-refus", ports=4) as switch:
        host, port = switch.address
        reader = snmp.client(host, port, credentials=CommunityCredentials("public"))
        writer = snmp.client(host, port, credentials=CommunityCredentials("private"))
        with pytest.raises(SnmpSetRefusedError) as refused:
            await reader.set_admin_status(1, IfAdminStatus.DOWN)
        assert refused.value.status == "noAccess"
        with pytest.raises(SnmpSetRefusedError) as refused:
            await writer.set(f"{IF_OPER_STATUS}.1", 2)
        assert refused.value.status == "notWritable"
        with pytest.raises(SnmpSetRefusedError) as refused:
            await writer.set(f"{IF_ADMIN_STATUS}.1", 3)
        assert refused.value.status == "wrongValue"
        assert switch.port(1).admin_up
        assert await writer.set(SYS_LOCATION, "Place Darcy") == "Place Darcy"
        assert switch.location == "Place Darcy"


async def test_simulator_link_loss_sends_a_v3_trap(snmp: SnmpManager) -> None:
    async with (
        TrapReceiver("127.0.0.1", 0, users=[SIM_USER]) as receiver,
        SimulatedSwitch(
            "sw-v3", ports=4, users=[SIM_USER], trap_target=receiver.address, trap_user=SIM_USER
        ) as switch,
    ):
        client = snmp.client(*switch.address, credentials=SIM_USER)
        # The receiver learns the switch's engine ID from the switch itself.
        engine_id = await client.engine_id()
        assert engine_id == switch.engine_id
        with receiver.open_stream("127.0.0.1", engine_id=engine_id) as traps:
            switch.set_link(2, up=False)
            with anyio.fail_after(5):
                notification = await traps.receive()
        assert notification.version == "v3"
        assert (notification.trap_oid, notification.if_index) == (LINK_DOWN, 2)
        assert await client.get_value(f"{IF_OPER_STATUS}.2") == IfOperStatus.DOWN


async def test_simulator_counters_give_the_configured_rates(snmp: SnmpManager) -> None:
    async with SimulatedSwitch(
        "sw-trafic", ports=2, traffic=(80_000_000, 40_000_000), counter_start=2**32 - 5_000_000
    ) as switch:
        client = snmp.client(*switch.address, credentials=CommunityCredentials("public"))
        rates = {"hc": CounterRate(bits=64, scale=8), "32": CounterRate(bits=32, scale=8)}
        results: dict[str, float | None] = {}
        for _sample in range(2):
            values = await client.get(SYS_UPTIME, f"{IF_HC_IN_OCTETS}.1", f"{IF_IN_OCTETS}.1")
            uptime = values[SYS_UPTIME]
            assert isinstance(uptime, float)
            for key, oid in (("hc", f"{IF_HC_IN_OCTETS}.1"), ("32", f"{IF_IN_OCTETS}.1")):
                counter = values[oid]
                assert isinstance(counter, int)
                results[key] = rates[key].update(counter, uptime)
            await anyio.sleep(0.6)  # 10 MB/s from 2**32 - 5 MB: the 32-bit counter wraps
        for key in ("hc", "32"):
            assert results[key] == pytest.approx(80_000_000, rel=0.1)
        switch.restart()
        values = await client.get(SYS_UPTIME, f"{IF_HC_IN_OCTETS}.1")
        assert rates["hc"].update(values[f"{IF_HC_IN_OCTETS}.1"], values[SYS_UPTIME]) is None


async def test_many_simulated_switches_in_one_process(snmp: SnmpManager) -> None:
    async with simulated_switches(3, ports=48) as switches:
        assert len({switch.address for switch in switches}) == 3
        for switch in switches:
            client = snmp.client(*switch.address, credentials=CommunityCredentials("public"))
            assert len(await client.walk_table([IF_OPER_STATUS])) == 48
    assert snmp.engine_count == 1  # every v2c client shared one socket


async def test_a_dedicated_engine_lives_as_long_as_its_client(
    snmp: SnmpManager, snmpd: Snmpd
) -> None:
    credentials = UsmCredentials(snmpd.user, snmpd.auth_key, snmpd.priv_key)
    shared = snmp.client("127.0.0.1", snmpd.port, credentials=credentials)
    own = snmp.client("127.0.0.1", snmpd.port, credentials=credentials, dedicated=True)
    assert own.engine is not shared.engine and snmp.engine_count == 2
    assert (await own.get(SYS_UPTIME))[SYS_UPTIME] is not None
    own.close()
    own.close()  # closing twice is harmless
    assert snmp.engine_count == 1
    shared.close()  # a shared engine stays with the manager
    assert (await shared.get(SYS_UPTIME))[SYS_UPTIME] is not None
