"""docs/reference/ is generated from the code: a test fails when a page is out of date."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvisor.cli import main
from cityvisor.docs import PAGES, cli_reference, sdk_reference, write_pages

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_reference_page_is_up_to_date(name: str):
    documented = (REFERENCE / name).read_text(encoding="utf-8")
    assert documented == PAGES[name](), (
        f"docs/reference/{name} is out of date: run `cityvisor docs` and commit the result"
    )


def test_the_sdk_page_documents_every_public_name():
    import cityvisor
    import cityvisor.testing

    page = sdk_reference()
    for module in (cityvisor, cityvisor.testing):
        for name in module.__all__:
            if not name.startswith("__"):
                assert f"`{name}" in page, name
    assert "0x" not in page  # no object addresses: the page must not change from run to run
    assert "*(no docstring)*" not in page


def test_the_cli_page_has_every_command_and_does_not_depend_on_the_terminal(monkeypatch):
    page = cli_reference()
    for command in ("run", "check-config", "demo", "new-plugin", "users add", "docs"):
        assert f"\n## cityvisor {command}\n" in page
    monkeypatch.setenv("COLUMNS", "40")
    assert cli_reference() == page


def test_the_command_writes_the_pages_and_checks_them(tmp_path: Path, capsys):
    assert main(["docs", "--output-dir", str(tmp_path), "--check"]) == 1
    assert main(["docs", "--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAGES)
    assert main(["docs", "--output-dir", str(tmp_path), "--check"]) == 0
    assert write_pages(tmp_path, check=True) == []


GUIDES = [
    "README.md",
    "docs/index.md",
    "docs/architecture.md",
    "docs/plugin-guide.md",
    "docs/deployment.md",
    "docs/reference/sdk.md",
    "examples/flood-sensor/README.md",
]


@pytest.mark.parametrize("page", GUIDES)
def test_every_relative_link_of_the_guides_leads_to_a_file(page: str):
    import re

    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        linked = (path.parent / target.split("#", 1)[0]).resolve()
        assert linked.exists(), f"{page} links to {target}, which does not exist"
