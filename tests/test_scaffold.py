"""``cityvisor new-plugin``: the package it writes installs, lints clean and passes its own tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cityvisor.cli import main
from cityvisor.scaffold import PluginNames, write_plugin


def test_every_name_is_derived_from_the_plugin_name():
    names = PluginNames("Noise-Meter2")
    assert names.slug == "noise-meter2"
    assert names.dist == "cityvisor-noise-meter2"
    assert names.module == "cityvisor_noise_meter2"
    assert names.family == "noise_meter2"
    assert names.class_name == "NoiseMeter2"
    assert names.type_name == "noise_meter2.sensor"
    assert PluginNames("cityvisor-parking").dist == "cityvisor-parking"


@pytest.mark.parametrize("name", ["", "2fast", "noise_meter", "noise--meter", "bruit!", "x" * 41])
def test_a_name_that_cannot_make_a_package_is_refused(name: str):
    with pytest.raises(ValueError, match="lower-case words"):
        PluginNames(name)


def test_the_command_refuses_to_write_over_a_directory_in_use(tmp_path: Path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["new-plugin", "gauge", "--dir", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["new-plugin", "bad name", "--dir", str(tmp_path / "x")]) == 2


def test_the_command_says_what_to_do_next(tmp_path: Path, capsys):
    assert main(["new-plugin", "gauge", "--dir", str(tmp_path / "gauge")]) == 0
    out = capsys.readouterr().out
    assert "device type gauge.sensor" in out
    assert "python -m pytest" in out
    package = tmp_path / "gauge" / "src" / "cityvisor_gauge"
    assert (package / "__init__.py").exists() and (package / "simulator.py").exists()
    pyproject = (tmp_path / "gauge" / "pyproject.toml").read_text()
    assert '[project.entry-points.cityvisor]\ngauge = "cityvisor_gauge"' in pyproject


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 50) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_new_plugin_installs_and_passes_its_own_tests(tmp_path: Path):
    root = tmp_path / "cityvisor-street-sensor"
    write_plugin("street-sensor", root)
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    _run([python, "-m", "ruff", "check", "--no-cache", "."], root, env)
    _run([python, "-m", "ruff", "format", "--no-cache", "--check", "."], root, env)
    # Installed into a directory of its own, not into the developer's environment.
    site = tmp_path / "site"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), "."], root, env)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    report = json.loads(_run([python, "-m", "cityvisor", "plugins", "--json"], root, env))
    plugins = {plugin["name"]: plugin for plugin in report["plugins"]}
    assert "street_sensor" in plugins, report
    (device_type,) = plugins["street_sensor"]["device_types"]
    assert device_type["type"] == "street_sensor.sensor"
    assert [c["name"] for c in device_type["commands"]] == ["set_output"]
    out = _run([python, "-m", "pytest", "-q"], root, env)
    assert "3 passed" in out, out
    _run([python, "-m", "cityvisor", "check-config", "example.toml"], root, env)


def test_the_plugin_guide_quotes_the_generated_package_as_it_is(tmp_path: Path):
    # The guide's code blocks that name a file of the package (first line
    # "# path") must be found in that file, as `new-plugin noise-meter` writes it.
    root = tmp_path / "noise"
    write_plugin("noise-meter", root)
    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugin-guide.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", guide, re.DOTALL)
    assert len(blocks) >= 6
    for path, code in blocks:
        source = (root / path).read_text()
        assert code.rstrip() in source, f"docs/plugin-guide.md quotes {path} wrongly:\n{code}"
