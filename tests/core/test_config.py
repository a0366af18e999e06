"""The deployment file: every problem named by file, key path and expectation, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

from cityvisor import DeviceConfig, DeviceType, command, hookimpl, point
from cityvisor.core.alarms import Priority
from cityvisor.core.config import (
    Config,
    ConfigError,
    check_config,
    load_config,
    parse_config,
    reference,
    resolve_devices,
)
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.users import Role
from cityvisor.plugins.demo import Tank, TankConfig

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.toml"
EXAMPLE = ROOT / "config" / "example-city.toml"


class CameraConfig(DeviceConfig):
    """A camera's settings (for the tests)."""

    host: str
    port: int = 80
    password: str = ""


class Camera(DeviceType):
    """A stand-in camera: only its family matters here."""

    family = "cameras"
    type_name = "cameras.camera"
    Config = CameraConfig

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError


class CabinetConfig(DeviceConfig):
    """A cabinet with numbered circuits (for the tests)."""

    circuits: int = 2


class Cabinet(DeviceType):
    """A stand-in lighting cabinet with per-circuit points."""

    family = "lighting"
    type_name = "lighting.cabinet"
    Config = CabinetConfig

    level = point(float, unit="%", per="circuit")

    @command(per="circuit")
    async def switch_off(self, circuit: str) -> None:
        """Switch a circuit off."""

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError


TYPES = {t.type_name: t for t in (Tank, Camera, Cabinet)}

BASE = """
[site]
name = "Testville"

[[zones]]
id = "centre"
name = "Centre"

[[zones]]
id = "nord"
name = "Nord"
"""


def write(tmp_path: Path, body: str, *, base: str = BASE, name: str = "city.toml") -> Path:
    """Write a deployment file (``base`` + ``body``) and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(base) + textwrap.dedent(body), encoding="utf-8")
    return path


def problems_of(path: Path, types: dict[str, type[DeviceType]] | None = None) -> list[str]:
    """Every problem reported for a file, through pass 1 and (if given types) pass 2."""
    try:
        config = load_config(path, environ={})
        if types is not None:
            config.resolve_devices(types)
    except ConfigError as error:
        assert str(error) == "\n".join(error.problems)
        return error.problems
    pytest.fail(f"{path} was accepted")


# --------------------------------------------------------------------------- valid files


def test_the_demo_config_loads_and_resolves_against_the_demo_plugin():
    config = load_config(DEMO)
    assert config.source == str(DEMO)
    assert [z.id for z in config.zones] == ["centre", "nord", "sud"]
    assert config.site.timezone == "Europe/Paris"
    resolved = config.resolve_devices(TYPES)
    assert [r.info.id for r in resolved] == [d.id for d in config.devices]
    assert all(isinstance(r.config, TankConfig) for r in resolved)
    assert any(r.config.fail_every for r in resolved), "one tank shows recovery"
    assert config.alarms and config.procedures and config.users


def test_the_example_city_config_loads():
    config = load_config(EXAMPLE)
    assert config.devices
    assert check_config(config, make_plugin_manager(entry_points=False)) == []


def test_defaults_fill_every_optional_section(tmp_path: Path):
    config = load_config(write(tmp_path, ""))
    assert config.web.host == "127.0.0.1" and config.web.port == 8080
    assert config.site.language == "fr"
    assert config.store.retention == {"default": 365.0}
    assert config.plugins.entry_points is True and config.plugins.disabled == []


def test_a_relative_store_path_is_relative_to_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[store]\npath = "../var/city.sqlite"\n')
    monkeypatch.chdir(ROOT)
    assert load_config(path).store.path == tmp_path / "var" / "city.sqlite"


def test_retention_keeps_a_default_class(tmp_path: Path):
    config = load_config(write(tmp_path, "[store.retention]\nenergy = 1000\n"))
    assert config.store.retention == {"default": 365.0, "energy": 1000.0}


def test_device_entries_become_device_infos_and_typed_configs(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "cam-1"
        type = "cameras.camera"
        zone = "centre"
        config = { host = "10.0.0.9", port = "8080" }

        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "nord"
        name = "Tank one"
        tags = ["water", "north"]
        location = [47.3, 5.04]
        watched_by = ["cam-1"]
        require_approval = ["drain"]
        config = { capacity = 250 }

        [[devices]]
        id = "tank-off"
        type = "demo.tank"
        zone = "nord"
        enabled = false
        """,
    )
    config = load_config(path)
    camera, tank, off = config.resolve_devices(TYPES)
    assert camera.config == CameraConfig(host="10.0.0.9", port=8080)
    assert tank.info.watched_by == ("cam-1",)
    assert tank.info.tags == frozenset({"water", "north"})
    assert tank.info.location == (47.3, 5.04)
    assert tank.info.require_approval == frozenset({"drain"})
    assert tank.config.capacity == 250.0
    assert off.enabled is False
    # The hub builds only the enabled devices.
    assert [entry.id for entry, _ in resolve_devices(config, TYPES)] == ["cam-1", "tank-1"]


