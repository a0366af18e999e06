"""``[opendata]``: off by default, nothing sensitive by default, errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor import DeviceType, hookimpl, point
from cityvisor.core.config import ConfigError, check_config, load_config
from cityvisor.core.plugins import make_plugin_manager

BASE = """
[site]
name = "Configville"

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "borne-1"
type = "bollards.bollard"
zone = "centre"
config = { host = "127.0.0.1", port = 1502, unit = 1 }

[[devices]]
id = "kiosk-1"
type = "kiosk.screen"
zone = "centre"
"""


class Screen(DeviceType):
    """An information kiosk: a text point and a counter (for the tests of what may be published)."""

    family = "kiosk"
    type_name = "kiosk.screen"
    message = point(str, doc={"en": "Message shown"})
    visitors = point(int, doc={"en": "Visitors today"})


class KioskPlugin:
    """A plugin with a device type and no open data model."""

    @staticmethod
    @hookimpl
    def cityvisor_device_types() -> list[type[DeviceType]]:
        return [Screen]


def problems(tmp_path: Path, opendata: str) -> list[str]:
    path = tmp_path / "city.toml"
    path.write_text(BASE + opendata, encoding="utf-8")
    config = load_config(path)
    plugins = make_plugin_manager(entry_points=False, plugins=[KioskPlugin()])
    return check_config(config, plugins)


def test_open_data_is_off_unless_enabled(tmp_path: Path):
    path = tmp_path / "city.toml"
    path.write_text(BASE, encoding="utf-8")
    assert load_config(path).opendata.enabled is False
    # Off, the section's contents are not even checked against the plugins.
    assert problems(tmp_path, '[opendata.families.kiosk]\npoints = ["message"]\n') == []


@pytest.mark.parametrize("family", ["cameras", "access", "switches"])
def test_a_sensitive_family_can_never_be_declared(tmp_path: Path, family: str):
    path = tmp_path / "city.toml"
    path.write_text(BASE + f"[opendata]\nenabled = true\n[opendata.families.{family}]\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    (message,) = error.value.problems
    assert message.startswith(f"{path}: opendata.families: ")
    assert family in message and "never published" in message


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            '[opendata.families.kiosk]\npoints = ["visitors", "message"]',
            "opendata.families.kiosk.points[1]: 'message' is a string point",
        ),
        (
            '[opendata.families.bollards]\npoints = ["position", "vehicle_on_loop"]',
            "opendata.families.bollards.points[1]: 'vehicle_on_loop' could identify a person",
        ),
        (
            '[opendata.families.bollards]\npoints = ["altitude"]',
            "opendata.families.bollards.points[0]: bollards has no point 'altitude'",
        ),
        (
            "[opendata.families.tramway]",
            "opendata.families.tramway: no device type of family 'tramway'",
        ),
        (
            "[opendata.families.kiosk]",
            "opendata.families.kiosk: family 'kiosk' has no open data model",
        ),
        (
            '[opendata.families.kiosk]\npoints = ["visitors"]\n'
            "[opendata.families.kiosk.aggregate.message]",
            "opendata.families.kiosk.aggregate.message: a string point cannot be aggregated",
        ),
    ],
)
def test_what_cannot_be_published_is_named_with_its_key(tmp_path: Path, table: str, expected: str):
    found = problems(tmp_path, f"[opendata]\nenabled = true\n{table}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'city.toml'}: {expected}"), found


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            "[opendata.families.bollards.aggregate.vehicle_on_loop]\nbucket = 60",
            "bucket: 60 s is below minimum_bucket (3600 s)",
        ),
        (
            "[opendata.families.bollards.aggregate.vehicle_on_loop]\nminimum_group = 1",
            "minimum_group: 1 is below minimum_group (3)",
        ),
        (
            '[opendata.families.bollards.aggregate.vehicle_on_loop]\nby = "street"',
            'opendata.families.bollards.aggregate.vehicle_on_loop.by: expected "zone"',
        ),
        ('[opendata.broker]\nurl = "ftp://broker"', "opendata.broker.url: expected an http://"),
        ('licence = "beerware"', "opendata.licence: expected one of etalab-2.0"),
    ],
)
def test_a_schema_error_names_the_file_and_the_key(tmp_path: Path, table: str, expected: str):
    path = tmp_path / "city.toml"
    header = "[opendata]\nenabled = true\n"
    if table.startswith("licence"):
        header, table = header + table + "\n", ""
    path.write_text(BASE + header + table + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    (message,) = error.value.problems
    assert message.startswith(f"{path}: ") and expected in message, message


def test_by_default_only_families_with_a_model_publish_their_mapped_points(tmp_path: Path):
    from cityvisor.core.hub import Hub
    from cityvisor.plugins.opendata import publication

    path = tmp_path / "city.toml"
    path.write_text(BASE + "[opendata]\nenabled = true\n", encoding="utf-8")
    config = load_config(path)
    plugins = make_plugin_manager(entry_points=False, plugins=[KioskPlugin()])
    assert check_config(config, plugins) == []
    shape = publication(Hub(config, plugins)).shape()
    assert shape == {"bollards": {"devices": 1, "points": ["height", "position"], "aggregates": []}}
