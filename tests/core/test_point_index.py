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
    first = await db.subscribe("centre/**")
    second = await db.subscribe("centre/**")
    other = await db.subscribe("north/**")
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
    early = await db.subscribe("a/*")  # builds the shared snapshot
    db.update("a/x", 1.0)  # pending, after that snapshot
    late = await db.subscribe("a/*")  # shares the snapshot: must get a/x in its batch
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
    last = await db.subscribe("a/*")
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

    a = await db.subscribe("**", only=centre, only_key=frozenset({"centre"}))
    b = await db.subscribe("**", only=centre, only_key=frozenset({"centre"}))
    c = await db.subscribe("**", only=north, only_key=frozenset({"north"}))
    unkeyed = await db.subscribe("**", only=centre)
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
        sub = await db.subscribe("**")
        sub.close()
        # Too many points to detach at once: still attached, released in slices.
        assert db.get("z/d0/p0").subscribers
        again = await db.subscribe("**")  # a screen that comes back finds it
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


async def test_release_idle_lets_go_at_once():
    db = PointDB()
    for n in range(20_001):
        db.register(f"z/{n}", SPEC)
    (await db.subscribe("z/*")).close()
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


def sub_started(db: PointDB) -> bool:
    return any(w.points for w in db._watches.values())


def _city(db: PointDB, count: int) -> None:
    for n in range(count):
        db.register(f"z{n // 10_000}/d{n // 100 % 100}/p{n % 100}", SPEC)


async def test_a_whole_city_watch_is_built_in_slices_with_turns_of_the_loop_between():
    db = PointDB()
    _city(db, 120_000)
    turns = 0

    async def count_turns():
        nonlocal turns
        while True:
            await anyio.lowlevel.checkpoint()
            turns += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_turns)
        await anyio.lowlevel.checkpoint()
        before = turns
        sub = await db.subscribe("**")
        # Other tasks ran while it was built (a slice is a few milliseconds).
        assert turns - before >= 2
        first = await sub.receive()
        assert isinstance(first, Resync) and len(first.snapshot) == 120_000
        assert all(p.subscribers == (sub.watch,) for p in db.points())
        tg.cancel_scope.cancel()
    sub.close()
    db.release_idle()
    assert not db._watches


async def test_points_registered_and_removed_while_a_watch_is_built_are_seen_right():
    db = PointDB()
    _city(db, 60_000)
    done = anyio.Event()
    result = []

    async def subscribe():
        result.append(await db.subscribe("**"))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe)
        for _ in range(10):  # the first slice
            await anyio.lowlevel.checkpoint()
            if sub_started(db):
                break
        assert not done.is_set(), "the build should take more than one slice"
        db.register("z0/d0/late", SPEC)  # in a branch walked already
        db.register("z5/d99/late", SPEC)  # in a branch not walked yet
        db.register("new/branch", SPEC)
        db.unregister("z5/d98/p1")  # not walked yet: must not be attached
        db.unregister("z0/d0/p1")  # walked already
        await done.wait()
    sub = result[0]
    watched = set(sub.watch.points)
    assert watched == {p.id for p in db.points()}
    assert "z5/d98/p1" not in watched and "z0/d0/p1" not in watched
    assert {"z0/d0/late", "z5/d99/late", "new/branch"} <= watched
    snapshot = await sub.receive()
    assert isinstance(snapshot, Resync) and len(snapshot.snapshot) == len(db)
    sub.close()


async def test_a_subscriber_cancelled_while_its_watch_is_built_leaves_nothing_behind():
    db = PointDB()
    _city(db, 60_000)
    with anyio.move_on_after(0) as scope:  # cancelled at the first turn of the loop
        await db.subscribe("**")
    assert scope.cancelled_caught
    db.release_idle()  # what the run task does (in slices) with a large half-built watch
    assert not db._watches
    assert all(p.subscribers == () for p in db.points())


async def test_screens_that_subscribe_at_once_share_the_watch_being_built():
    db = PointDB()
    _city(db, 60_000)
    subs = []

    async def subscribe():
        subs.append(await db.subscribe("**"))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(subscribe)
    assert subs[0].watch is subs[1].watch is subs[2].watch
    assert all(len(p.subscribers) == 1 for p in db.points())
    snapshots = [await s.receive() for s in subs]
    assert all(isinstance(m, Resync) for m in snapshots)
    assert snapshots[0].snapshot is snapshots[1].snapshot is snapshots[2].snapshot
    for sub in subs:
        sub.close()


async def test_changes_made_while_a_large_snapshot_is_read_reach_the_new_screen():
    db = PointDB()
    _city(db, 60_000)
    early = await db.subscribe("**")
    await early.receive()
    db.update("z0/d0/p0", 1.0)
    db.flush()  # the shared snapshot is stale: the next screen reads a new one, in slices
    await early.receive()
    joined = []

    async def join():
        joined.append(await db.subscribe("**"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(join)
        for _ in range(10):  # the joining task's first slice
            await anyio.lowlevel.checkpoint()
            if early.watch.held:
                break
        assert not joined and early.watch.held
        db.update("z0/d0/p0", 2.0)  # a point already read
        db.update("z5/d99/p99", 3.0)  # a point not read yet
        db.flush()  # held: nothing is delivered while the snapshot is read
        with pytest.raises(anyio.WouldBlock):
            early.receive_nowait()
    late = joined[0]
    snapshot = await late.receive()
    assert isinstance(snapshot, Resync)
    db.flush()
    for sub in (early, late):
        batch = await sub.receive()
        assert isinstance(batch, Batch)
        assert [(c.id, c.value) for c in batch.changes] == [("z0/d0/p0", 2.0), ("z5/d99/p99", 3.0)]
    values = {v.id: v.value for v in snapshot.snapshot}
    assert values["z0/d0/p0"] in (1.0, 2.0)
    early.close()
    late.close()
