"""The point index and shared watches: patterns matched by branch, subscriptions shared per pattern set."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityvisor.core.patterns import compile_pattern
from cityvisor.core.points import Batch, DataType, PointDB, PointSpec, Resync
from cityvisor.core.points.index import PointIndex

pytestmark = pytest.mark.anyio

SPEC = PointSpec("value", DataType.FLOAT)

LEVEL = st.sampled_from(["a", "b", "cab-1", "cab-12", "x"])
IDS = st.lists(st.lists(LEVEL, min_size=1, max_size=4).map("/".join), unique=True, max_size=30)
PATTERN_LEVEL = st.sampled_from(["a", "b", "*", "**", "cab-*", "?", "cab-??", "c*b*", "x"])
PATTERNS = st.lists(PATTERN_LEVEL, min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(ids=IDS, pattern=PATTERNS)
def test_the_index_finds_exactly_what_scanning_every_id_finds(ids, pattern):
    db = PointDB()
    for point_id in ids:
        db.register(point_id, SPEC)
    compiled = compile_pattern(pattern)
    found = [p.id for p in db.points(pattern)]
    assert sorted(found) == sorted(compiled.filter(ids))
    assert len(found) == len(set(found))
    for n, point_id in enumerate(found):  # a listing resumed at any cursor goes on where it was
        assert [p.id for p in db.iterate(compiled, after=point_id)] == found[n + 1 :]


def test_removing_a_point_prunes_its_branch_and_keeps_its_neighbours():
    db = PointDB()
    for point_id in ("a", "a/b", "a/b/c", "z/y"):
        db.register(point_id, SPEC)
    db.unregister("a/b")
    assert [p.id for p in db.points("a/**")] == ["a", "a/b/c"]
    db.unregister("a/b/c")
    db.unregister("z/y")
    assert [p.id for p in db.points("**")] == ["a"]
    index = db._index
    assert isinstance(index, PointIndex) and set(index._root) == {"a"}


async def test_screens_with_the_same_patterns_share_one_watch_and_one_snapshot():
    db = PointDB()
    for n in range(50):
        db.register(f"centre/lighting/cab-{n}/level", SPEC)
    db.register("north/lighting/cab-0/level", SPEC)
    first = db.subscribe("centre/**")
    second = db.subscribe("centre/**")
    other = db.subscribe("north/**")
    assert first.watch is second.watch and other.watch is not first.watch
    one, two = await first.receive(), await second.receive()
    assert isinstance(one, Resync) and isinstance(two, Resync)
    assert one.snapshot is two.snapshot and len(one.snapshot) == 50
    point = db.get("centre/lighting/cab-3/level")
    assert point.subscribers == (first.watch,)
    db.update("centre/lighting/cab-3/level", 4.0)
    db.flush()
    batch_one, batch_two = await first.receive(), await second.receive()
    assert isinstance(batch_one, Batch) and isinstance(batch_two, Batch)
    assert batch_one.changes is batch_two.changes
    assert [c.value for c in batch_one.changes] == [4.0]
    first.close()
    assert point.subscribers == (second.watch,)
    second.close()
    assert point.subscribers == ()
    other.close()
    assert not db._watches


async def test_a_screen_that_joins_between_deliveries_gets_what_its_snapshot_misses_once():
    db = PointDB()
    db.register("a/x", SPEC)
    db.register("a/y", SPEC)
    early = db.subscribe("a/*")  # builds the shared snapshot
    db.update("a/x", 1.0)  # pending, after that snapshot
    late = db.subscribe("a/*")  # shares the snapshot: must get a/x in its batch
    db.update("a/y", 2.0)
    db.flush()
    await early.receive()
    snapshot = await late.receive()
    assert isinstance(snapshot, Resync)
    early_batch, late_batch = await early.receive(), await late.receive()
    assert isinstance(early_batch, Batch) and isinstance(late_batch, Batch)
    assert [c.id for c in early_batch.changes] == ["a/x", "a/y"]
    assert [c.id for c in late_batch.changes] == ["a/x", "a/y"]
    db.update("a/x", 3.0)
    db.flush()  # the snapshot is stale now: the next screen gets a fresh one and no replay
    last = db.subscribe("a/*")
    db.update("a/y", 4.0)
    db.flush()
    fresh = await last.receive()
    assert isinstance(fresh, Resync)
    assert {v.id: v.value for v in fresh.snapshot} == {"a/x": 3.0, "a/y": 2.0}
    batch = await last.receive()
    assert isinstance(batch, Batch) and [(c.id, c.value) for c in batch.changes] == [("a/y", 4.0)]
    for sub in (early, late, last):
        sub.close()


async def test_readers_of_other_zones_share_no_watch():
    db = PointDB()
    db.register("c/a", SPEC, zone="centre")
    db.register("n/a", SPEC, zone="north")

    def centre(p):
        return p.zone == "centre"

    def north(p):
        return p.zone == "north"

    a = db.subscribe("**", only=centre, only_key=frozenset({"centre"}))
    b = db.subscribe("**", only=centre, only_key=frozenset({"centre"}))
    c = db.subscribe("**", only=north, only_key=frozenset({"north"}))
    unkeyed = db.subscribe("**", only=centre)
    assert a.watch is b.watch
    assert c.watch is not a.watch and unkeyed.watch is not a.watch
    assert [v.id for v in c.snapshot()] == ["n/a"]
    for sub in (a, b, c, unkeyed):
        sub.close()


async def test_a_watch_of_many_points_is_let_go_by_the_run_task_after_the_last_screen():
    db = PointDB(batch_interval=0.001)
    for n in range(25_000):
        db.register(f"z/d{n // 100}/p{n % 100}", SPEC)
    async with anyio.create_task_group() as tg:
        tg.start_soon(db.run)
        sub = db.subscribe("**")
        sub.close()
        # Too many points to detach at once: still attached, released in slices.
        assert db.get("z/d0/p0").subscribers
        again = db.subscribe("**")  # a screen that comes back finds it
        assert again.watch is sub.watch
        again.close()
        db.update("z/d0/p0", 1.0)  # wakes the run task
        for _ in range(1000):  # the run task's turns, 10 s at most
            if not db.get("z/d249/p99").subscribers:
                break
            await anyio.sleep(0.01)
        assert all(not p.subscribers for p in db.points())
        assert not db._watches
        tg.cancel_scope.cancel()


def test_release_idle_lets_go_at_once():
    db = PointDB()
    for n in range(20_001):
        db.register(f"z/{n}", SPEC)
    db.subscribe("z/*").close()
    db.release_idle()
    assert not db._watches and not db.get("z/0").subscribers


@pytest.mark.parametrize("pattern", ["a/**", "a/**/c", "**/c", "a/*/c", "a/b/**"])
def test_a_point_that_is_also_a_prefix_is_found_by_patterns(pattern):
    db = PointDB()
    for point_id in ("a", "a/b", "a/b/c", "a/c"):
        db.register(point_id, SPEC)
    compiled = compile_pattern(pattern)
    expected = compiled.filter(["a", "a/b", "a/b/c", "a/c"])
    assert sorted(p.id for p in db.points(pattern)) == sorted(expected)
