"""The Modbus HAL: codec, read plans, profiles, and real TCP against the simulators."""

from __future__ import annotations

import logging
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from pymodbus.pdu import ModbusPDU

from cityvisor.core.devices import DeviceError
from cityvisor.core.points import Quality, Scaling
from cityvisor.hal.modbus import (
    ModbusConnectionError,
    ModbusDevice,
    ModbusEndpoint,
    ModbusExceptionError,
    ModbusPool,
    ModbusSettings,
    ModbusTimeoutError,
    Profile,
    ProfileError,
    ReadPlan,
    RegisterSpec,
    Table,
    TcpAddress,
    ValueType,
    bundled_profiles,
    exception_quality,
    load_profile,
)
from cityvisor.hal.sim.lighting import LightingSimulator
from cityvisor.hal.sim.modbus_server import ModbusSimulator
from tests.hal.modbus_fixtures import HOST, free_port, rogue_server

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    ("vtype", "value"),
    [
        (ValueType.U16, 65535),
        (ValueType.I16, -12345),
        (ValueType.U32, 0x075BCD15),
        (ValueType.I32, -2),
        (ValueType.U64, 2**63 + 5),
        (ValueType.I64, -(2**40)),
        (ValueType.F32, 230.5),
        (ValueType.F64, -1.0e-3),
    ],
)
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_every_type_round_trips_in_every_order(
    vtype: ValueType, value: float, word_order: str, byte_order: str
) -> None:
    spec = RegisterSpec(
        Table.HOLDING,
        0,
        vtype,
        word_order=word_order,
        byte_order=byte_order,  # type: ignore[arg-type]
    )
    words = spec.encode(value)
    assert len(words) == vtype.width
    assert spec.decode(words) == value


def test_word_and_byte_order_lay_out_a_32_bit_value_as_documented() -> None:
    value = 0x075BCD15  # 123456789
    layout = {
        ("big", "big"): [0x075B, 0xCD15],  # ABCD
        ("little", "big"): [0xCD15, 0x075B],  # CDAB
        ("big", "little"): [0x5B07, 0x15CD],  # BADC
        ("little", "little"): [0x15CD, 0x5B07],  # DCBA
    }
    for (word_order, byte_order), words in layout.items():
        spec = RegisterSpec(
            Table.INPUT,
            0,
            ValueType.U32,
            word_order=word_order,
            byte_order=byte_order,  # type: ignore[arg-type]
        )
        assert spec.encode(value) == words, (word_order, byte_order)
        assert spec.decode(words) == value


def test_scaling_converts_raw_counts_to_engineering_units_both_ways() -> None:
    spec = RegisterSpec(Table.INPUT, 0, ValueType.I16, scaling=Scaling(0.1))
    assert spec.decode([struct.unpack(">H", struct.pack(">h", -35))[0]]) == pytest.approx(-3.5)
    assert spec.encode(-3.5) == [0xFFDD]
    offset = RegisterSpec(Table.HOLDING, 0, ValueType.U16, scaling=Scaling(0.5, -40.0))
    assert offset.decode([100]) == 10.0
    assert offset.encode(10.0) == [100]


def test_a_bit_of_a_register_reads_and_writes_alone() -> None:
    spec = RegisterSpec(Table.HOLDING, 0, ValueType.BOOL, bit=3)
    assert spec.decode([0b1000]) is True
    assert spec.decode([0b0111]) is False
    assert spec.encode(True, current=0b0001) == [0b1001]
    assert spec.encode(False, current=0xFFFF) == [0xFFF7]


def test_a_value_that_does_not_fit_its_register_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        RegisterSpec(Table.HOLDING, 0, ValueType.U16).encode(70000)
    with pytest.raises(ValueError, match="does not fit"):
        RegisterSpec(Table.HOLDING, 0, ValueType.U16, scaling=Scaling(0.1)).encode(-1)


# --------------------------------------------------------------------------- read plans


def _registers(*addresses: int, table: Table = Table.INPUT) -> dict[str, RegisterSpec]:
    return {f"p{a}": RegisterSpec(table, a, ValueType.U16) for a in addresses}


