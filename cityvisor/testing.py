"""Test helpers for plugin authors, registered as a pytest plugin (``-p cityvisor.testing``).

Installing cityvisor makes these available in every test suite (through the
``pytest11`` entry point); nothing to import but the helpers you call::

    import pytest
    from cityvisor.testing import running_hub, wait_for_point, wait_for_alarm

    pytestmark = pytest.mark.anyio

    async def test_high_water_raises_an_alarm(tmp_path):
        async with running_hub(CONFIG, tmp_path, plugins=[my_plugin]) as hub:
            await wait_for_point(hub, "centre/flood/gauge-1/height", lambda v: v.value > 3.5)
            await wait_for_alarm(hub, "gauge-1:high_water", lambda a: a.active)

The hub runs with only the plugins you give (plus none of the installed
ones), on a temporary SQLite store, and stops cleanly when the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from .core.alarms import Alarm
from .core.config import load_config
from .core.hub import Hub
from .core.plugins import make_plugin_manager
from .core.points import PointValue
from .core.store import SqliteStore

__all__ = ["cityvisor_store", "running_hub", "wait_for_alarm", "wait_for_point"]


@asynccontextmanager
async def running_hub(
    config: str | Path,
    directory: Path,
    *,
    plugins: Iterable[Any] = (),
    builtins: bool = False,
) -> AsyncIterator[Hub]:
    """Run a hub for the length of an ``async with`` block.

    ``config`` is the text of a deployment TOML file (or the path of one);
    relative store paths land in ``directory``. Only ``plugins`` are loaded,
    plus the built-in families when ``builtins`` is true.
    """
    if isinstance(config, Path):
        path = config
    else:
        path = directory / "cityvisor-test.toml"
        path.write_text(config, encoding="utf-8")
    manager = make_plugin_manager(
        entry_points=False,
        plugins=plugins,
        **({} if builtins else {"builtins": ()}),
    )
    hub = Hub(load_config(path), manager)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        try:
            yield hub
        finally:
            tg.cancel_scope.cancel()


async def wait_for_point(
    hub: Hub,
    point_id: str,
    predicate: Callable[[PointValue], bool],
    timeout: float = 5.0,
) -> PointValue:
    """Wait until a point's value satisfies ``predicate``; fail the test with its last value."""
    value = await hub.points.wait_for(point_id, predicate, timeout)
    if value is None:
        pytest.fail(
            f"{point_id} did not reach the expected value in {timeout:g} s; "
            f"it is {hub.points.value(point_id)}"
        )
    return value


async def wait_for_alarm(
    hub: Hub,
    alarm_id: str,
    predicate: Callable[[Alarm], bool],
    timeout: float = 5.0,
) -> Alarm:
    """Wait until an alarm satisfies ``predicate`` (checked after each journaled event)."""
    alarm = hub.alarms.get(alarm_id)
    with anyio.move_on_after(timeout):
        async with hub.alarms.subscribe() as feed:
            async for _message in feed:
                if predicate(alarm):
                    return alarm
    pytest.fail(
        f"alarm {alarm_id} did not reach the expected state in {timeout:g} s: {alarm.as_json()}"
    )


@pytest.fixture
async def cityvisor_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store in the test's temporary directory."""
    store = SqliteStore(tmp_path / "cityvisor-test.sqlite", flush_interval=0.05)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
