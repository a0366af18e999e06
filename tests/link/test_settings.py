"""``[plugins.link]`` checked: errors name the file's key and say what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cityvisor.core.config import check_config, parse_config
from cityvisor.core.plugins import make_plugin_manager


def problems(tmp_path: Path, link: dict[str, Any]) -> list[str]:
    data = {
        "site": {"name": "x"},
        "zones": [{"id": "nord", "name": "Nord"}],
        "plugins": {"link": link},
    }
    config = parse_config(data, source="city.toml", base_dir=tmp_path)
    return check_config(config, make_plugin_manager(entry_points=False))


def test_an_edge_without_its_node_id_is_refused_naming_the_key(tmp_path: Path):
    found = problems(tmp_path, {"role": "edge", "group": "dijon"})
    assert any(
        p.startswith("city.toml: plugins.link.node: an edge needs its Sparkplug node id")
        for p in found
    )


def test_a_central_without_its_host_id_is_refused_naming_the_key(tmp_path: Path):
    found = problems(tmp_path, {"role": "central"})
    assert any("plugins.link.host_id" in p for p in found), found


def test_a_node_id_with_a_topic_separator_is_refused(tmp_path: Path):
    found = problems(tmp_path, {"role": "edge", "group": "dijon", "node": "a/b"})
    assert any(
        p.startswith("city.toml: plugins.link.node: expected a Sparkplug id") for p in found
    ), found


def test_a_missing_password_variable_and_tls_files_are_named(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CITYVISOR_TEST_BROKER_PASSWORD", raising=False)
    found = problems(
        tmp_path,
        {
            "role": "edge",
            "group": "dijon",
            "node": "talant",
            "username": "edge-talant",
            "password_env": "CITYVISOR_TEST_BROKER_PASSWORD",
            "tls_ca": "ca.pem",
        },
    )
    assert any(
        p.startswith("city.toml: plugins.link.password_env: the environment variable")
        for p in found
    ), found
    assert "city.toml: plugins.link.tls_ca: no file 'ca.pem'" in found


def test_the_link_is_off_unless_a_role_is_chosen(tmp_path: Path):
    assert problems(tmp_path, {}) == []