def test_neighbours_closer_than_the_gap_are_read_together() -> None:
    plan = ReadPlan(_registers(0, 1, 5, 20, 21), max_gap=3)
    assert [(b.address, b.count) for b in plan.blocks] == [(0, 6), (20, 2)]
    assert ReadPlan(_registers(0, 1, 5), max_gap=0).blocks[0].count == 2


def test_a_block_never_exceeds_125_registers_or_2000_bits() -> None:
    plan = ReadPlan(_registers(*range(0, 300, 2)), max_gap=8)
    assert all(b.count <= 125 for b in plan.blocks)
    assert sum(len(b.points) for b in plan.blocks) == 150
    assert len(plan) == 3
    coils = {f"c{a}": RegisterSpec(Table.COIL, a, ValueType.BOOL) for a in range(4100)}
    bit_plan = ReadPlan(coils)
    assert [b.count for b in bit_plan.blocks] == [2000, 2000, 100]


def test_a_32_bit_value_is_never_split_across_two_blocks() -> None:
    specs = _registers(*range(0, 124))
    specs["energy"] = RegisterSpec(Table.INPUT, 124, ValueType.U32)
    plan = ReadPlan(specs)
    assert [(b.address, b.count) for b in plan.blocks] == [(0, 124), (124, 2)]


def test_bits_of_one_status_word_share_one_register() -> None:
    specs = {f"b{i}": RegisterSpec(Table.INPUT, 7, ValueType.BOOL, bit=i) for i in range(16)}
    plan = ReadPlan(specs)
    assert [(b.address, b.count, len(b.points)) for b in plan.blocks] == [(7, 1, 16)]


def test_tables_are_never_merged() -> None:
    specs = {**_registers(0, table=Table.INPUT), "h": RegisterSpec(Table.HOLDING, 1, ValueType.U16)}
    assert len(ReadPlan(specs)) == 2


def test_the_lighting_profile_reads_eight_circuits_in_four_requests(
    lighting_profile: Profile,
) -> None:
    plan = ReadPlan.for_profile(lighting_profile, {"circuit": 8})
    assert plan.points == 7 + 8 * 7
    assert len(plan) == 4  # one per table


# --------------------------------------------------------------------------- profiles


def test_bundled_profiles_load() -> None:
    assert {"lighting_cabinet", "bollard_plc"} <= set(bundled_profiles())
    for name in bundled_profiles():
        assert load_profile(name).name == name


def test_member_points_get_relative_ids_and_strided_addresses(lighting_profile: Profile) -> None:
    specs = lighting_profile.resolve({"circuit": 3})
    assert specs["c1/level"].address == 10
    assert specs["c3/level"].address == 26
    assert specs["c3/on"].address == 2  # the coil's own stride
    assert specs["c2/energy"].type is ValueType.U32
    named = lighting_profile.resolve({"circuit": ["north", "south"]})
    assert named["south/level"].address == 18


def test_a_profile_needs_the_member_count(lighting_profile: Profile) -> None:
    with pytest.raises(ProfileError, match=r"points\.on\.per"):
        lighting_profile.resolve()
    with pytest.raises(ProfileError, match="at most 16"):
        lighting_profile.resolve({"circuit": 17})


