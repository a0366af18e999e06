"""Anchors and bundles: the journal's head signed with a key kept outside the database."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cityvisor.cli import main
from cityvisor.core.config import load_config
from cityvisor.core.hub import Hub
from cityvisor.core.plugins import make_plugin_manager
from cityvisor.core.store import JournalEntry
from cityvisor.core.store.anchors import ANCHOR_KIND
from cityvisor.core.store.chain import GENESIS, hash_columns
from cityvisor.journal import EXIT_BROKEN

from .backends import Backend

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000


@pytest.fixture
def site(tmp_path: Path, backend: Backend) -> Path:
    """A deployment file, a journal of ten entries (one a minute from T0) and an anchor key."""

    async def fill() -> None:
        async with backend.opened() as store:
            for n in range(10):
                entry = JournalEntry(
                    kind="ack", message=f"ack {n}", user="alice", ts=T0 + n * 60_000
                )
                await store.journal(entry)

    anyio.run(fill)
    assert main(["journal", "keygen", "-o", str(tmp_path / "anchor.key")]) == 0
    config = tmp_path / "city.toml"
    config.write_text(
        f'[site]\nname = "Dijon"\ntimezone = "Europe/Paris"\n\n{backend.store_section()}\n'
        '[journal]\nanchor_key = "anchor.key"\nanchor_file = "archive/anchors.jsonl"\n'
    )
    return config


def verify(site: Path, *extra: str) -> int:
    return main(["journal", "verify", "-c", str(site), *extra])


def rechain_from(backend: Backend, first: int) -> None:
    """What someone with the database (but not the key) can do: rewrite the chain from a row."""
    rows = backend.rows(
        'SELECT id, ts, kind, message, "user", device, point, alarm, data FROM journal'
        " WHERE id >= %s ORDER BY id",
        first,
    )
    ((prev,),) = backend.rows("SELECT hash FROM journal WHERE id = %s", first - 1) or [(GENESIS,)]
    updates = []
    for row in rows:
        digest = hash_columns(tuple(row), prev)
        # Hex digests and integer ids only: safe as literals.
        updates.append(
            f"UPDATE journal SET prev_hash = '{prev}', hash = '{digest}' WHERE id = {row[0]}"
        )
        prev = digest
    backend.execute(*updates)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    key = tmp_path / "k"
    assert main(["journal", "keygen", "-o", str(key)]) == 0
    assert "fingerprint sha256:" in capsys.readouterr().out
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in Path(f"{key}.pub").read_bytes()
    before = key.read_bytes()
    assert main(["journal", "keygen", "-o", str(key)]) == 2
    assert "not overwritten" in capsys.readouterr().err
    assert key.read_bytes() == before


def test_an_anchor_is_appended_to_the_file_journaled_and_verified(
    site: Path, capsys: pytest.CaptureFixture[str]
):
    capsys.readouterr()
    assert main(["journal", "anchor", "-c", str(site)]) == 0
    assert "anchored row 10" in capsys.readouterr().out
    (line,) = (site.parent / "archive" / "anchors.jsonl").read_text().splitlines()
    anchor = json.loads(line)
    assert anchor["row_id"] == 10 and anchor["key"].startswith("sha256:")
    assert verify(site) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 11 rows chained")  # the anchor's own entry is row 11
    assert "2 anchors checked" in out  # the file's and the journal's
    public = str(site.parent / "anchor.key.pub")
    assert verify(site, "--public-key", public, "--json") == 0
    assert json.loads(capsys.readouterr().out)["anchors_checked"] == 2


def test_a_key_in_an_environment_variable(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("CITYVISOR_ANCHOR_KEY", (site.parent / "anchor.key").read_text())
    site.write_text(site.read_text().replace('"anchor.key"', '"env:CITYVISOR_ANCHOR_KEY"'))
    assert main(["journal", "anchor", "-c", str(site)]) == 0
    monkeypatch.delenv("CITYVISOR_ANCHOR_KEY")
    assert main(["journal", "anchor", "-c", str(site)]) == 2
    assert "CITYVISOR_ANCHOR_KEY is not set" in capsys.readouterr().err


def test_a_rewritten_chain_holds_but_the_anchor_names_it(
    site: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
):
    assert main(["journal", "anchor", "-c", str(site)]) == 0
    backend.execute("UPDATE journal SET message = 'nothing happened' WHERE id = 4")
    rechain_from(backend, 4)
    capsys.readouterr()
    public = str(site.parent / "anchor.key.pub")
    assert main(["journal", "verify", "-c", str(site), "--public-key", public]) == EXIT_BROKEN
    out = capsys.readouterr().out
    assert "BROKEN at row 10: the anchor in the anchor file" in out
    assert "the journal was rewritten" in out


def test_a_cut_journal_is_named_by_its_anchor(
    site: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
):
    assert main(["journal", "anchor", "-c", str(site)]) == 0
    backend.execute("DELETE FROM journal WHERE id >= 9")
    capsys.readouterr()
    assert verify(site) == EXIT_BROKEN
    assert "which the journal no longer has (it ends at row 8)" in capsys.readouterr().out


def test_a_forged_anchor_or_another_key_is_named(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["journal", "anchor", "-c", str(site)]) == 0
    anchors = site.parent / "archive" / "anchors.jsonl"
    anchor = json.loads(anchors.read_text())
    anchors.write_text(json.dumps({**anchor, "row_id": 9}) + "\n")
    capsys.readouterr()
    assert verify(site) == EXIT_BROKEN
    assert "its signature does not match" in capsys.readouterr().out
    assert main(["journal", "keygen", "-o", str(tmp_path / "other.key")]) == 0
    capsys.readouterr()
    assert verify(site, "--public-key", str(tmp_path / "other.key.pub")) == EXIT_BROKEN
    assert "signed with another key" in capsys.readouterr().out


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cityvisor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )


def test_a_bundle_is_verified_on_another_machine_with_only_the_bundle_and_the_key(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bundle = tmp_path / "march.bundle"
    # Rows 3 to 7: from T0 + 2 min, given as the site's local time without an offset, to T0 + 7 min.
    paris = dt.datetime.fromtimestamp((T0 + 2 * 60_000) / 1000, zoneinfo.ZoneInfo("Europe/Paris"))
    start = paris.replace(tzinfo=None).isoformat()
    assert main(
        ["journal", "export", "-c", str(site), "--from", start, "--to", str(T0 + 7 * 60_000),
         "-o", str(bundle)]
    ) == 0  # fmt: skip
    assert "rows 3 to 7" in capsys.readouterr().out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(bundle, elsewhere / "b.jsonl")
    shutil.copy(site.parent / "anchor.key.pub", elsewhere / "k.pub")
    checked = run_cli(
        "journal", "verify", "--bundle", "b.jsonl", "--public-key", "k.pub", cwd=elsewhere
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: 5 rows chained, head row 7" in checked.stdout
    lines = (elsewhere / "b.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace("ack 3", "ack 33")
    (elsewhere / "b.jsonl").write_text("\n".join(lines) + "\n")
    checked = run_cli(
        "journal", "verify", "--bundle", "b.jsonl", "--public-key", "k.pub", cwd=elsewhere
    )
    assert checked.returncode == EXIT_BROKEN
    assert "signature does not match" in checked.stdout


def test_export_of_an_empty_range_or_a_bad_time_is_a_usage_error(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = str(tmp_path / "b")
    assert main(["journal", "export", "-c", str(site), "--from", "0", "--to", "5", "-o", out]) == 2
    assert "no journal rows in that range" in capsys.readouterr().err
    argv = ["journal", "export", "-c", str(site), "--from", "yesterday", "--to", "5", "-o", out]
    assert main(argv) == 2
    assert "--from 'yesterday': expected epoch milliseconds or ISO 8601" in capsys.readouterr().err


HUB_CONFIG = """
[site]
name = "Testville"

