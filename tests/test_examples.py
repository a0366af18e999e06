"""examples/flood-sensor: a plugin installed as its own package, found through its entry point.

It is installed into a temporary directory (``pip install --no-deps
--target``), not into the developer's environment, and that directory is put
on the ``PYTHONPATH`` of the child processes that look for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flood-sensor"


def _run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a child process that sees the example installed."""
    site = tmp_path_factory.mktemp("flood-site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    _run([*command, str(EXAMPLE)], env)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.slow
def test_cityvisor_discovers_the_installed_example_through_its_entry_point(installed):
    report = json.loads(_run([sys.executable, "-m", "cityvisor", "plugins", "--json"], installed))
    plugins = {plugin["name"]: plugin for plugin in report["plugins"]}
    assert "flood" in plugins, report
    assert report["failures"] == []
    (gauge,) = plugins["flood"]["device_types"]
    assert gauge["type"] == "flood.gauge"
    assert {"high_water", "flood_danger", "rising_fast", "sensor_fault"} <= {
        alarm["name"] for alarm in gauge["alarms"]
    }
    assert [command["name"] for command in gauge["commands"]] == ["set_alert_level"]


@pytest.mark.slow
def test_the_examples_deployment_file_checks(installed):
    out = _run(
        [sys.executable, "-m", "cityvisor", "check-config", "example.toml"], installed, EXAMPLE
    )
    assert out.startswith("OK: 2 zones, 3 devices")


@pytest.mark.slow
def test_the_examples_own_tests_pass_against_the_installed_package(installed):
    out = _run([sys.executable, "-m", "pytest", "-q"], installed, EXAMPLE)
    assert "4 passed" in out, out