GOOD_HEAD = '[profile]\nname = "t"\n'


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[points.x]\ntable = "coil"\naddress = 0\nbit = 2\n', "points.x.bit"),
        ('[points.x]\ntable = "input"\naddress = 0\ntype = "bool"\n', "points.x.bit"),
        ('[points.x]\ntable = "input"\naddress = 0\nwritable = true\n', "points.x.writable"),
        ('[points.x]\ntable = "input"\naddress = 0\nper = "door"\n', "points.x.per"),
        ('[points.x]\ntable = "input"\naddress = 0\nadress = 3\n', "points.x.adress"),
        ('[points.x]\ntable = "register"\naddress = 0\n', "points.x.table"),
        ('[points.x]\ntable = "input"\naddress = 70000\n', "points.x.address"),
        ('[points.x]\ntable = "coil"\naddress = 0\nscale = 2.0\n', "points.x.scale"),
        ('[points.x]\ntable = "input"\naddress = 65535\ntype = "u32"\n', "points.x.address"),
        (
            '[points.x]\ntable = "input"\naddress = 0\nbit = 0\nbit_stride = 1\n',
            "points.x.bit_stride",
        ),
        (
            '[members.c]\n[points.x]\ntable = "input"\naddress = 0\nper = "c"\nbit_stride = 1\n',
            "points.x.bit_stride",
        ),
        (
            '[members.c]\nmax = 64\n[points.x]\ntable = "input"\naddress = 65535\nper = "c"\n'
            "bit = 0\nbit_stride = 1\n",
            "points.x.address",
        ),
    ],
)
def test_profile_errors_name_the_file_and_the_key(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "vendor.toml"
    path.write_text(GOOD_HEAD + body, encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(path) in str(caught.value)
    assert caught.value.key == key


SHARED_BITS = """
[profile]
name = "shared_bits"

[members.circuit]
prefix = "c"
max = 8
stride = 8

[points.level]
per = "circuit"
table = "holding"
address = 0

[points.on]
per = "circuit"
table = "holding"
address = 100
bit = 0
bit_stride = 1      # c1 bit 0, c2 bit 1... of holding 100

[points.fault]
per = "circuit"
table = "input"
address = 200
bit = 2
bit_stride = 4      # c1 bit 2, c2 bit 6, c3 bit 10, c4 bit 14, c5 bit 2 of 201...
"""


def test_each_circuit_can_have_its_own_bit_of_one_shared_register() -> None:
    specs = Profile.from_toml(SHARED_BITS).resolve({"circuit": 5})
    assert [(specs[f"c{n}/on"].address, specs[f"c{n}/on"].bit) for n in (1, 2, 5)] == [
        (100, 0),
        (100, 1),
        (100, 4),
    ]
    fault = [(specs[f"c{n}/fault"].address, specs[f"c{n}/fault"].bit) for n in range(1, 6)]
    assert fault == [(200, 2), (200, 6), (200, 10), (200, 14), (201, 2)]
    assert specs["c2/level"].address == 8  # the group's stride still applies to the others
    # Five points, one register, one read.
    blocks = [(b.table, b.address, b.count, len(b.points)) for b in ReadPlan(specs).blocks]
    assert (Table.HOLDING, 100, 1, 5) in blocks


async def test_circuits_sharing_a_register_are_read_and_written_bit_by_bit(
    pool: ModbusPool,
) -> None:
    profile = Profile.from_toml(SHARED_BITS)
    sim = ModbusSimulator(HOST, 0, profile=profile, units=[1], members={"circuit": 5})
    async with sim, pool.tcp(HOST, sim.port) as endpoint:
        cabinet = endpoint.device(1, profile, {"circuit": 5})
        await cabinet.write("c3/on", True)
        await cabinet.write("c1/on", True)
        assert await sim.raw(1, Table.HOLDING, 100) == [0b101]
        await cabinet.write("c3/on", False)
        assert await sim.raw(1, Table.HOLDING, 100) == [0b001]
        await sim.set(1, "c5/fault", True)
        await sim.set(1, "c2/fault", True)
        result = await cabinet.poll()
        assert [result[f"c{n}/on"] for n in range(1, 6)] == [True, False, False, False, False]
        assert [result[f"c{n}/fault"] for n in range(1, 6)] == [False, True, False, False, True]
        assert await sim.raw(1, Table.INPUT, 200, 2) == [1 << 6, 1 << 2]


def test_a_profile_that_is_not_toml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[profile\nname=", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile(path)


DOCS = Path(__file__).parents[2] / "docs" / "modbus-profiles.md"


def test_the_documented_example_is_a_valid_profile() -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    profile = Profile.from_toml(example, source="docs/modbus-profiles.md")
    specs = profile.resolve({"circuit": 2})
    assert specs["c2/level"].address == 18
    assert specs["c2/on"].address == 1
    assert specs["breaker_tripped"].bit == 0


def test_every_bundled_point_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in bundled_profiles():
        for point in load_profile(name).points:
            assert f"`{point}`" in text or f"`cN/{point}`" in text, (name, point)


# --------------------------------------------------------------------------- against the simulator


async def test_values_arrive_scaled_and_typed(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> None:
    lighting_sim.set_temperature(2, -3.5)
    lighting_sim.set_door(2, True)
    lighting_sim.trip_breaker(2)
    await lighting_sim.next_tick()
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        cabinet = endpoint.device(2, lighting_profile, {"circuit": 8})
        result = await cabinet.poll()
    assert not result.bad
    assert result["temperature"] == pytest.approx(-3.5)
    assert result["door_open"] is True
    assert result["mains_present"] is True
    assert result["breaker_tripped"] is True
    assert result["surge_arrester_fault"] is False
    assert result["mains_voltage"] == pytest.approx(230.0)
    assert result["c8/setpoint"] == pytest.approx(100.0)
    assert result["c8/lamps"] == 20
    assert result["ramp_rate"] == pytest.approx(100.0)
    assert result.requests == 4


@pytest.mark.parametrize(
    ("word_order", "wire"), [("big", [0x075B, 0xCD15]), ("little", [0xCD15, 0x075B])]
)
async def test_32_bit_energy_in_either_word_order(
    pool: ModbusPool, lighting_profile: Profile, word_order: str, wire: list[int]
) -> None:
    ReadPlan.for_profile(lighting_profile, {"circuit": 2})  # a plan cached for big-endian words
    profile = lighting_profile.with_defaults(word_order=word_order)
    assert profile.resolve({"circuit": 2})["c2/energy"].word_order == word_order
    async with LightingSimulator(
        HOST, 0, cabinets=1, circuits=2, profile=profile, tick=0.02
    ) as sim:
        sim.set_energy(1, 2, 123456.789)  # 123456789 Wh = 0x075BCD15
        await sim.next_tick()
        assert await sim.raw(1, Table.INPUT, 21, 2) == wire  # c2/energy on the wire
        async with pool.tcp(HOST, sim.port) as endpoint:
            result = await endpoint.device(1, profile, {"circuit": 2}).read("c2/energy")
    assert result["c2/energy"] == pytest.approx(123456.789)


async def test_writes_change_the_simulator_registers(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 8})
        await cabinet.write("c2/setpoint", 42.5)
        await cabinet.write("c2/on", True)
        await cabinet.write("ramp_rate", 12.5)
        assert await lighting_sim.raw(1, Table.HOLDING, 1, 1) == [425]
        assert await lighting_sim.get(1, "c2/on") is True
        assert await lighting_sim.get(1, "ramp_rate") == pytest.approx(12.5)
        assert await lighting_sim.get(2, "c2/on") is False  # the other cabinet is untouched

        # A 32-bit value is two registers in one request, in the spec's word order.
        spec = RegisterSpec(Table.HOLDING, 30, ValueType.I32, word_order="little", writable=True)
        before = endpoint.requests_by_function[16]
        await endpoint.write(1, spec, -2)
        assert endpoint.requests_by_function[16] == before + 1
        assert await lighting_sim.raw(1, Table.HOLDING, 30, 2) == [0xFFFE, 0xFFFF]

        with pytest.raises(ValueError, match="not writable"):
            await cabinet.write("c1/level", 10)
        with pytest.raises(KeyError):
            await cabinet.write("c9/setpoint", 10)


async def test_coalescing_reads_eight_circuits_in_one_request_instead_of_forty(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> None:
    # 8 circuits x 5 registers (level: 1, power: 2, energy: 2) = 40 registers.
    wanted = [f"c{n}/{p}" for n in range(1, 9) for p in ("level", "power", "energy")]
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 8}, only=wanted)
        lighting_sim.reset_counters()
        result = await cabinet.poll()
        assert set(result) == set(wanted) and not result.bad
        assert lighting_sim.request_count(unit=1) <= 3
        assert lighting_sim.request_count(unit=1, function_code=4) == 1

        # The whole cabinet (63 points) is one request per table, poll after poll,
        # with the plan computed once.
        full = endpoint.device(1, lighting_profile, {"circuit": 8})
        plan = full.plan
        lighting_sim.reset_counters()
        for _ in range(3):
            await full.poll()
        assert full.plan is plan
        assert lighting_sim.request_count(unit=1) == 3 * 4
        # Every cabinet of that model shares the plan.
        assert endpoint.device(2, lighting_profile, {"circuit": 8}).plan is plan
        assert endpoint.device(2, lighting_profile, {"circuit": 4}).plan is not plan


async def test_a_poll_says_which_values_changed_since_the_previous_one(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 8})
        first = await cabinet.poll()
        assert first.changed == first and not first.failed  # everything is news at first
        assert (await cabinet.poll()).changed == {}  # an idle cabinet: nothing

        lighting_sim.set_door(1, True)
        await lighting_sim.next_tick()
        door = await cabinet.poll()
        # The door contact changed, nothing else: the only value offered.
        assert door.changed == {"door_open": True}

        lighting_sim.set_busy(1)
        busy = await cabinet.poll()
        assert busy.changed == {}
        assert (
            busy.failed
            == busy.by_quality()
            == {Quality.bad("device_failure:device_busy"): list(busy)}
        )
        lighting_sim.set_busy(1, False)
        # Read again as they were before, the values are news after their points went bad.
        again = await cabinet.poll()
        assert again.changed == again and again == door
        # A read of some points (another plan) offers every value it read.
        some = await cabinet.read("door_open", "temperature")
        assert some.changed == some


async def test_two_units_behind_one_gateway_share_one_connection(
    lighting_sim: LightingSimulator, pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with (
        pool.tcp(HOST, lighting_sim.port) as first,
        pool.tcp(HOST, lighting_sim.port) as second,
    ):
        assert first is second
        one = first.device(1, lighting_profile, {"circuit": 8})
        two = second.device(2, lighting_profile, {"circuit": 8})
        lighting_sim.set_door(2, True)
        await lighting_sim.next_tick()
        async with (
            anyio.create_task_group() as group
        ):  # concurrent polls, one at a time on the wire
            for _ in range(3):
                group.start_soon(one.poll)
                group.start_soon(two.poll)
        results = [await one.poll(), await two.poll()]
        assert results[0]["door_open"] is False and results[1]["door_open"] is True
        assert lighting_sim.connections == 1
        assert lighting_sim.request_count(unit=1) == lighting_sim.request_count(unit=2) == 16
        assert first.requests_sent == 32
        assert len(pool.endpoints) == 1
    # The last user gone, the connection closes and the pool forgets the endpoint.
    assert not pool.endpoints
    with anyio.fail_after(2):
        while lighting_sim.open_connections:  # noqa: ASYNC110  (the server has no event for it)
            await anyio.sleep(0.01)


async def test_rtu_over_a_serial_line_reads_and_writes_through_the_same_profile(
    pty_pair: tuple[str, str], pool: ModbusPool, lighting_profile: Profile
) -> None:
    equipment, control_room = pty_pair
    async with (
        LightingSimulator(cabinets=2, circuits=8, serial=equipment, tick=0.02) as sim,
        pool.serial(control_room, baudrate=115200) as line,
    ):
        sim.set_temperature(2, 21.5)
        await sim.next_tick()
        cabinet = line.device(2, lighting_profile, {"circuit": 8})
        result = await cabinet.poll()
        assert not result.bad
        assert result["temperature"] == pytest.approx(21.5)
        await cabinet.write("c4/setpoint", 12.5)
        assert await sim.get(2, "c4/setpoint") == pytest.approx(12.5)
        assert sim.request_count(unit=2) == line.requests_sent == 5


async def test_requests_are_paced_by_the_minimum_interval(
    lighting_sim: LightingSimulator, lighting_profile: Profile
) -> None:
    pool = ModbusPool(ModbusSettings(min_interval=0.05))
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 8})
        await cabinet.poll()
        started = anyio.current_time()
        await cabinet.poll()  # 4 requests, each after a 50 ms pause
        assert anyio.current_time() - started >= 4 * 0.05 * 0.9