def test_a_disabled_device_of_an_uninstalled_type_is_kept_without_error(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "door-1"
        type = "access.door"
        zone = "centre"
        enabled = false
        """,
    )
    assert load_config(path).resolve_devices(TYPES) == []


def test_config_alarms_become_alarm_specs_on_full_point_ids(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "nord"

        [[devices]]
        id = "cab-1"
        type = "lighting.cabinet"
        zone = "centre"

        [[alarms]]
        name = "tank-1-full"
        point = "nord/demo/tank-1/level"
        high = 80
        deadband = 2
        priority = "critical"
        message = { fr = "Plein", en = "Full" }
        procedure = "DEMO-01"
        on_delay = 10
        latching = true

        [[alarms]]
        name = "tank-1-maintenance"
        point = "nord/demo/tank-1/maintenance"
        equals = true
        message = "Maintenance"

        [[alarms]]
        name = "c2-bad"
        point = "centre/lighting/cab-1/circuit2/level"
        quality_bad = true
        """,
    )
    config = load_config(path)
    config.resolve_devices(TYPES)
    full, maintenance, bad = config.alarm_specs()
    assert full.point == "nord/demo/tank-1/level"
    assert (full.condition.kind, full.condition.limit, full.condition.deadband) == ("high", 80, 2)
    assert full.priority is Priority.CRITICAL and full.latching and full.on_delay == 10
    assert full.message == {"fr": "Plein", "en": "Full"}
    assert maintenance.condition.kind == "equals" and maintenance.condition.limit is True
    assert maintenance.message == {"fr": "Maintenance", "en": "Maintenance"}
    assert bad.condition.kind == "quality_bad"
    spec, point_id = config.alarms[0].to_spec()
    assert spec == full and point_id == full.point


def test_procedures_become_the_alarm_managers_procedures(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[procedures]]
        id = "EAU-03"
        version = 2
        title = { fr = "Niveau critique", en = "Critical level" }
        steps = [{ fr = "Appeler", en = "Call" }, "Consigner"]
        """,
    )
    procedure = load_config(path).procedures[0].to_procedure()
    assert (procedure.id, procedure.version) == ("EAU-03", 2)
    assert procedure.title == {"fr": "Niveau critique", "en": "Critical level"}
    assert procedure.steps == [
        {"fr": "Appeler", "en": "Call"},
        {"fr": "Consigner", "en": "Consigner"},
    ]


def test_users_carry_their_role_and_zones(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[users]]
        name = "alice"
        role = "supervisor"

        [[users]]
        name = "bob"
        role = "operator"
        zones = ["nord"]
        """,
    )
    alice, bob = load_config(path).user_list()
    assert alice.role is Role.SUPERVISOR and alice.in_zone("centre")
    assert bob.may(Role.OPERATOR, "nord") and not bob.in_zone("centre")


# --------------------------------------------------------------------------- errors name file, key, expectation


