"""check-config's report: every problem of a file at once, each entry named by its id, with its line."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from ..plugins import PluginConflictError, collect_device_types
from .errors import ConfigError, Loc, Problem
from .loading import _substitute, check_config, load_config
from .messages import _path, _pydantic_problems
from .model import Config, _format
from .sections import DeviceEntry

if TYPE_CHECKING:
    from ..plugins import PluginManager

_ENTRY_NAMES = {
    "zones": ("zone", "id"),
    "devices": ("device", "id"),
    "alarms": ("alarm", "name"),
    "procedures": ("procedure", "id"),
    "users": ("user", "name"),
}
"""Sections that are lists of entries: how an entry is called, and its naming key."""

_PROBLEM = re.compile(
    r"^(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z0-9_-]+)*): (?P<rest>.*)$", re.S
)


def check_file(
    path: str | os.PathLike[str],
    plugins: PluginManager,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config | None, list[str]]:
    """Every problem of a deployment file at once, as ``check-config`` reports them.

    Both passes run even when the first fails: a mistake in ``[site]`` or a
    zone no longer hides the devices whose ``config`` does not fit their
    type. Each line reads ``file:line: device cab-07: config.port: what was
    expected``: the entry named by its id (``devices[4]`` only when it has
    none) and the line of the key in the file, when it can be found.
    Returns the config (None when it could not be loaded) and the lines.
    """
    source = os.fspath(path)
    environ = os.environ if environ is None else environ
    try:
        loaded = load_config(source, environ=environ)
    except ConfigError as error:
        problems = list(error.problems)
        data, text_ = _read_quietly(source)
        if data is not None:
            for problem in _devices_alone(source, data, plugins, environ):
                if problem not in problems:
                    problems.append(problem)
        return None, [_locate(source, problem, data, text_) for problem in problems]
    problems = check_config(loaded, plugins)
    data, text_ = _read_quietly(source)
    return loaded, [_locate(source, problem, data, text_) for problem in problems]


def _read_quietly(source: str) -> tuple[dict[str, Any] | None, str]:
    """The file's TOML data and text, or (None, "") when it cannot be read or parsed."""
    try:
        text_ = Path(source).read_text(encoding="utf-8")
        return tomllib.loads(text_), text_
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None, ""


def _devices_alone(
    source: str, data: Mapping[str, Any], plugins: PluginManager, environ: Mapping[str, str]
) -> list[str]:
    """Pass 2 for the devices of a file that failed pass 1: each device's ``config``
    against its type (a device whose own keys are wrong was reported by pass 1)."""
    try:
        device_types = collect_device_types(plugins)
    except PluginConflictError as error:
        return [f"{source}: {error}"]
    problems: list[Problem] = []
    devices = data.get("devices")
    for index, raw in enumerate(devices if isinstance(devices, list) else []):
        substituted = _substitute(raw, ("devices", index), environ, [])
        try:
            entry = DeviceEntry.model_validate(substituted)
        except pydantic.ValidationError:
            continue
        device_type = device_types.get(entry.type)
        if device_type is None:
            if entry.enabled:
                known = ", ".join(sorted(device_types)) or "none: no plugin provides a device type"
                message = f"unknown device type {entry.type!r} (known types: {known})"
                problems.append((("devices", index, "type"), message))
            continue
        try:
            device_type.Config.model_validate(entry.config)
        except pydantic.ValidationError as error:
            where: Loc = ("devices", index, "config")
            problems.extend(_pydantic_problems(error, where, device_type.Config))
    return _format(source, problems)


def _locate(source: str, problem: str, data: Mapping[str, Any] | None, text_: str) -> str:
    """``f: devices[4].config.port: m`` -> ``f:57: device cab-07: config.port: m``."""
    prefix = f"{source}: "
    if not problem.startswith(prefix):
        return problem
    match = _PROBLEM.match(problem[len(prefix) :])
    if match is None:
        return problem
    loc: list[str | int] = []
    for name, number in re.findall(r"([A-Za-z0-9_-]+)|\[(\d+)\]", match["path"]):
        loc.append(int(number) if number else name)
    subject = match["path"]
    if len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in _ENTRY_NAMES:
        word, key = _ENTRY_NAMES[str(loc[0])]
        entries = data.get(str(loc[0])) if data is not None else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            rest = _path(tuple(loc[2:]))
            subject = f"{word} {name}" + (f": {rest}" if rest else "")
    line = _line_of(text_, tuple(loc))
    where = f"{source}:{line}" if line else source
    return f"{where}: {subject}: {match['rest']}"


def _line_of(text_: str, loc: Loc) -> int | None:
    """The line (1-based) where the key at ``loc`` is written, as near as it can be found.

    A TOML parser keeps no positions, so the text is read the way a person would:
    the ``[section]`` or the n-th ``[[section]]``, then the first key of the path in
    that block (or its ``[section.key]`` sub-table). None when nothing matches.
    """
    if not text_ or not loc:
        return None
    lines = text_.splitlines()
    section = str(loc[0])
    header = re.compile(r"^\s*\[\[\s*" + re.escape(section) + r"\s*\]\]")
    start: int | None = None
    rest: Loc
    if len(loc) >= 2 and isinstance(loc[1], int):
        found = [i for i, line in enumerate(lines) if header.match(line)]
        if loc[1] < len(found):
            start = found[loc[1]]
        rest = loc[2:]
    else:
        table = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]")
        start = next((i for i, line in enumerate(lines) if table.match(line)), None)
        rest = loc[1:]
        if start is None and rest:  # [plugins.lighting], [web.something]
            sub = re.compile(
                r"^\s*\[\s*" + re.escape(section) + r"\s*\.\s*" + re.escape(str(rest[0])) + r"\s*\]"
            )
            start = next((i for i, line in enumerate(lines) if sub.match(line)), None)
            rest = rest[1:]
        if start is None:  # a top-level key, or a dotted one (site.name = ...)
            key = re.compile(r"^\s*" + re.escape(section) + r"\s*[=.]")
            start = next((i for i, line in enumerate(lines) if key.match(line)), None)
            return None if start is None else start + 1
    if start is None:
        return None
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if re.match(r"^\s*\[(?!\s*" + re.escape(section) + r"\s*\.)", lines[i])
        ),
        len(lines),
    )
    if rest and isinstance(rest[0], str):
        key = re.compile(r"^\s*" + re.escape(rest[0]) + r"\s*[=.]")
        sub = re.compile(
            r"^\s*\[\s*" + re.escape(section) + r"\s*\.\s*" + re.escape(rest[0]) + r"\s*\]"
        )
        for i in range(start + 1, end):
            if key.match(lines[i]) or sub.match(lines[i]):
                return i + 1
    return start + 1