{store}flush_interval = 0.05

[journal]
anchor_key = "{key}"

[[zones]]
id = "centre"
name = "Centre"

[[devices]]
id = "tank-a"
type = "demo.tank"
zone = "centre"
config = {{ period = 0.05 }}
"""


def hub_in(tmp_path: Path, key: str, backend: Backend) -> Hub:
    config = tmp_path / "city.toml"
    config.write_text(HUB_CONFIG.format(key=key, store=backend.store_section()))
    manager = make_plugin_manager(builtins=("cityvisor.plugins.demo",), entry_points=False)
    return Hub(load_config(config), manager)


class LogWatch(logging.Handler):
    """Sets ``seen`` when the hub logs ``text`` (the hub logs on the event loop's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def watching(text: str) -> Iterator[LogWatch]:
    watch = LogWatch(text)
    logger = logging.getLogger("cityvisor.core.hub")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


@pytest.mark.anyio
async def test_the_hub_anchors_the_journal_when_it_starts(tmp_path: Path, backend: Backend):
    assert main(["journal", "keygen", "-o", str(tmp_path / "anchor.key")]) == 0
    hub = hub_in(tmp_path, "anchor.key", backend)
    with watching("journal anchored at row") as watch:
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            with anyio.fail_after(10):
                await watch.seen.wait()
            (entry,) = await hub.store.query_journal(kinds=[ANCHOR_KIND])
            tg.cancel_scope.cancel()
    assert entry.user == "hub" and entry.data["anchor"]["row_id"] == entry.id - 1
    (line,) = (tmp_path / "journal-anchors.jsonl").read_text().splitlines()
    assert json.loads(line) == entry.data["anchor"]
    argv = ["journal", "verify", "-c", str(tmp_path / "city.toml")]
    assert await anyio.to_thread.run_sync(main, argv) == 0


@pytest.mark.anyio
async def test_a_key_the_hub_cannot_read_is_logged_and_the_hub_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from .backends import SqliteBackend

    hub = hub_in(tmp_path, "missing.key", SqliteBackend(tmp_path))
    with watching("journal anchor failed") as watch:
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            with anyio.fail_after(10):
                await watch.seen.wait()
            assert await hub.points.wait_for("centre/demo/tank-a/level", lambda v: True, 5)
            tg.cancel_scope.cancel()
    assert "cannot read" in caplog.text and "missing.key" in caplog.text
    assert not (tmp_path / "journal-anchors.jsonl").exists()