def test_a_wrong_value_in_a_device_config_names_file_key_path_and_expectation(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "cam-1"
        type = "cameras.camera"
        zone = "centre"
        config = { host = "10.0.0.9" }

        [[devices]]
        id = "cam-2"
        type = "cameras.camera"
        zone = "centre"
        config = { host = "10.0.0.10" }

        [[devices]]
        id = "cam-3"
        type = "cameras.camera"
        zone = "centre"
        config = { host = "10.0.0.11", port = "abc" }
        """,
    )
    (problem,) = problems_of(path, TYPES)
    assert problem.startswith(f"{path}: devices[2].config.port: Input should be a valid integer")
    assert problem.endswith('got "abc"')


def test_an_unknown_key_is_an_error_that_lists_the_expected_keys(tmp_path: Path):
    path = write(
        tmp_path,
        '[web]\nprot = 8080\n\n[[devices]]\nid = "t"\ntype = "demo.tank"\n'
        'zone = "nord"\nconfig = { capacty = 3 }\n',
    )
    assert problems_of(path) == [
        f"{path}: web.prot: unknown key (expected one of: host, port, session_lifetime, "
        "secure_cookies, tile_url, basemap, metrics_token, read_timeout, "
        "max_connections_per_address, ws_send_timeout, ws_heartbeat)"
    ]
    path.write_text(path.read_text().replace("prot", "port"))
    (problem,) = problems_of(path, TYPES)
    assert problem.startswith(f"{path}: devices[0].config.capacty: unknown key (expected one of: ")
    assert "capacity" in problem


def test_a_missing_required_key_is_named(tmp_path: Path):
    path = write(tmp_path, "[[zones]]\nname = 'x'\n", base="[site]\n")
    assert problems_of(path) == [
        f"{path}: site.name: required key is missing",
        f"{path}: zones[0].id: required key is missing",
    ]


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [site]
        name = "x"
        timezone = "Mars/Olympus"

        [web]
        port = 70000

        [[zones]]
        id = "Centre Ville"
        name = "c"

        [[users]]
        name = "bob"
        role = "god"
        """,
        base="",
    )
    problems = problems_of(path)
    assert [p.split(": ")[1] for p in problems] == [
        "site.timezone",
        "web.port",
        "zones[0].id",
        "users[0].role",
    ]
    assert 'expected an IANA time zone such as "Europe/Paris", got "Mars/Olympus"' in problems[0]
    assert "less than or equal to 65535" in problems[1]
    assert "expected a slug" in problems[2]
    assert "'viewer', 'operator', 'supervisor' or 'admin'" in problems[3]


def test_cross_references_are_checked_with_their_key_paths(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "sud"
        watched_by = ["cam-9"]

        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "nord"

        [[alarms]]
        name = "a"
        point = "nord/demo/tank-7/level"
        high = 1

        [[alarms]]
        name = "a"
        point = "centre/demo/tank-1/level"
        high = 1

        [[alarms]]
        name = "b"
        point = "tank-1/level"
        high = 1

        [[users]]
        name = "bob"
        role = "viewer"
        zones = ["west"]
        """,
    )
    assert problems_of(path) == [
        f"{path}: devices[0].zone: unknown zone 'sud' (declared zones: centre, nord)",
        f"{path}: devices[0].watched_by[0]: unknown device 'cam-9'",
        f"{path}: devices[1].id: duplicate id 'tank-1' (also devices[0])",
        f"{path}: alarms[0].point: unknown device 'tank-7'",
        f"{path}: alarms[1].name: duplicate name 'a' (also alarms[0])",
        f"{path}: alarms[1].point: device 'tank-1' is in zone 'sud', not 'centre'",
        f"{path}: alarms[2].point: expected a point id zone/family/device/[member/]point, "
        "got 'tank-1/level'",
        f"{path}: users[0].zones[0]: unknown zone 'west' (declared zones: centre, nord, or \"*\")",
    ]


def test_device_types_are_checked_once_the_plugins_are_known(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "tank-1"
        type = "demo.tnak"
        zone = "nord"

        [[devices]]
        id = "tank-2"
        type = "demo.tank"
        zone = "nord"
        watched_by = ["tank-3"]
        require_approval = ["explode"]

        [[devices]]
        id = "tank-3"
        type = "demo.tank"
        zone = "nord"

        [[devices]]
        id = "cab-1"
        type = "lighting.cabinet"
        zone = "nord"

        [[alarms]]
        name = "a"
        point = "nord/demo/tank-2/levle"
        high = 1

        [[alarms]]
        name = "b"
        point = "nord/demo/tank-2/valve"
        high = 1

        [[alarms]]
        name = "c"
        point = "nord/lighting/cab-1/level"
        high = 1

        [[alarms]]
        name = "d"
        point = "nord/lighting/cab-1/circuit9/level"
        high = 1

        [[alarms]]
        name = "e"
        point = "nord/lighting/tank-3/level"
        high = 1
        """,
    )
    assert problems_of(path, TYPES) == [
        f"{path}: devices[0].type: unknown device type 'demo.tnak' "
        "(known types: cameras.camera, demo.tank, lighting.cabinet)",
        f"{path}: devices[1].require_approval[0]: demo.tank has no command 'explode' "
        "(its commands: drain, set_level, toggle_maintenance)",
        f"{path}: devices[1].watched_by[0]: 'tank-3' is a demo.tank, not a camera",
        f"{path}: alarms[0].point: demo.tank has no point 'levle' "
        "(its points: level, maintenance, online, setpoint, valve, volume)",
        f"{path}: alarms[1].high: a limit needs a numeric point; 'valve' is enum",
        f"{path}: alarms[2].point: point 'level' exists per circuit: "
        "give zone/family/device/circuit/level",
        f"{path}: alarms[3].point: device 'cab-1' has no circuit 'circuit9' "
        "(its circuits: circuit1, circuit2)",
        f"{path}: alarms[4].point: device 'tank-3' is of family 'demo', not 'lighting'",
    ]


