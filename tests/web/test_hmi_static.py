"""The HMI's static files: the page, the two dictionaries, the vendored libraries, the CSP rules.

These run without a browser: they check what the browser test cannot see
at a glance (every keyed string exists in French and English, nothing in
the markup needs ``'unsafe-inline'``, every vendored library has its
licence) and the page the server fills with the site's language and name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import find_server
from cityvisor.web.api import STATIC_ROOT
from cityvisor.web.app import content_security_policy, tile_source

from .conftest import Env

JS = sorted((STATIC_ROOT / "js").rglob("*.js"))
DICTIONARIES = {lang: STATIC_ROOT / "i18n" / f"{lang}.json" for lang in ("fr", "en")}


def load(lang: str) -> dict[str, str]:
    return json.loads(DICTIONARIES[lang].read_text(encoding="utf-8"))


def test_french_and_english_have_the_same_keys_and_no_empty_text():
    fr, en = load("fr"), load("en")
    assert sorted(fr) == sorted(en)
    assert all(isinstance(v, str) and v for v in [*fr.values(), *en.values()])
    for key in fr:
        assert set(re.findall(r"\{(\w+)\}", fr[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_every_literal_key_the_screens_use_is_translated():
    keys = set(load("fr"))
    used: set[str] = set()
    for path in JS:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bt\(\s*\"([a-z_]+(?:\.[a-z_0-9]+)+)\"", text))
        # keys listed in arrays for table headers: ["alarms.col.time", ...].map(... t(key))
        used |= {k for k in re.findall(r"\"((?:alarms|equipment|journal)\.col\.[a-z_]+)\"", text)}
    assert used, "no keyed string found: the pattern no longer matches the code"
    assert sorted(used - keys) == []


def test_keyed_families_of_values_are_complete():
    keys = set(load("fr"))
    families = {
        "priority": ["critical", "high", "medium", "low"],
        "role": ["viewer", "operator", "supervisor", "admin"],
        "state": [
            "normal",
            "unack_active",
            "ack_active",
            "rtn_unack",
            "shelved",
            "suppressed",
            "out_of_service",
            "maintenance",
        ],
        "connection": ["live", "connecting", "reconnecting", "offline"],
        "status": ["online", "alarm", "offline"],
        "quality": ["good", "uncertain", "bad"],
        "nav": [
            "alarms",
            "equipment",
            "map",
            "trends",
            "journal",
            "cameras",
            "maintenance",
            "approvals",
        ],
        "commands": ["interlocked", "refused"],
    }
    journal = (STATIC_ROOT / "js" / "views" / "journal.js").read_text(encoding="utf-8")
    block = journal[journal.index("KINDS = [") : journal.index("];", journal.index("KINDS = ["))]
    families["journal.kind"] = re.findall(r"\"([a-z_]+)\"", block)
    missing = [
        f"{p}.{v}" for p, values in families.items() for v in values if f"{p}.{v}" not in keys
    ]
    assert missing == []


def test_markup_needs_no_inline_script_or_style():
    page = (STATIC_ROOT / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert "<style" not in page and "style=" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    for path in JS:
        text = path.read_text(encoding="utf-8")
        # Data goes in with textContent; HTML strings and style attributes are never built.
        assert "innerHTML" not in text, path
        assert "insertAdjacentHTML" not in text, path
        assert 'setAttribute("style"' not in text and "cssText" not in text, path
        assert "eval(" not in text and "new Function" not in text, path


def test_every_vendored_library_has_its_licence_and_a_readme():
    vendored = sorted(p for p in (STATIC_ROOT / "vendor").iterdir() if p.is_dir())
    assert [p.name for p in vendored] == ["leaflet-1.9.4", "uplot-1.6.32"]
    for folder in vendored:
        assert (folder / "LICENSE").read_text(encoding="utf-8").strip()
        readme = (folder / "README.md").read_text(encoding="utf-8")
        version = folder.name.rsplit("-", 1)[1]
        assert version in readme and "npm" in readme


def test_module_imports_resolve_to_files():
    for path in JS:
        for target in re.findall(
            r"^import .*? from \"(\.[^\"]+)\";", path.read_text("utf-8"), re.M
        ):
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target}"


@pytest.mark.anyio
async def test_the_page_speaks_the_site_language_and_shows_its_name(tmp_path: Path):
    config = """
[site]
name = "Dijon <Métropole> & co"
language = "en"

[store]
path = "page.sqlite"

[web]
host = "127.0.0.1"
port = 0

[[zones]]
id = "centre"
name = "Centre"
"""
    async with running_hub(config, tmp_path, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None
        await server.ready.wait()
        env = Env(hub, server, server.url)
        try:
            status, page = await env.client().get("/")
        finally:
            for session in env.sessions:
                await session.close()
    assert status == 200
    assert '<html lang="en" data-language="en">' in page
    assert "<title>Dijon &lt;Métropole&gt; &amp; co — cityvisor</title>" in page
    assert 'data-site="Dijon &lt;Métropole&gt; &amp; co"' in page
    assert "%CITYVISOR" not in page


@pytest.mark.anyio
async def test_static_files_are_served_without_a_session(env: Env):
    client = env.client()
    for path in (
        "/static/js/app.js",
        "/static/css/app.css",
        "/static/i18n/fr.json",
        "/static/vendor/uplot-1.6.32/uPlot.esm.js",
        "/static/vendor/leaflet-1.9.4/leaflet.css",
    ):
        async with client.http.get(env.url + path) as response:
            assert response.status == 200, path
            await response.read()
    status, page = await client.get("/")
    assert status == 200 and 'src="/static/js/app.js"' in page and 'lang="fr"' in page


@pytest.mark.parametrize(
    ("template", "source"),
    [
        ("https://tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org"),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
        ("http://127.0.0.1:8081/{z}/{x}/{y}.png?key=abc", "http://127.0.0.1:8081"),
        ("/tiles/{z}/{x}/{y}.png", None),
        ("https://tile{s}.example.org/{z}/{x}/{y}.png", None),
        ("", None),
    ],
)
def test_the_csp_lets_in_the_tile_server_and_nothing_else(template: str, source: str | None):
    assert tile_source(template) == source
    policy = content_security_policy(template)
    images = next(p for p in policy.split("; ") if p.startswith("img-src "))
    assert images == "img-src 'self' data: blob:" + (f" {source}" if source else "")
    assert "script-src 'self';" in policy and "unsafe" not in policy


@pytest.mark.anyio
async def test_the_openapi_document_describes_device_locations_for_the_map(env: Env):
    client = await env.login("victor")
    status, document = await client.get("/api/v1/openapi.json")
    assert status == 200
    listed = document["paths"]["/api/v1/devices"]["get"]["responses"]["200"]
    item = listed["content"]["application/json"]["schema"]["properties"]["devices"]["items"]
    assert item["properties"]["location"]["type"] == ["array", "null"]
    one = document["paths"]["/api/v1/devices/{id}"]["get"]["responses"]["200"]
    assert "location" in one["content"]["application/json"]["schema"]["properties"]
    status, body = await client.get("/api/v1/devices")
    assert {d["id"]: d["location"] for d in body["devices"]} == {
        "tank-a": [47.32, 5.04],
        "tank-b": None,
    }
