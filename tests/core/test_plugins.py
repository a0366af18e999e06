"""The plugin manager: built-ins, entry points, and broken plugins reported by name."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from cityvisor.core.plugins import PluginConflictError, collect_device_types, make_plugin_manager


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where tests install throwaway distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cv_test_")]:
        del sys.modules[name]


def install(site: Path, dist: str, module: str, source: str) -> None:
    """Write a module and a dist-info that declares it in the ``cityvisor`` entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[cityvisor]\n{module} = {module}\n")


GOOD_PLUGIN = """
    import anyio
    from cityvisor import DeviceType, hookimpl, point

    class Gauge(DeviceType):
        \"\"\"A water gauge.\"\"\"
        family = "flood"
        height = point(float, unit="m")

        async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED):
            task_status.started()
            await anyio.sleep_forever()

    @hookimpl
    def cityvisor_device_types():
        return [Gauge]
"""


def test_builtins_load_first_and_entry_points_are_discovered(site: Path):
    install(site, "cv-test-flood", "cv_test_flood", GOOD_PLUGIN)
    manager = make_plugin_manager()
    names = manager.plugin_names()
    assert names.index("demo") < names.index("cv_test_flood")
    types = collect_device_types(manager)
    assert {"demo.tank", "flood.gauge"} <= set(types)
    assert manager.failures == []


def test_a_plugin_that_fails_to_import_is_reported_by_name_and_others_load(site: Path):
    install(site, "cv-test-broken", "cv_test_broken", "raise RuntimeError('missing driver')\n")
    install(site, "cv-test-flood", "cv_test_flood", GOOD_PLUGIN)
    manager = make_plugin_manager()
    assert [f.name for f in manager.failures] == ["cv_test_broken"]
    failure = manager.failures[0]
    assert "missing driver" in failure.error
    assert "cv-test-broken" in failure.source
    assert "flood.gauge" in collect_device_types(manager)


def test_a_plugin_with_a_misspelt_hook_is_refused(site: Path):
    install(
        site,
        "cv-test-typo",
        "cv_test_typo",
        """
        from cityvisor import hookimpl

        @hookimpl
        def cityvisor_device_type():
            return []
        """,
    )
    manager = make_plugin_manager()
    assert [f.name for f in manager.failures] == ["cv_test_typo"]
    assert "cityvisor_device_type" in manager.failures[0].error
    assert "cv_test_typo" not in manager.plugin_names()


def test_a_hook_that_raises_does_not_deprive_other_plugins(site: Path):
    install(
        site,
        "cv-test-raising",
        "cv_test_raising",
        """
        from cityvisor import hookimpl

        @hookimpl
        def cityvisor_device_types():
            raise ValueError("boom")
        """,
    )
    manager = make_plugin_manager()
    types = collect_device_types(manager)
    assert "demo.tank" in types
    assert [f.name for f in manager.failures] == ["cv_test_raising"]


def test_two_plugins_declaring_one_type_name_is_an_error(site: Path):
    install(site, "cv-test-flood", "cv_test_flood", GOOD_PLUGIN)
    source = GOOD_PLUGIN.replace("class Gauge", "class Other").replace("[Gauge]", "[Other]")
    source = source.replace(
        'family = "flood"', 'family = "flood"\n        type_name = "flood.gauge"'
    )
    install(site, "cv-test-flood2", "cv_test_flood2", source)
    with pytest.raises(PluginConflictError, match=r"flood\.gauge"):
        collect_device_types(make_plugin_manager())


def test_managers_are_independent():
    first = make_plugin_manager(entry_points=False)
    second = make_plugin_manager(builtins=(), entry_points=False)
    assert "demo" in first.plugin_names()
    assert second.plugin_names() == []
