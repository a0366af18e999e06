"""Procedures as files: TOML and Markdown with TOML or YAML front matter, checked by check-config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cityvisor.core.config import check_config, load_config
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.ops.procedures import ProcedureError, load_directory, load_file
from cityvisor.plugins import demo
from cityvisor.plugins import ops as ops_plugin

from .conftest import CONFIG, PROCEDURE, write_procedures


def test_a_markdown_procedure_takes_its_steps_from_the_checklist(tmp_path: Path):
    path = tmp_path / "DEMO-01.md"
    path.write_text(PROCEDURE, encoding="utf-8")
    procedure = load_file(path)
    assert procedure.id == "DEMO-01" and procedure.version == 3
    assert procedure.title == {"fr": "Niveau haut", "en": "High water"}
    assert [s.text["fr"] for s in procedure.steps] == [
        "Vérifier le niveau sur la courbe",
        "Baisser la consigne",
        "Appeler l'astreinte eau",
    ]
    assert procedure.steps[1].command == "set_level"
    assert procedure.steps[2].call == "+33 3 80 00 00 00"
    assert procedure.applies(alarm="high_water", device_type="demo.tank", zone="nord")
    assert not procedure.applies(alarm="low_water", device_type="demo.tank")
    core = procedure.to_procedure()
    assert core.version == 3 and len(core.steps) == 3


def test_yaml_front_matter_and_toml_files_load_too(tmp_path: Path):
    (tmp_path / "a.md").write_text(
        "---\nid: ROAD-01\ntitle:\n  fr: Chaussée\n  en: Road\nsteps:\n"
        "  - Baliser\n  - text: Appeler la voirie\n    call: voirie\n---\nNotes\n",
        encoding="utf-8",
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "NET-03.toml").write_text(
        'version = 2\ntitle = "Port coupé"\n[[steps]]\ntext = "Réactiver"\ncommand = "enable_port"\n',
        encoding="utf-8",
    )
    found = load_directory(tmp_path)
    assert set(found) == {"ROAD-01", "NET-03"}
    assert found["ROAD-01"].steps[1].call == "voirie"
    assert found["NET-03"].version == 2 and found["NET-03"].steps[0].command == "enable_port"


def test_every_problem_names_the_file_and_the_key(tmp_path: Path):
    (tmp_path / "bad.toml").write_text('version = 0\ntitle = ""\nsteps = [3]\ncolour = 1\n')
    (tmp_path / "nofront.md").write_text("- [ ] step\n")
    (tmp_path / "x.toml").write_text('id = "DUP"\ntitle = "a"\nsteps = ["s"]\n')
    (tmp_path / "y.toml").write_text('id = "DUP"\ntitle = "b"\nsteps = ["s"]\n')
    with pytest.raises(ProcedureError) as raised:
        load_directory(tmp_path)
    problems = raised.value.problems
    text = "\n".join(problems)
    assert f"{tmp_path / 'bad.toml'}: version: expected a whole number" in text
    assert "bad.toml: title: expected a text" in text
    assert "bad.toml: steps[0]: expected a text or a table" in text
    assert "bad.toml: colour: unknown key" in text
    assert "nofront.md: expected front matter" in text
    assert "y.toml: id: duplicate id 'DUP'" in text


def test_six_hundred_procedures_load(tmp_path: Path):
    for n in range(300):
        (tmp_path / f"P-{n:03}.toml").write_text(
            f'title = "Procédure {n}"\nsteps = ["Un", "Deux", {{text = "Trois", call = "x"}}]\n'
            f'[applies_to]\nalarms = ["a{n}"]\n'
        )
        (tmp_path / f"M-{n:03}.md").write_text(
            f'+++\ntitle = "Fiche {n}"\n+++\n- [ ] Un\n- [ ] Deux `command: reset`\n'
        )
    started = time.perf_counter()
    found = load_directory(tmp_path)
    elapsed = time.perf_counter() - started
    assert len(found) == 600
    assert found["M-299"].steps[1].command == "reset"
    print(f"600 procedures loaded in {elapsed * 1000:.0f} ms")  # measured in bench/, not asserted


def _checked(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "city.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    plugins = make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, ops_plugin])
    return check_config(config, plugins)


def test_check_config_accepts_the_test_city(tmp_path: Path):
    write_procedures(tmp_path / "procedures")
    assert _checked(tmp_path, CONFIG.format(zone_reading="all")) == []


def test_an_alarm_naming_a_missing_procedure_is_an_error_naming_both(tmp_path: Path):
    write_procedures(tmp_path / "procedures")
    (tmp_path / "procedures" / "DEMO-01.md").unlink()
    text = CONFIG.format(zone_reading="all") + (
        '\n[[alarms]]\nname = "tank_full"\npoint = "centre/demo/tank-a/level"\nhigh = 99\n'
        'procedure = "FLOOD-09"\n'
    )
    problems = "\n".join(_checked(tmp_path, text))
    assert "alarms[0] (tank_full): names procedure 'FLOOD-09'" in problems
    assert "alarm high_water of device type demo.tank: names procedure 'DEMO-01'" in problems


def test_a_broken_procedure_file_fails_check_config(tmp_path: Path):
    write_procedures(tmp_path / "procedures")
    (tmp_path / "procedures" / "WATER-02.toml").write_text("title = \n")
    problems = _checked(tmp_path, CONFIG.format(zone_reading="all"))
    assert any(
        "plugins.ops.procedures:" in p and "WATER-02.toml: not valid TOML" in p for p in problems
    )
