"""check-config on rule files: syntax, unknown points, type mismatches, selectors that match nothing."""

from __future__ import annotations

from pathlib import Path

from cityvisor.core.config import load_config
from cityvisor.core.config.loading import check_config
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.plugins import automation, demo

from .conftest import LEVEL_A, write_config

RULES = f"""
[[rule]]
name = "fine"
when = "{LEVEL_A} > 80 and centre/demo/tank-a/valve == \\"filling\\""

[[rule.then]]
group = "set_level"
zone = "nord"
arguments = {{ setpoint = 10 }}

[[rule]]
name = "wrong"
when = "centre/demo/tank-z/level > 1 or {LEVEL_A} == true or centre/demo/tank-a/valve == \\"open\\""

[[rule.then]]
group = "set_level"
tag = "nowhere"

[[rule.then]]
device = "tank-a"
command = "explode"

[[rule.then]]
device = "tank-q"
command = "set_level"
"""


def problems(tmp_path: Path, rules: str) -> list[str]:
    path = write_config(tmp_path, rules)
    plugins = make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, automation])
    config = load_config(path)
    config.load_settings(plugins)
    return check_config(config, plugins)


def test_unknown_points_types_devices_commands_and_empty_selectors(tmp_path: Path) -> None:
    found = problems(tmp_path, RULES)
    source = f"{tmp_path / 'rules' / 'city.toml'}: rule[1] (wrong)"
    assert any(
        p.endswith(f"{source}: when: position 0: unknown point 'centre/demo/tank-z/level'")
        for p in found
    ), found
    assert any(f"{source}: when: position 32: {LEVEL_A}: a float point" in p for p in found)
    assert any("'open' is none of its labels (closed, filling, draining)" in p for p in found)
    assert any(
        f"{source}: then[0]: the selector {{'tag': 'nowhere'}} matches no" in p for p in found
    )
    assert any(
        f"{source}: then[1]: command: device tank-a has no command 'explode'" in p for p in found
    )
    assert any(f"{source}: then[2]: device: unknown device 'tank-q'" in p for p in found)
    assert not any("(fine)" in p for p in found), found
    assert len(found) == 6, found


def test_syntax_errors_name_file_rule_key_and_position(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[[rule]]\nname = "broken"\nwhen = "a/b > "\n[[rule.then]]\nnotify = "x"\n'
        '[[rule]]\nname = "no-actions"\nwhen = "a/b"\n',
    )
    path = tmp_path / "rules" / "city.toml"
    assert any(
        f"{path}: rule[0] (broken): when: position 6: expected a number" in p for p in found
    ), found
    assert any(f"{path}: rule[1] (no-actions): then: expected at least one" in p for p in found)


def test_playbook_selectors_undo_and_wait_points(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "flood.toml").write_text(
        '[[step]]\ngroup = "set_level"\nzone = "nord"\nundo = { command = "raise" }\n'
        '[[step]]\ngroup = "set_level"\nzone = "sud"\n'
        '[[step]]\nwait = "nord/demo/tank-x/level < 3"\n'
        '[[step]]\ncheck = "Look"\n',
        encoding="utf-8",
    )
    path = write_config(tmp_path, "", extra='playbooks = "playbooks"')
    plugins = make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, automation])
    config = load_config(path)
    config.load_settings(plugins)
    found = check_config(config, plugins)
    book = tmp_path / "playbooks" / "flood.toml"
    assert any(
        f"{book}: step[0]: undo: the selector {{'zone': 'nord'}} matches no" in p for p in found
    )
    assert any(f"{book}: step[1]: the selector {{'zone': 'sud'}} matches no" in p for p in found)
    assert any(f"{book}: step[2]: wait: unknown point 'nord/demo/tank-x/level'" in p for p in found)
    assert len(found) == 3, found


def test_playbook_devices_incidents_broadcasts_and_members(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "crisis.toml").write_text(
        '[[step]]\ngroup = "set_level"\ndevice = "tank-a"\n'
        '[[step]]\ngroup = "set_level"\ndevice = "tank-q"\n'
        '[[step]]\nincident = "Leak"\nzone = "sud"\n'
        '[[step]]\nbroadcast = "population"\ndevice = "tank-z"\n',
        encoding="utf-8",
    )
    path = write_config(tmp_path, "", extra='playbooks = "playbooks"')
    plugins = make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, automation])
    config = load_config(path)
    config.load_settings(plugins)
    found = check_config(config, plugins)
    book = tmp_path / "playbooks" / "crisis.toml"
    assert any(
        f"{book}: step[1]: the selector {{'device': 'tank-q'}} matches no" in p for p in found
    ), found
    assert any(f"{book}: step[2]: incident: the operations layer is off" in p for p in found)
    assert any(f"{book}: step[2]: zone: unknown zone 'sud'" in p for p in found)
    assert any(
        f"{book}: step[3]: broadcast: no alert 'population' in [plugins.hydro.alerts]" in p
        for p in found
    )
    assert any(f"{book}: step[3]: device: unknown device 'tank-z'" in p for p in found)
    assert len(found) == 5, found


def test_a_bad_step_names_the_file_the_step_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "bad.toml").write_text(
        '[[step]]\nincident = "Leak"\nzone = "nord"\npriority = "urgent"\n'
        '[[step]]\nincident = "Leak"\nzone = "nord"\ndispatch = true\n'
        '[[step]]\nbroadcast = "population"\ndevice = "g"\nstage = "flooded"\n'
        '[[step]]\ngroup = "set_level"\nzone = "nord"\nmembers = []\n',
        encoding="utf-8",
    )
    path = write_config(tmp_path, "", extra='playbooks = "playbooks"')
    plugins = make_plugin_manager(entry_points=False, builtins=(), plugins=[demo, automation])
    config = load_config(path)
    config.load_settings(plugins)
    found = check_config(config, plugins)
    book = tmp_path / "playbooks" / "bad.toml"
    for expected in (
        f"{book}: step[0]: priority: expected one of critical, high, medium, low (got 'urgent')",
        f"{book}: step[1]: skill: a dispatch needs the crew skill to look for",
        f"{book}: step[2]: stage: expected one of vigilance, alert, crisis (got 'flooded')",
        f'{book}: step[3]: members: expected "all" or a list of member names',
    ):
        assert any(expected in p for p in found), (expected, found)
