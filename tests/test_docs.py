"""Docs that cannot drift: every hook is documented, in its docstring and on its page."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cityvisor.core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [
    name
    for name, function in vars(hookspecs).items()
    if name.startswith("cityvisor_") and inspect.isfunction(function)
]


def test_there_are_hooks():
    assert {"cityvisor_device_types", "cityvisor_web_routes", "cityvisor_startup"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_on_the_hooks_page(hook: str):
    page = (ROOT / "docs" / "plugin-hooks.md").read_text()
    assert f"\n## {hook}\n" in page, f"docs/plugin-hooks.md has no section for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_docstring_says_when_and_what_to_return(hook: str):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Called" in doc, f"{hook}: say when it is called"
    assert ":return:" in doc, f"{hook}: say what to return"
    parameters = inspect.signature(getattr(hookspecs, hook)).parameters
    for parameter in parameters:
        assert f":param {parameter}:" in doc, f"{hook}: document parameter {parameter}"
