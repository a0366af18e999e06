"""The compiled decoders of the poll path give exactly what RegisterSpec.decode gives."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from cityvisor.core.points import Scaling
from cityvisor.hal.modbus import ReadPlan
from cityvisor.hal.modbus_profile import RegisterSpec, Table, ValueType, load_profile

ORDERS = ("big", "little")
SCALINGS = (None, Scaling(0.1), Scaling(0.001, -40.0))


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize(
    "vtype, word_order, byte_order",
    list(itertools.product([t for t in ValueType if t is not ValueType.BOOL], ORDERS, ORDERS)),
)
def test_numbers_decode_alike(vtype: ValueType, word_order: str, byte_order: str):
    rng = random.Random(f"{vtype}{word_order}{byte_order}")
    for scaling in SCALINGS if not vtype.is_float else (None, Scaling(2.0)):
        spec = RegisterSpec(
            Table.INPUT, 3, vtype, scaling=scaling, word_order=word_order, byte_order=byte_order
        )
        decode = spec.decoder()
        for _ in range(300):
            words = [
                rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(0x10000)))
                for _ in range(spec.width)
            ]
            padded = [rng.randrange(0x10000) for _ in range(3)] + words + [0xFFFF]
            assert same(decode(padded, 3), spec.decode(words)), (spec, words)


def test_bits_and_bits_of_registers_decode_alike():
    for table in (Table.COIL, Table.DISCRETE_INPUT):
        spec = RegisterSpec(table, 0, ValueType.BOOL)
        for value in (True, False, 1, 0):
            assert same(spec.decoder()([False, value], 1), spec.decode([value]))
    for bit in range(16):
        spec = RegisterSpec(Table.HOLDING, 0, ValueType.BOOL, bit=bit)
        for word in (0, 0xFFFF, 1 << bit, 0xFFFF ^ (1 << bit), 0x1234):
            assert same(spec.decoder()([7, word], 1), spec.decode([word]))


def test_a_block_decodes_every_point_of_a_bundled_profile():
    profile = load_profile("lighting_cabinet")
    plan = ReadPlan.for_profile(profile, {"circuit": 16})
    rng = random.Random(1)
    for block in plan.blocks:
        raw = [
            rng.random() < 0.5 if block.table.is_bit else rng.randrange(0x10000)
            for _ in range(block.count)
        ]
        decoded = block.decode(raw)
        for point_id, spec in block.points:
            start = spec.address - block.address
            assert same(decoded[point_id], spec.decode(raw[start : start + spec.width])), point_id


@pytest.mark.parametrize("name", ["lighting_cabinet", "bollard_plc"])
def test_decoding_the_changes_of_a_block_gives_what_decoding_it_all_gives(name: str):
    profile = load_profile(name)
    members = {kind: 4 for kind in profile.members}
    plan = ReadPlan.for_profile(profile, members)
    rng = random.Random(name)

    def item(block_is_bit: bool) -> object:
        return rng.random() < 0.5 if block_is_bit else rng.randrange(0x10000)

    for block in plan.blocks:
        before = [item(block.table.is_bit) for _ in range(block.count)]
        for changes in (0, 1, 2, 5, block.count):
            after = list(before)
            for index in rng.sample(range(block.count), min(changes, block.count)):
                after[index] = item(block.table.is_bit)
            news = block.decode_changes(before, after)
            merged = {**block.decode(before), **news}
            full = block.decode(after)
            assert merged.keys() == full.keys()
            assert all(same(merged[p], full[p]) for p in full)
            # Only the points whose items changed are decoded.
            touched = {i for i in range(block.count) if before[i] != after[i]}
            for point_id, spec in block.points:
                start = spec.address - block.address
                uses = set(range(start, start + spec.width))
                assert (point_id in news) == bool(uses & touched), point_id
