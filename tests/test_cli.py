"""The ``cityvisor`` command, in process through ``main()`` and as a real ``python -m cityvisor``."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cityvisor.cli import ConsoleFormatter, _setup_logging, describe_plugins, log_in_site_time, main
from cityvisor.core.config import reference
from cityvisor.core.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.toml"

BAD = """
[site]
name = "Testville"

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-1"
type = "demo.tank"
zone = "nord"
config = { capacity = "abc" }
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path where tests install throwaway plugin distributions."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for name in [m for m in sys.modules if m.startswith("cv_cli_")]:
        del sys.modules[name]


def install(site: Path, module: str, source: str) -> None:
    """Write a plugin module and a dist-info declaring it in the ``cityvisor`` entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[cityvisor]\n{module} = {module}\n")


BROKEN_PLUGIN = """
raise ImportError("this plugin needs a library that is not installed")
"""

GAUGE_PLUGIN = """
import anyio
from cityvisor import DeviceType, hookimpl, point

class Gauge(DeviceType):
    \"\"\"A flood gauge.\"\"\"
    family = "flood"
    height = point(float, unit="m", doc={"fr": "Hauteur d'eau", "en": "Water height"})

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED):
        task_status.started()
        await anyio.sleep_forever()

@hookimpl
def cityvisor_device_types():
    return [Gauge]

@hookimpl
def cityvisor_check_config(config):
    return [f"devices[{i}]: gauges need a location"
            for i, d in enumerate(config.devices) if d.type == "flood.gauge" and not d.location]
