"""PointDB: values, quality, deadbands, subscriptions and re-sync."""

from __future__ import annotations

import anyio
import pytest

from cityvisor.core.patterns import PatternError
from cityvisor.core.points import (
    Batch,
    DataType,
    Deadband,
    PointDB,
    PointSpec,
    PointValue,
    Quality,
    Resync,
    Scaling,
    Snapshot,
)

pytestmark = pytest.mark.anyio


def make_db(n: int = 3) -> PointDB:
    db = PointDB(batch_interval=0.01)
    for i in range(n):
        db.register(f"dijon/lighting/cab-{i}/c1/level", PointSpec("level", deadband=Deadband(0.5)))
    return db


async def test_a_new_point_is_bad_not_connected_until_a_value_arrives():
    db = make_db(1)
    value = db.value("dijon/lighting/cab-0/c1/level")
    assert value.value is None
    assert value.quality == Quality.bad("not_connected")


async def test_subscriber_gets_a_snapshot_then_batched_changes():
    db = make_db()
    async with db.subscribe("dijon/lighting/**") as sub:
        first = await sub.receive()
        assert isinstance(first, Resync) and len(first.snapshot) == 3
        db.update("dijon/lighting/cab-0/c1/level", 10.0)
        db.update("dijon/lighting/cab-1/c1/level", 20.0)
        db.flush()
        batch = await sub.receive()
        assert isinstance(batch, Batch)
        assert [(c.id, c.value) for c in batch.changes] == [
            ("dijon/lighting/cab-0/c1/level", 10.0),
            ("dijon/lighting/cab-1/c1/level", 20.0),
        ]


async def test_absolute_deadband_filters_small_moves():
    db = make_db(1)
    pid = "dijon/lighting/cab-0/c1/level"
    assert db.update(pid, 10.0)
    assert not db.update(pid, 10.4)
    assert db.update(pid, 10.6)
    assert db.value(pid).value == 10.6


async def test_percent_deadband_uses_the_declared_range():
    db = PointDB()
    spec = PointSpec("p", deadband=Deadband.percent(1), minimum=0, maximum=200)
    db.register("z/f/d/p", spec)
    db.update("z/f/d/p", 100.0)
    assert not db.update("z/f/d/p", 101.9)  # 1 % of 200 is 2
    assert db.update("z/f/d/p", 102.1)


async def test_a_quality_change_always_passes_the_deadband():
    db = make_db(1)
    pid = "dijon/lighting/cab-0/c1/level"
    db.update(pid, 10.0)
    assert db.update(pid, 10.0, Quality.bad("comm_failure"))
    assert db.value(pid).quality.reason == "comm_failure"


async def test_slow_subscriber_is_told_it_lost_updates_and_resynced_without_blocking():
    db = make_db(1)
    pid = "dijon/lighting/cab-0/c1/level"
    sub = await db.subscribe("**", max_buffer=2)
    # Nobody reads: producers must never block.
    for i in range(10):
        db.update(pid, float(i))
        db.flush()
    assert sub.overflowed and sub.lost > 0
    messages = []
    while True:
        try:
            messages.append(sub.receive_nowait())
        except anyio.WouldBlock:
            break
    db.flush()  # room again: the subscriber is re-synced
    resync = await sub.receive()
    assert isinstance(resync, Resync) and resync.lost > 0
    assert resync.snapshot[0].value == 9.0
    sub.close()


async def test_wait_for_returns_when_the_predicate_holds():
    db = make_db(1)
    pid = "dijon/lighting/cab-0/c1/level"
    async with anyio.create_task_group() as tg:

        async def later():
            await anyio.sleep(0.01)
            db.update(pid, 42.0)

        tg.start_soon(later)
        result = await db.wait_for(pid, lambda v: v.value == 42.0, timeout=5)
    assert result is not None and result.value == 42.0
    assert await db.wait_for(pid, lambda v: v.value == 1.0, timeout=0.01) is None


async def test_set_quality_marks_every_point_bad_in_one_step():
    db = make_db(3)
    for p in db.points():
        db.update(p.id, 1.0)
    count = db.set_quality(list(db.points()), Quality.bad("comm_failure"))
    assert count == 3
    assert all(p.current.quality.is_bad and p.current.value == 1.0 for p in db.points())


async def test_listing_and_subscribing_use_the_same_patterns():
    db = PointDB()
    for point_id in ("a/b/c", "a", "z/f/d/c1/level", "dijonville/x"):
        db.register(point_id, PointSpec("value", DataType.INT))
    assert [p.id for p in db.points("a/**")] == ["a", "a/b/c"]  # branch by branch
    assert [p.id for p in db.points("**/level")] == ["z/f/d/c1/level"]
    assert [p.id for p in db.points("dijon/**")] == []
    assert [p.id for p in db.points("a")] == ["a"]
    sub = await db.subscribe("a/*", "**/level")
    assert [v.id for v in sub.snapshot()] == ["z/f/d/c1/level"]
    sub.close()


async def test_a_subscription_only_watches_the_points_its_condition_admits():
    db = PointDB(batch_interval=0.01)
    db.register("centre/f/d/level", PointSpec("level"), zone="centre")
    db.register("nord/f/d/level", PointSpec("level"), zone="nord")
    async with db.subscribe("**", only=lambda p: p.zone == "centre") as sub:
        first = await sub.receive()
        assert isinstance(first, Resync)
        assert [v.id for v in first.snapshot] == ["centre/f/d/level"]
        db.register("nord/f/e/level", PointSpec("level"), zone="nord")
        db.register("centre/f/e/level", PointSpec("level"), zone="centre")
        for point_id in ("nord/f/d/level", "nord/f/e/level", "centre/f/e/level"):
            db.update(point_id, 1.0)
        db.flush()
        batch = await sub.receive()
        assert isinstance(batch, Batch)
        assert [v.id for v in batch.changes] == ["centre/f/e/level"]