def test_an_alarm_needs_exactly_one_condition(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "tank-1"
        type = "demo.tank"
        zone = "nord"

        [[alarms]]
        name = "a"
        point = "nord/demo/tank-1/level"
        high = 3
        low = 2

        [[alarms]]
        name = "b"
        point = "nord/demo/tank-1/level"
        """,
    )
    assert problems_of(path) == [
        f"{path}: alarms[0]: expected exactly one of high, low, equals, not_equals, "
        "quality_bad = true (found: high, low)",
        f"{path}: alarms[1]: expected exactly one of high, low, equals, not_equals, "
        "quality_bad = true (found: none)",
    ]


def test_a_toml_syntax_error_names_file_line_and_column(tmp_path: Path):
    path = write(tmp_path, "\n[web]\nport = = 8080\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: line 14, column 8: TOML syntax error: ")


def test_a_toml_error_at_the_end_of_the_file_names_the_last_line(tmp_path: Path):
    path = write(tmp_path, "[web]\nhost = ")
    assert problems_of(path) == [f"{path}: line 13 (end of file): TOML syntax error: Invalid value"]


def test_a_missing_file_is_a_config_error(tmp_path: Path):
    assert problems_of(tmp_path / "nope.toml") == [
        f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"
    ]


# --------------------------------------------------------------------------- secrets


CAMERA_WITH_SECRETS = """
[[devices]]
id = "cam-1"
type = "cameras.camera"
zone = "centre"
config = { host = "10.0.0.9", password = "${CAM_PASSWORD}" }
"""


def test_env_variables_are_substituted_in_string_values(tmp_path: Path):
    path = write(
        tmp_path, CAMERA_WITH_SECRETS + '\n[web]\ntile_url = "$${NOT_A_VAR}/{z}/{x}/{y}"\n'
    )
    config = load_config(path, environ={"CAM_PASSWORD": "s3cr3t"})
    (camera,) = config.resolve_devices(TYPES)
    assert camera.config.password == "s3cr3t"
    assert config.web.tile_url == "${NOT_A_VAR}/{z}/{x}/{y}", "$${...} is a literal"


def test_an_unset_env_variable_names_the_key_and_the_variable(tmp_path: Path):
    path = write(tmp_path, CAMERA_WITH_SECRETS)
    assert problems_of(path) == [
        f"{path}: devices[0].config.password: environment variable CAM_PASSWORD is not set"
    ]


def test_os_environ_is_the_default_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CAM_PASSWORD", "from-the-env")
    config = load_config(write(tmp_path, CAMERA_WITH_SECRETS))
    assert config.devices[0].config["password"] == "from-the-env"


def test_the_redacted_dump_masks_every_secret(tmp_path: Path):
    path = write(
        tmp_path,
        """
        [[devices]]
        id = "sw-1"
        type = "switches.switch"
        zone = "centre"
        enabled = false

        [devices.config]
        host = "10.0.0.2"
        community = "private"
        auth_key = "k1"
        priv_password = "p1"
        token = "t"
        client_secret = "s"
        stream = "rtsp://admin:hunter2@10.0.0.9/live"
        empty_password = ""
        """,
    )
    config = load_config(path)
    dump = config.redacted()
    device = dump["devices"][0]["config"]
    assert device == {
        "host": "10.0.0.2",
        "community": "***",
        "auth_key": "***",
        "priv_password": "***",
        "token": "***",
        "client_secret": "***",
        "stream": "rtsp://admin:***@10.0.0.9/live",
        "empty_password": "",
    }
    assert dump["site"]["name"] == "Testville"
    for secret in ("private", "k1", "p1", "hunter2"):
        assert secret not in repr(config) and secret not in str(config)
        assert secret not in str(dump)


# --------------------------------------------------------------------------- plugin checks


def test_check_config_adds_the_plugins_own_problems_and_survives_a_broken_check(tmp_path: Path):
    class Picky:
        @hookimpl
        def cityvisor_check_config(self, config: Config) -> list[str]:
            return [f"devices[{i}]: picky about {d.id}" for i, d in enumerate(config.devices)]

    class Broken:
        @hookimpl
        def cityvisor_check_config(self, config: Config) -> list[str]:
            raise RuntimeError("oops")

    path = write(tmp_path, '[[devices]]\nid = "t"\ntype = "demo.tank"\nzone = "nord"\n')
    plugins = make_plugin_manager(entry_points=False, plugins=[Picky(), Broken()])
    problems = check_config(load_config(path), plugins)
    assert f"{path}: devices[0]: picky about t" in problems
    assert any("'Broken'" in p and "RuntimeError: oops" in p for p in problems)


def test_parse_config_validates_data_without_a_file():
    config = parse_config({"site": {"name": "x"}}, source="inline")
    assert config.source == "inline"
    with pytest.raises(ConfigError, match=r"^inline: site: required key is missing$"):
        parse_config({}, source="inline")


# --------------------------------------------------------------------------- the reference


def test_every_field_is_documented():
    undocumented = [
        f"{model.__name__}.{name}"
        for model in _models(Config)
        for name, field in model.model_fields.items()
        if not field.description and model is not Config
    ]
    assert undocumented == []


def test_docs_configuration_md_is_generated_from_the_schema():
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert documented == reference() + "\n", (
        "docs/configuration.md is out of date: "
        "run `python -m cityvisor config-reference -o docs/configuration.md`"
    )


def _models(model: type) -> list[type]:
    import pydantic

    found = [model]
    for field in model.model_fields.values():
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in candidates:
            if (
                isinstance(candidate, type)
                and issubclass(candidate, pydantic.BaseModel)
                and candidate not in found
            ):
                found += _models(candidate)
    return found


# --------------------------------------------------------------------------- plugin settings


class _FloodSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    vigilance_level: float = 2.5


class _FloodPlugin:
    """A plugin with its own settings table."""

    @hookimpl
    def cityvisor_settings(self):
        return _FloodSettings


def _settings_config(tmp_path, tables: str):
    path = tmp_path / "city.toml"
    path.write_text('[site]\nname = "T"\n\n' + tables)
    return load_config(path)


def test_a_plugin_reads_its_own_settings_table(tmp_path):
    config = _settings_config(tmp_path, "[plugins.flood]\nvigilance_level = 2.8\n")
    manager = make_plugin_manager(builtins=(), entry_points=False)
    manager.register(_FloodPlugin(), name="flood")
    settings = config.load_settings(manager)
    assert settings["flood"].vigilance_level == 2.8
    assert config.settings("flood").vigilance_level == 2.8
    assert check_config(config, manager) == []


def test_plugin_settings_errors_name_the_key_path(tmp_path):
    config = _settings_config(
        tmp_path, '[plugins.flood]\nvigilance_level = "high"\n\n[plugins.nobody]\nx = 1\n'
    )
    manager = make_plugin_manager(builtins=(), entry_points=False)
    manager.register(_FloodPlugin(), name="flood")
    problems = check_config(config, manager)
    assert any(
        "plugins.flood.vigilance_level: Input should be a valid number" in p for p in problems
    )
    assert any(
        "plugins.nobody: no loaded plugin named 'nobody' has settings" in p for p in problems
    )
    assert all(p.startswith(str(tmp_path / "city.toml")) for p in problems)


def test_a_plugins_key_that_is_not_a_table_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="plugins: flood: expected disabled, entry_points"):
        _settings_config(tmp_path, "[plugins]\nflood = 3\n")
