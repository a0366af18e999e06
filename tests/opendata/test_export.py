"""``cityvisor export``: the same files as ``/opendata/``, from a deployment's config and store."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from cityvisor.cli import main
from cityvisor.core.store import SqliteStore
from cityvisor.testing import running_hub, wait_for_point

pytestmark = pytest.mark.anyio

CONFIG = """
[site]
name = "Exportville"

[store]
path = "export.sqlite"
flush_interval = 0.05

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
location = [47.32, 5.04]
config = { period = 0.05, fill_rate = 100, initial_level = 42 }

[plugins]
disabled = ["web"]

[opendata]
enabled = true
base_url = "https://data.example.org"

[opendata.families.demo]
points = ["level", "valve"]
"""


async def _run_city(tmp_path: Path) -> tuple[Path, float]:
    """Run the deployment a moment, so that its store holds history; return the file, last level."""
    path = tmp_path / "city.toml"
    path.write_text(CONFIG, encoding="utf-8")
    async with running_hub(path, tmp_path, builtins=True) as hub:
        await wait_for_point(hub, "centre/demo/tank-a/level", lambda v: v.quality.is_good)
        await hub.store.flush_history()
        last = hub.points.value("centre/demo/tank-a/level").value
    return path, last


async def _journal(path: Path) -> list:
    store = SqliteStore(path)
    await store.open()
    try:
        return await store.query_journal(kinds=["opendata"])
    finally:
        await store.close()


async def test_export_writes_every_file_from_the_store_and_journals_it(tmp_path: Path, capsys):
    config, last = await _run_city(tmp_path)
    out = tmp_path / "published"
    status = await anyio.to_thread.run_sync(main, ["export", "-c", str(config), "-o", str(out)])
    assert status == 0
    printed = capsys.readouterr().out.split()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "catalog.jsonld",
        "demo/aggregates.csv",
        "demo/entities.csv",
        "demo/entities.jsonld",
        "demo/features.geojson",
        "demo/history.csv",
    ]
    assert sorted(printed) == sorted(str(out / f) for f in files)
    entities = {e["id"]: e for e in json.loads((out / "demo/entities.jsonld").read_text())}
    level = entities["urn:ngsi-ld:DeviceMeasurement:tank-a:level"]
    assert level["numValue"]["value"] == pytest.approx(last)
    history = list(csv.DictReader(io.StringIO((out / "demo/history.csv").read_text())))
    assert any(r["entity_id"].endswith("tank-a:level") for r in history)
    catalogue = json.loads((out / "catalog.jsonld").read_text())
    (dataset,) = catalogue["dcat:dataset"]
    urls = {d["dcat:downloadURL"]["@id"] for d in dataset["dcat:distribution"]}
    assert "https://data.example.org/opendata/demo/entities.csv" in urls
    (entry, *_) = await _journal(tmp_path / "export.sqlite")
    assert entry.data["via"] == "export" and entry.message.startswith("open data exported")
    assert sorted(entry.data["files"]) == sorted(str(out / f) for f in files)


async def test_export_is_a_command_a_shell_runs(tmp_path: Path):
    config, _ = await _run_city(tmp_path)
    out = tmp_path / "keyvalues"
    command = [sys.executable, "-m", "cityvisor", "export", "-c", str(config), "-o", str(out)]
    command += ["--key-values", "--dataset", "demo"]
    done = await anyio.run_process(command, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr.decode()
    entities = json.loads((out / "demo/entities.jsonld").read_text())
    assert {e["type"] for e in entities} == {"DeviceMeasurement"}
    assert all(isinstance(e["numValue"], int | float) for e in entities)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset", "cameras"], "no dataset cameras (datasets: demo)"),
        (["--days", "0"], "--days must be above 0"),
        (["--bucket", "5"], "--bucket must be 60 s to 31 days"),
    ],
)
async def test_a_wrong_argument_is_a_usage_error(tmp_path: Path, capsys, arguments, message):
    config, _ = await _run_city(tmp_path)
    argv = ["export", "-c", str(config), "-o", str(tmp_path / "out"), *arguments]
    assert await anyio.to_thread.run_sync(main, argv) == 2
    assert message in capsys.readouterr().err


def test_export_refuses_when_open_data_is_off_or_the_store_is_missing(tmp_path: Path, capsys):
    path = tmp_path / "city.toml"
    path.write_text(CONFIG.replace("enabled = true", "enabled = false"), encoding="utf-8")
    assert main(["export", "-c", str(path), "-o", str(tmp_path / "out")]) == 2
    assert "opendata.enabled is false" in capsys.readouterr().err
    path.write_text(CONFIG, encoding="utf-8")
    assert main(["export", "-c", str(path), "-o", str(tmp_path / "out")]) == 2
    assert "store.path" in capsys.readouterr().err and not (tmp_path / "out").exists()
