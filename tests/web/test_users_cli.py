"""``cityvisor users add|passwd|list|remove``, in-process and as a real command."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from cityvisor.cli import main
from cityvisor.core.store import SqliteStore
from cityvisor.plugins import demo
from cityvisor.plugins import web as web_plugin
from cityvisor.testing import running_hub
from cityvisor.web import find_server

from .conftest import CONFIG, Env

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "city.toml"
    path.write_text(CONFIG)
    return path


def run(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


def journal_of(path: Path) -> list[dict]:
    async def read() -> list[dict]:
        store = SqliteStore(path)
        await store.open()
        try:
            return [e.as_json() for e in await store.query_journal(kinds=["user"])]
        finally:
            await store.close()

    return anyio.run(read)


def test_add_list_passwd_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    config = str(write_config(tmp_path))
    argv = ["users", "add", "alice", "-c", config, "--role", "operator", "--zones", "centre"]
    assert run([*argv, "--password-stdin"], "a long password\n", monkeypatch) == 0
    assert "added alice: operator, zones centre" in capsys.readouterr().out
    assert run([*argv, "--password-stdin"], "a long password\n", monkeypatch) == 2
    assert "exists already" in capsys.readouterr().err

    assert run(["users", "list", "-c", config, "--json"], "", monkeypatch) == 0
    listed = {u["name"]: u for u in json.loads(capsys.readouterr().out)}
    assert listed["alice"] == {
        **listed["alice"],
        "role": "operator",
        "zones": ["centre"],
        "source": "table",
        "has_password": True,
    }
    # Declared in the file, no password yet: listed, cannot log in.
    assert listed["sam"]["source"] == "config" and listed["sam"]["has_password"] is False
    assert "password_hash" not in str(listed)

    assert (
        run(
            ["users", "passwd", "alice", "-c", config, "--password-stdin"],
            "another password\n",
            monkeypatch,
        )
        == 0
    )
    assert "password of alice changed" in capsys.readouterr().out
    # A user only the file declares gets a password: the file's role stays.
    assert (
        run(
            ["users", "passwd", "sam", "-c", config, "--password-stdin"],
            "sam's password\n",
            monkeypatch,
        )
        == 0
    )
    assert "password of sam changed" in capsys.readouterr().out
    assert run(["users", "list", "-c", config, "--json"], "", monkeypatch) == 0
    sam = next(u for u in json.loads(capsys.readouterr().out) if u["name"] == "sam")
    assert sam["source"] == "config+table" and sam["has_password"] and sam["role"] == "supervisor"
    assert run(["users", "remove", "alice", "-c", config], "", monkeypatch) == 0
    assert run(["users", "remove", "alice", "-c", config], "", monkeypatch) == 2
    assert "unknown user 'alice'" in capsys.readouterr().err

    entries = journal_of(tmp_path / "web.sqlite")
    assert [e["message"] for e in entries] == [
        "user alice removed",
        "password of sam changed",
        "password of alice changed",
        "user alice added",
    ]
    assert all("password" not in json.dumps(e["data"]) for e in entries)


def test_user_mistakes_are_one_line_and_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    config = str(write_config(tmp_path))
    add = ["users", "add", "bob", "-c", config, "--password-stdin"]
    assert run([*add, "--zones", "sud"], "a long password\n", monkeypatch) == 2
    assert "unknown zone 'sud'" in capsys.readouterr().err
    assert run(add, "short\n", monkeypatch) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert run(add, "\n", monkeypatch) == 2
    assert "no password" in capsys.readouterr().err
    # No terminal and no --password-stdin: refuse rather than read a password from a pipe.
    assert run(["users", "add", "bob", "-c", config], "a long password\n", monkeypatch) == 2
    assert "--password-stdin" in capsys.readouterr().err
    assert (
        run(
            ["users", "passwd", "ghost", "-c", config, "--password-stdin"],
            "a long password\n",
            monkeypatch,
        )
        == 2
    )
    assert run(["users", "add", "bob", "-c", config, "--role", "god"], "", monkeypatch) == 2


def test_a_user_name_or_password_that_is_not_plain_text_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    config = str(write_config(tmp_path))
    # Invalid UTF-8 in argv reaches Python as lone surrogates (surrogateescape).
    for name, expected in (
        (os.fsdecode(b"bad\xffname"), "not valid Unicode"),
        ("tab\tname", "control characters"),
        ("x" * 65, "at most 64 characters"),
        (" padded", "spaces"),
    ):
        argv = ["users", "add", name, "-c", config, "--password-stdin"]
        assert run(argv, "a long password\n", monkeypatch) == 2, name
        err = capsys.readouterr().err
        assert "user name" in err and expected in err, err
    argv = ["users", "add", "bob", "-c", config, "--password-stdin"]
    assert run(argv, "a long\x1b[2J password\n", monkeypatch) == 2
    assert "password must not contain control characters" in capsys.readouterr().err
    assert journal_of(tmp_path / "web.sqlite") == []


@pytest.mark.anyio
async def test_a_user_added_by_the_command_logs_in(tmp_path: Path):
    config = write_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "cityvisor",
            "users",
            "add",
            "carla",
            "-c",
            str(config),
            "--role",
            "supervisor",
            "--password-stdin",
        ],
        input=b"carla's long password\n",
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"added carla: supervisor" in done.stdout
    assert b"carla's long password" not in done.stdout + done.stderr
    async with running_hub(config, tmp_path, plugins=[demo, web_plugin]) as hub:
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        environment = Env(hub, server, server.url)
        try:
            client = environment.client()
            status, body = await client.post(
                "/api/v1/session", {"username": "carla", "password": "carla's long password"}
            )
            assert status == 200 and body["user"]["role"] == "supervisor"
        finally:
            for session in environment.sessions:
                await session.close()


def test_the_command_never_takes_the_password_as_an_argument(
    capsys: pytest.CaptureFixture[str],
):
    assert main(["users", "add", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "--password-stdin" in usage
    assert "--password " not in usage and "--password=" not in usage