def test_a_refused_pattern_is_refused_before_anything_is_subscribed():
    db = PointDB()
    db.register("a/b", PointSpec("value", DataType.INT))
    with pytest.raises(PatternError, match="wildcards"):
        db.subscribe("a/*", "*" + "?*" * 20)
    assert not db._watches and db.get("a/b").subscribers == ()
    with pytest.raises(PatternError, match="characters long"):
        list(db.points("a/" + "x" * 300))


def test_enum_and_scaling():
    spec = PointSpec("position", DataType.ENUM, labels={0: "up", 1: "down"})
    assert spec.coerce("down") == 1
    assert spec.label(0) == "up"
    with pytest.raises(ValueError):
        spec.coerce("sideways")
    scaling = Scaling.linear(raw=(0, 1000), eng=(0.0, 100.0))
    assert scaling.to_engineering(500) == 50.0
    assert scaling.to_raw(25.0) == 250.0


def test_current_values_are_kept_where_the_garbage_collector_does_not_walk():
    import gc

    db = PointDB()
    spec = PointSpec("level", DataType.FLOAT)
    points = [db.register(f"a/p{n}", spec) for n in range(100)]
    for n, point in enumerate(points):
        db.update_point(point, float(n), Quality.good() if n % 2 else Quality.bad("stale"))
    gc.collect()
    assert not any(gc.is_tracked(point.state) for point in points)
    value = points[3].current
    assert isinstance(value, PointValue) and value.value == 3.0 and value.quality.is_good
    assert points[4].current.quality == Quality.bad("stale")


def test_any_number_of_distinct_qualities_is_kept_exactly(monkeypatch: pytest.MonkeyPatch):
    from cityvisor.core.points import values

    monkeypatch.setattr(values, "MAX_QUALITY_CODES", len(values._QUALITIES) + 2)
    db = PointDB()
    point = db.register("a/p", PointSpec("level", DataType.FLOAT))
    seen = []
    for n in range(6):  # past the codes: kept as the quality itself
        quality = Quality.bad(f"reason_{n}")
        assert db.update("a/p", 1.0, quality)
        assert not db.update("a/p", 1.0, Quality.bad(f"reason_{n}"))  # equal: not a change
        seen.append(point.current.quality)
    assert seen == [Quality.bad(f"reason_{n}") for n in range(6)]
    assert db.update("a/p", 1.0)
    assert point.current.quality.is_good


async def test_a_snapshot_reads_as_point_values_shared_by_its_subscribers():
    db = PointDB()
    db.register("a/x", PointSpec("x", DataType.FLOAT))
    db.register("a/y", PointSpec("y", DataType.FLOAT))
    db.update("a/x", 1.0)
    async with db.subscribe("a/*") as sub:
        first = await sub.receive()
        snapshot = first.snapshot
        assert isinstance(snapshot, Snapshot) and len(snapshot) == 2
        assert [v.id for v in snapshot] == ["a/x", "a/y"]
        assert snapshot[0].value == 1.0 and snapshot[-1].quality.is_bad
        assert [v.id for v in snapshot[1:]] == ["a/y"]
        db.update("a/x", 2.0)  # the snapshot shows the moment it was taken
        assert snapshot[0].value == 1.0


async def test_a_snapshot_as_json_is_what_its_values_give():
    db = PointDB()
    for name in ("x", "y", "z"):
        db.register(f"a/{name}", PointSpec(name, DataType.FLOAT))
    db.update("a/x", 1.5)
    db.update("a/y", float("nan"), Quality.uncertain("stale"))
    async with db.subscribe("a/*") as sub:
        snapshot = sub.snapshot()
        assert snapshot.as_json() == [v.as_json() for v in snapshot]
        assert snapshot.as_json(1, 2) == [snapshot[1].as_json()]
        assert snapshot.as_json()[1]["value"] is None  # not a number: null, as as_json() gives
        assert snapshot.as_json()[2]["quality"] == {"status": "bad", "reason": "not_connected"}


async def test_a_deferred_batch_goes_to_whoever_serves_the_waiting_consumer_or_back_to_it():
    db = make_db(1)
    pid = "dijon/lighting/cab-0/c1/level"
    received: list[Batch | Resync] = []
    notified: list[object] = []
    sub = await db.subscribe("**", max_buffer=2)
    assert isinstance(await sub.receive(), Resync)

    async def consume() -> None:
        async for message in sub:
            received.append(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        sub.defer(notified.append)
        db.update(pid, 1.0)
        db.flush()
        await anyio.wait_all_tasks_blocked()
        # The consumer was not woken: the one notified takes the batch instead.
        assert notified == [sub] and received == []
        batch = sub.deferred()
        assert batch is not None and [c.value for c in batch.changes] == [1.0]
        assert sub.receive_nowait() is batch and sub.deferred() is None
        db.update(pid, 2.0)
        db.flush()
        db.update(pid, 3.0)
        db.flush()
        assert sub.deferred() is None  # two batches wait: the consumer merges them
        sub.wake()  # handed back
        await anyio.wait_all_tasks_blocked()
        assert [[c.value for c in m.changes] for m in received if isinstance(m, Batch)] == [
            [2.0],
            [3.0],
        ]
        db.update(pid, 4.0)
        db.flush()
        sub.defer(None)  # no longer served elsewhere: what waits reaches the consumer
        await anyio.wait_all_tasks_blocked()
        assert isinstance(received[-1], Batch) and received[-1].changes[0].value == 4.0
        sub.close()
    assert notified == [sub] * 4  # once for each batch delivered while the consumer waited