"""


def run_cli(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cityvisor ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "cityvisor", *args],
        capture_output=True,
        text=True,
        env=_env(site),
        timeout=30,
        check=False,
    )


def _env(site: Path | None) -> dict[str, str]:
    paths = [str(ROOT)] + ([str(site)] if site else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def write(tmp_path: Path, text: str, name: str = "city.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- check-config


def test_check_config_accepts_the_demo(capsys: pytest.CaptureFixture[str]):
    assert main(["check-config", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 3 zones, 3 devices, 2 alarms\n"
    assert err == ""


def test_check_config_prints_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = write(tmp_path, BAD)
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    # Both passes at once: the unknown zone does not hide the device's bad config.
    # Each problem names the device by its id and gives the line of the key.
    zone, capacity = err.splitlines()
    assert zone == f"{path}:12: device tank-1: zone: unknown zone 'nord' (declared zones: centre)"
    assert capacity.startswith(
        f"{path}:13: device tank-1: config.capacity: Input should be a valid number"
    )
    path.write_text(BAD.replace('"nord"', '"centre"'))
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [capacity]


def test_check_config_reports_a_sections_mistake_and_every_device_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = write(
        tmp_path,
        """
        [site]
        name = "Testville"
        timezone = "Europe/Dijon"

        [[zones]]
        id = "centre"
        name = "Centre"

        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "centre"

        [[devices]]
        id = "tank-2"
        type = "demo.tank"
        zone = "centre"
        config = { capacity = "lots", colour = "blue" }

        [[devices]]
        type = "demo.tank"
        zone = "centre"
        """,
    )
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{path}:4: site.timezone: ")
    assert any(
        line.startswith(f"{path}:21: devices[2].id: required key is missing") for line in lines
    ), lines
    assert any(line.startswith(f"{path}:19: device tank-2: config.capacity: ") for line in lines), (
        lines
    )
    assert any(
        line.startswith(f"{path}:19: device tank-2: config.colour: unknown key") for line in lines
    ), lines


def test_check_config_includes_the_plugins_own_checks(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
):
    install(site, "cv_cli_flood", GAUGE_PLUGIN)
    path = write(
        tmp_path,
        """
        [site]
        name = "Testville"

        [[zones]]
        id = "centre"
        name = "Centre"

        [[devices]]
        id = "gauge-1"
        type = "flood.gauge"
        zone = "centre"
        """,
    )
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}:9: device gauge-1: gauges need a location\n"


def test_a_missing_file_or_a_toml_error_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == (
        f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory\n"
    )
    path = write(tmp_path, "[site]\nname = \n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: line 2, column 8: TOML syntax error")


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["check-config"], ["run"], ["plugins", "--jsn"]]
)
def test_bad_arguments_exit_2_with_a_usage_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: cityvisor" in err and "Traceback" not in err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]):
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("cityvisor ")


# --------------------------------------------------------------------------- plugins


def test_plugins_json_describes_device_types_points_commands_and_alarms(
    capsys: pytest.CaptureFixture[str],
):
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (demo,) = [p for p in report["plugins"] if p["name"] == "demo"]
    (tank,) = demo["device_types"]
    assert tank["type"] == "demo.tank" and tank["family"] == "demo"
    assert tank["config"]["properties"]["capacity"]["description"] == "Volume in m³."
    points = {p["name"]: p for p in tank["points"]}
    assert points["setpoint"] | {"doc": None} == {
        "name": "setpoint",
        "type": "float",
        "labels": None,
        "unit": "%",
        "per": None,
        "writable": True,
        "minimum": 0,
        "maximum": 100,
        "history": "default",
        "doc": None,
    }
    assert points["valve"]["labels"] == {"0": "closed", "1": "filling", "2": "draining"}
    commands = {c["name"]: c for c in tank["commands"]}
    set_level = commands["set_level"]
    assert set_level["params"]["properties"]["setpoint"]["maximum"] == 100
    assert set_level["params"]["required"] == ["setpoint"]
    assert set_level["role"] == "operator"
    assert set_level["interlocks"][0]["point"] == "maintenance"
    assert set_level["feedback"]["point"] == "setpoint"
    assert commands["drain"]["confirm"] is True
    assert commands["toggle_maintenance"]["two_person"] is True
    alarms = {a["name"]: a for a in tank["alarms"]}
    assert alarms["high_water"] | {"message": None} == {
        "name": "high_water",
        "point": "level",
        "condition": "> 90",
        "priority": "high",
        "procedure": "DEMO-01",
        "message": None,
    }
    assert alarms["communication_lost"]["condition"] == "== False"
    assert report["failures"] == []


def test_plugins_prints_a_readable_tree(capsys: pytest.CaptureFixture[str]):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    # Built-ins are listed in name order: other families may come before the demo.
    assert "\ndemo  (1 device type)\n  demo.tank — Tank: " in "\n" + out
    assert "    points:\n" in out
    assert "      valve: enum {0: closed, 1: filling, 2: draining} — Valve\n" in out
    assert "      set_level(setpoint: number 0..100 %): role operator; " in out
    assert "      high_water: level > 90, high, procedure DEMO-01\n" in out


def test_a_plugin_that_fails_to_import_is_reported_by_name_and_the_others_load(site: Path):
    (site / "cv_cli_broken.py").write_text(BROKEN_PLUGIN)
    (site / "cv_cli_gauge.py").write_text(textwrap.dedent(GAUGE_PLUGIN))
    plugins = make_plugin_manager(
        builtins=["cv_cli_broken", "cityvisor.plugins.demo", "cv_cli_gauge"],
        entry_points=False,
    )
    report = describe_plugins(plugins)
    assert [p["name"] for p in report["plugins"]] == ["demo", "cv_cli_gauge"]
    assert [t["type"] for t in report["plugins"][1]["device_types"]] == ["flood.gauge"]
    (failure,) = report["failures"]
    assert failure["name"] == "cv_cli_broken"
    assert failure["error"] == "ImportError: this plugin needs a library that is not installed"


def test_disabled_plugins_are_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write(
        tmp_path,
        """
        [site]
        name = "Testville"

        [plugins]
        disabled = ["demo"]
        entry_points = false

        [[zones]]
        id = "centre"
        name = "Centre"

        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "centre"
        """,
    )
    assert main(["plugins", "--json", "-c", str(path)]) == 0
    listed = [p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]]
    assert "demo" not in listed
    assert main(["check-config", str(path)]) == 2
    # The known types listed are those of the other built-in families, if any.
    assert capsys.readouterr().err.startswith(
        f"{path}:15: device tank-1: type: unknown device type 'demo.tank' (known types: "
    )


# --------------------------------------------------------------------------- config-reference


def test_config_reference_writes_the_generated_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    target = tmp_path / "configuration.md"
    assert main(["config-reference", "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == reference() + "\n"
    assert main(["config-reference", "-o", str(tmp_path / "no" / "such" / "dir.md")]) == 2
    assert capsys.readouterr().err.startswith("cityvisor config-reference: cannot write ")


# --------------------------------------------------------------------------- a real process


def test_python_m_cityvisor_check_config():
    done = run_cli("check-config", str(DEMO))
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "OK: 3 zones, 3 devices, 2 alarms\n",
        "",
    )


def test_python_m_cityvisor_check_config_with_problems_exits_2_without_a_traceback(
    tmp_path: Path,
):
    done = run_cli("check-config", str(write(tmp_path, BAD)))
    assert done.returncode == 2
    assert ":12: device tank-1: zone: unknown zone 'nord'" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_m_cityvisor_plugins_json_reports_a_broken_entry_point_by_name(site: Path):
    install(site, "cv_cli_broken", BROKEN_PLUGIN)
    install(site, "cv_cli_flood", GAUGE_PLUGIN)
    done = run_cli("plugins", "--json", site=site)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    names = [p["name"] for p in report["plugins"]]
    # Built-ins first (in name order), then entry points.
    assert names[-1] == "cv_cli_flood" and "demo" in names
    (failure,) = report["failures"]
    assert failure["name"] == "cv_cli_broken"
    assert failure["source"] == "cv_cli_broken 1.0: cv_cli_broken"
    assert "ImportError" in failure["error"]


def test_run_with_a_bad_config_exits_2_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = write(tmp_path, BAD)
    assert main(["run", "-c", str(path)]) == 2
    assert "unknown zone 'nord'" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_serves_the_demo_until_a_signal_then_stops_cleanly(
    tmp_path: Path, stop: signal.Signals
):
    config = DEMO.read_text(encoding="utf-8").replace(
        'path = "../data/demo.sqlite"', f'path = "{tmp_path / "demo.sqlite"}"'
    )
    path = write(tmp_path, config, name="demo.toml")
    process = subprocess.Popen(
        [sys.executable, "-m", "cityvisor", "run", "-c", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(None),
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "running; stop with" in line:
                break
        else:
            pytest.fail("the hub never said it was running:\n" + "".join(seen))
        process.send_signal(stop)
        _, rest = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(seen) + rest
    assert f"received {stop.name}: stopping" in rest
    assert "Traceback" not in rest
    # Times in the site's zone (Europe/Paris), ISO 8601 with the offset.
    running = next(line for line in seen if "running; stop with" in line)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0[12]:00 INFO ", running), running
    assert (tmp_path / "demo.sqlite").exists()


def test_the_console_log_is_one_line_per_record_in_the_sites_time_with_its_offset(
    capsys: pytest.CaptureFixture[str],
):
    restore = _setup_logging("info")
    try:
        log_in_site_time("Europe/Paris")
        record = logging.LogRecord("cityvisor.device.lighting", logging.WARNING, __file__, 1,
                                   "cab-07: offline (comm_failure)", None, None)  # fmt: skip
        record.created = 1796220000.25  # 2026-12-02T14:00:00.250Z
        line = logging.getLogger().handlers[0].format(record)
    finally:
        restore()
    assert line == (
        "2026-12-02T15:00:00.250+01:00 WARNING cityvisor.device.lighting: cab-07: offline (comm_failure)"
    )
    assert ConsoleFormatter.zone is None  # put back as it was


def test_protocol_libraries_speak_at_debug_only(capsys: pytest.CaptureFixture[str]):
    restore = _setup_logging("info")
    try:
        logging.getLogger("pymodbus.logging").error("Connection to (127.0.0.1, 5020) failed")
        logging.getLogger("pysnmp.carrier").warning("timeout")
        logging.getLogger("cityvisor.device.lighting").warning("cab-07: offline")
        logging.getLogger("aiohttp.server").error("Error handling request")
    finally:
        restore()
    err = capsys.readouterr().err
    assert "cab-07: offline" in err and "Error handling request" in err
    assert "Connection to" not in err and "timeout" not in err
    restore = _setup_logging("debug")
    try:
        logging.getLogger("pymodbus.logging").error("Connection to (127.0.0.1, 5020) failed")
    finally:
        restore()
    assert " DEBUG   pymodbus.logging: Connection to" in capsys.readouterr().err