class OrderedSimulator(LightingSimulator):
    """A lighting simulator that records the order of the requests it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[tuple[int, int]] = []

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.order.append((pdu.dev_id, pdu.function_code))
        return super()._trace_pdu(sending, pdu)


async def test_a_unit_poll_holds_the_wire_for_all_its_blocks(
    pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with (
        OrderedSimulator(HOST, 0, cabinets=2, circuits=8, tick=0.02) as sim,
        pool.tcp(HOST, sim.port) as endpoint,
    ):
        units = [endpoint.device(unit, lighting_profile, {"circuit": 8}) for unit in (1, 2)]
        async with anyio.create_task_group() as group:
            for _ in range(3):
                for device in units:
                    group.start_soon(device.poll)
    # Six polls of four blocks: six runs of four requests of one unit, never mixed.
    assert len(sim.order) == 24
    runs = [sim.order[i : i + 4] for i in range(0, 24, 4)]
    assert all(len({unit for unit, _ in run}) == 1 for run in runs), sim.order
    assert [unit for unit, _ in sim.order[::4]].count(1) == 3


async def test_a_write_waits_for_the_poll_on_the_wire_not_for_every_poll_queued(
    lighting_sim: LightingSimulator, lighting_profile: Profile
) -> None:
    # Paced requests: ten units polling without pause keep the wire busy all the time.
    pool = ModbusPool(ModbusSettings(min_interval=0.005))
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        devices = [endpoint.device(1 + n % 2, lighting_profile, {"circuit": 8}) for n in range(10)]

        async def poll_forever(device: ModbusDevice) -> None:
            while True:
                await device.poll()

        async with anyio.create_task_group() as group:
            for device in devices:
                group.start_soon(poll_forever, device)
            for _ in range(3):
                await anyio.sleep(0.05)  # every poller queued, one on the wire
                before = endpoint.requests_sent
                await devices[0].write("c3/setpoint", 37.5)
                # At most the rest of the unit poll on the wire (4 blocks), then the
                # write: not the 9 polls queued behind it (36 requests).
                assert endpoint.requests_sent - before <= 4 + 1
            group.cancel_scope.cancel()
    assert await lighting_sim.get(1, "c3/setpoint") == pytest.approx(37.5)


async def test_a_wait_for_the_wire_cancelled_leaves_the_wire_usable(
    lighting_sim: LightingSimulator, lighting_profile: Profile
) -> None:
    pool = ModbusPool(ModbusSettings(min_interval=0.01))
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        devices = [endpoint.device(1, lighting_profile, {"circuit": 8}) for _ in range(4)]
        for _ in range(3):
            # Four polls and a write queued; everything but the poll on the wire gives up.
            with anyio.move_on_after(0.015):
                async with anyio.create_task_group() as group:
                    for device in devices:
                        group.start_soon(device.poll)
                    group.start_soon(devices[0].write, "c1/setpoint", 10.0)
        with anyio.fail_after(5):
            assert not (await devices[0].poll()).bad
            await devices[1].write("c1/setpoint", 20.0)
        assert not endpoint._busy and not endpoint._waiting_polls
        assert not endpoint._waiting_commands
    assert await lighting_sim.get(1, "c1/setpoint") == pytest.approx(20.0)


async def test_a_bit_of_a_register_is_written_in_one_turn_keeping_the_other_bits(
    lighting_sim: LightingSimulator, pool: ModbusPool
) -> None:
    spec = RegisterSpec(Table.HOLDING, 20, ValueType.BOOL, bit=2, writable=True)
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        await endpoint.write_register(1, 20, 0b1000_0001)
        before = endpoint.requests_by_function.copy()
        await endpoint.write(1, spec, True)
        assert await lighting_sim.raw(1, Table.HOLDING, 20, 1) == [0b1000_0101]
        await endpoint.write(1, spec, False)
        assert await lighting_sim.raw(1, Table.HOLDING, 20, 1) == [0b1000_0001]
        # Each: one read of the register, one write of it.
        assert endpoint.requests_by_function - before == Counter({3: 2, 6: 2})


# --------------------------------------------------------------------------- failures


async def test_an_unmapped_address_is_bad_quality_naming_the_exception(
    lighting_sim: LightingSimulator, pool: ModbusPool
) -> None:
    profile = Profile.from_toml(
        GOOD_HEAD
        + '[points.temperature]\ntable = "input"\naddress = 0\ntype = "i16"\nscale = 0.1\n'
        + '[points.missing]\ntable = "holding"\naddress = 5000\n',
        source="test.toml",
    )
    async with pool.tcp(HOST, lighting_sim.port) as endpoint:
        device = endpoint.device(1, profile)
        result = await device.poll()
        assert result["missing"] == Quality.bad("config_error:illegal_data_address")
        assert result["temperature"] == pytest.approx(18.0)  # the other block still read
        assert result.by_quality() == {result["missing"]: ["missing"]}

        with pytest.raises(ModbusExceptionError) as caught:
            await endpoint.read(1, Table.HOLDING, 5000, 1)
        assert caught.value.code == 2 and caught.value.name == "illegal_data_address"

        lighting_sim.set_busy(1)
        busy = await device.poll()
        assert busy["temperature"] == Quality.bad("device_failure:device_busy")
        lighting_sim.set_busy(1, False)
        assert set((await device.poll()).good) == {"temperature"}


def test_exception_codes_map_to_quality_classes() -> None:
    assert exception_quality(1) == Quality.bad("config_error:illegal_function")
    assert exception_quality(4) == Quality.bad("device_failure:server_device_failure")
    assert exception_quality(11) == Quality.bad("comm_failure:gateway_target_no_response")
    assert exception_quality(99) == Quality.bad("device_failure:exception_99")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("truncated", "comm_failure:timeout"),
        ("silent", "comm_failure:timeout"),
        ("bad_byte_count", "comm_failure:malformed_reply"),
        ("short", "comm_failure:malformed_reply"),
        ("wrong_function", "comm_failure:malformed_reply"),
        ("garbage", "comm_failure:malformed_reply"),
    ],
)
async def test_a_malformed_reply_is_bad_quality_not_a_crash(
    pool: ModbusPool, settings: ModbusSettings, lighting_profile: Profile, mode: str, reason: str
) -> None:
    async with rogue_server(mode) as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 2})
        for _ in range(2):  # and the endpoint stays usable
            started = anyio.current_time()
            result = await cabinet.poll()
            assert anyio.current_time() - started < settings.timeout + 0.5
            assert result.good == {}
            assert set(result.values()) == {Quality.bad(reason)}
        if reason.endswith("timeout"):
            # After a timeout the rest of the poll is not sent: one dead unit must not
            # cost one timeout per block.
            assert result.requests == 1


async def test_the_timeout_is_the_request_timeout_not_the_connection_timeout(
    pool: ModbusPool, settings: ModbusSettings, lighting_profile: Profile
) -> None:
    assert settings.timeout < settings.connect_timeout
    async with rogue_server("silent") as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 2})
        await endpoint.connect()
        started = anyio.current_time()
        result = await cabinet.poll()
        elapsed = anyio.current_time() - started
    assert set(result.values()) == {Quality.bad("comm_failure:timeout")}
    assert settings.timeout * 0.9 <= elapsed < settings.connect_timeout


async def test_the_safety_net_ends_a_turn_that_pymodbus_never_times_out(
    pool: ModbusPool,
    settings: ModbusSettings,
    lighting_profile: Profile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pymodbus whose own per-request timeout would wait a minute.
    def never(client: Any, seconds: float) -> None:
        client.ctx.comm_params.timeout_connect = 60.0

    monkeypatch.setattr(ModbusEndpoint, "_wire_timeout", staticmethod(never))
    async with rogue_server("silent") as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 2})
        started = anyio.current_time()
        result = await cabinet.poll()
        elapsed = anyio.current_time() - started
        assert set(result.values()) == {Quality.bad("comm_failure:timeout")}
        assert result.requests == 1
        # Within the turn's deadline: a connection and (blocks + 1) timeouts.
        assert elapsed < settings.connect_timeout + 5 * settings.timeout + 0.5
        with pytest.raises(ModbusTimeoutError, match="deadline"):
            await endpoint.read(1, Table.INPUT, 0, 1)


async def test_a_dead_unit_does_not_fill_the_log(
    pool: ModbusPool, lighting_profile: Profile, caplog: pytest.LogCaptureFixture
) -> None:
    async with rogue_server("silent") as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
        with caplog.at_level(logging.INFO):
            for _ in range(4):
                await cabinet.poll()
    # The timeouts are qualities; only the endpoint's reopening is worth a line.
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages and all("timeouts in a row, reopening" in m for m in messages), messages


async def test_a_connection_lost_mid_request_fails_at_once_not_at_the_timeout(
    pool: ModbusPool, settings: ModbusSettings, lighting_profile: Profile
) -> None:
    async with rogue_server("hangup") as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
        started = anyio.current_time()
        with pytest.raises(ModbusConnectionError, match="lost during a request"):
            await cabinet.poll()
        assert anyio.current_time() - started < settings.timeout / 2
        assert endpoint.requests_sent == 1


async def test_a_silent_unit_makes_poll_every_give_up(
    pool: ModbusPool, lighting_profile: Profile
) -> None:
    async with rogue_server("silent") as port, pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
        polls = 0
        with pytest.raises(ModbusConnectionError, match="has not answered"):
            async for _result in cabinet.poll_every(0.01):
                polls += 1
        assert polls == 1  # unreachable_after=2: the second silent poll raises
        # A third timeout in a row: the (maybe half-open) connection is dropped...
        await cabinet.poll()
        assert not endpoint.connected
        # ...and reopened by the next request.
        await cabinet.poll()
        assert endpoint.connections == 2


async def test_a_stopped_simulator_fails_fast_and_the_same_endpoint_recovers(
    pool: ModbusPool, settings: ModbusSettings, lighting_profile: Profile
) -> None:
    port = free_port()
    async with pool.tcp(HOST, port) as endpoint:
        cabinet = endpoint.device(1, lighting_profile, {"circuit": 2})
        async with LightingSimulator(HOST, port, cabinets=1, circuits=2, tick=0.02):
            assert not (await cabinet.poll()).bad
            assert endpoint.connected

        # The gateway went away.
        started = anyio.current_time()
        with pytest.raises(ModbusConnectionError) as caught:
            await cabinet.poll()
        assert anyio.current_time() - started < settings.timeout
        assert isinstance(caught.value, DeviceError)
        assert caught.value.reason == "comm_failure"

        # Within the backoff the endpoint does not even try, and says when it will.
        with pytest.raises(ModbusConnectionError) as again:
            await cabinet.poll()
        assert again.value.retry_after is not None and again.value.retry_after > 0

        async with LightingSimulator(HOST, port, cabinets=1, circuits=2, tick=0.02) as back:
            with anyio.fail_after(3):
                while True:
                    try:
                        result = await cabinet.poll()
                        break
                    except ModbusConnectionError:
                        await anyio.sleep(0.02)
            assert not result.bad
            assert endpoint.connections == 2
            assert back.connections == 1


async def test_an_unreachable_endpoint_backs_off_exponentially_up_to_the_cap() -> None:
    endpoint = ModbusEndpoint(
        TcpAddress(HOST, free_port()), ModbusSettings(min_backoff=0.01, max_backoff=0.04)
    )
    delays = []
    for _ in range(5):
        with pytest.raises(ModbusConnectionError) as caught:
            await endpoint.connect()
        delays.append(caught.value.retry_after)
        await anyio.sleep(caught.value.retry_after or 0)
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.04, 0.04])
    assert endpoint.requests_sent == 0


async def test_the_backoff_outlives_the_endpoints_users_and_only_an_answer_resets_it(
    pool: ModbusPool, settings: ModbusSettings, lighting_profile: Profile
) -> None:
    async def failed_attempts(port: int, count: int) -> list[float | None]:
        """Borrow the endpoint afresh for each attempt, as a restarted driver does."""
        delays = []
        for _ in range(count):
            async with pool.tcp(HOST, port) as endpoint:
                cabinet = endpoint.device(1, lighting_profile, {"circuit": 1})
                with pytest.raises(ModbusConnectionError) as caught:
                    await cabinet.poll()
            delays.append(caught.value.retry_after)
            await anyio.sleep(caught.value.retry_after or 0)
        return delays

    steps = [settings.min_backoff * 2**n for n in range(3)]
    # Refused: the count goes on from one user to the next.
    assert await failed_attempts(free_port(), 3) == pytest.approx(steps)
    # Accepted then closed at once: a connection that opens is no success either.
    async with rogue_server("close") as port:
        assert await failed_attempts(port, 3) == pytest.approx(steps)
        assert not pool.endpoints  # nobody uses it, yet it keeps its count
    # An answer resets it: the next failure waits the minimum again.
    sim = LightingSimulator(HOST, port, cabinets=1, circuits=1, tick=0.02)
    async with sim, pool.tcp(HOST, port) as endpoint:
        assert not (await endpoint.device(1, lighting_profile, {"circuit": 1}).poll()).bad
    assert await failed_attempts(port, 1) == pytest.approx(steps[:1])
