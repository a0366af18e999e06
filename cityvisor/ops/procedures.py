"""Operating procedures as data: one file each, in a directory beside the deployment.

A city writes its procedures (Dijon has about 600) as files, one per
procedure, in the directory ``[plugins.ops] procedures`` names:

- ``LIGHT-07.toml``: the whole procedure in TOML;
- ``LIGHT-07.md``: Markdown whose front matter (TOML between ``+++`` lines,
  or YAML between ``---`` lines) holds the fields, and whose checklist items
  (``- [ ] ...``) are the steps when the front matter gives none.

Fields: ``id`` (defaults to the file's name), ``version``, ``title``,
``steps`` (each a text, or a table with ``text`` and optionally ``command``
to send or ``call`` a person to call), and ``applies_to`` (``alarms``,
``device_types``, ``zones``). Texts are a string or ``{fr = ..., en = ...}``.

The steps reach the alarm manager as a :class:`~cityvisor.core.alarms.Procedure`:
ticking one is :meth:`AlarmManager.tick_step`, journaled with the user, the
time and the procedure's version. See docs/procedures.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityvisor.core.alarms import Procedure

__all__ = [
    "ProcedureError",
    "ProcedureFile",
    "Step",
    "load_directory",
    "load_file",
    "missing_procedures",
]

SUFFIXES = (".toml", ".md")
"""The files a procedures directory is read from (others are ignored)."""

_CHECKLIST = re.compile(r"^\s*[-*]\s+\[[ xX]\]\s+(?P<text>.+?)\s*$")
_STEP_ANNOTATION = re.compile(r"\s*`(?P<key>command|call):\s*(?P<value>[^`]+)`\s*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FIELDS = {"id", "version", "title", "steps", "applies_to"}
_APPLIES = {"alarms", "device_types", "zones"}


class ProcedureError(ValueError):
    """Procedure files that cannot be used; the message names each file and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Step:
    """One checklist item: what to do, and optionally a command to send or someone to call."""

    text: Mapping[str, str]
    command: str | None = None
    """A command name (``set_level``) the operator sends from the step."""
    call: str | None = None
    """Who to call (a service, a number)."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"text": dict(self.text), "command": self.command, "call": self.call}


@dataclass(frozen=True)
class ProcedureFile:
    """A procedure as its file declares it: checklist, scope and version."""

    id: str
    version: int
    title: Mapping[str, str]
    steps: Sequence[Step]
    source: str
    alarms: frozenset[str] = field(default_factory=frozenset)
    """Alarm names (``lamp_failed``) or alarm ids it applies to."""
    device_types: frozenset[str] = field(default_factory=frozenset)
    zones: frozenset[str] = field(default_factory=frozenset)

    def to_procedure(self) -> Procedure:
        """The procedure as the alarm manager serves it (the checklist's texts)."""
        return Procedure.create(self.id, self.title, [s.text for s in self.steps], self.version)

    def applies(self, *, alarm: str = "", device_type: str = "", zone: str = "") -> bool:
        """True if each scope the file declares matches (an empty scope matches all)."""
        return (
            (not self.alarms or alarm in self.alarms)
            and (not self.device_types or device_type in self.device_types)
            and (not self.zones or zone in self.zones)
        )

    def names(self, *, alarm: str = "", device_type: str = "", zone: str = "") -> bool:
        """True if the file's scope names each of the criteria given (for searching)."""
        return (
            (not alarm or alarm in self.alarms)
            and (not device_type or device_type in self.device_types)
            and (not zone or zone in self.zones)
        )

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "version": self.version,
            "title": dict(self.title),
            "steps": [s.as_json() for s in self.steps],
            "applies_to": {
                "alarms": sorted(self.alarms),
                "device_types": sorted(self.device_types),
                "zones": sorted(self.zones),
            },
            "source": Path(self.source).name,
        }


def load_directory(directory: str | Path) -> dict[str, ProcedureFile]:
    """Every procedure of ``directory`` (``*.toml`` and ``*.md``, sub-directories included).

    :raises ProcedureError: listing every problem of every file at once
        (``LIGHT-07.md: steps[2].text: expected a text``), duplicate ids included.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ProcedureError([f"{root}: not a directory of procedures"])
    found: dict[str, ProcedureFile] = {}
    problems: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        try:
            procedure = load_file(path)
        except ProcedureError as error:
            problems.extend(error.problems)
            continue
        other = found.get(procedure.id)
        if other is not None:
            problems.append(f"{path}: id: duplicate id {procedure.id!r} (also {other.source})")
            continue
        found[procedure.id] = procedure
    if problems:
        raise ProcedureError(problems)
    return found


def load_file(path: str | Path) -> ProcedureFile:
    """One procedure file (TOML, or Markdown with TOML or YAML front matter)."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProcedureError([f"{path}: cannot be read ({error})"]) from None
    if path.suffix == ".md":
        fields, body = _front_matter(path, content)
    else:
        fields, body = _toml(path, content), ""
    return _build(path, fields, body)


def _toml(path: Path, content: str) -> dict[str, Any]:
    try:
        return tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise ProcedureError([f"{path}: not valid TOML ({error})"]) from None


def _front_matter(path: Path, content: str) -> tuple[dict[str, Any], str]:
    lines = content.splitlines()
    fence = lines[0].strip() if lines else ""
    if fence not in ("+++", "---"):
        raise ProcedureError(
            [f"{path}: expected front matter (a first line of +++ for TOML or --- for YAML)"]
        )
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == fence)
    except StopIteration:
        raise ProcedureError([f"{path}: the front matter has no closing {fence} line"]) from None
    head = "\n".join(lines[1:end])
    body = "\n".join(lines[end + 1 :])
    if fence == "+++":
        return _toml(path, head), body
    import yaml

    try:
        loaded = yaml.safe_load(head) or {}
    except yaml.YAMLError as error:
        raise ProcedureError([f"{path}: the YAML front matter is not valid ({error})"]) from None
    if not isinstance(loaded, dict):
        raise ProcedureError([f"{path}: the front matter must be a table of fields"])
    return loaded, body


def _build(path: Path, fields: Mapping[str, Any], body: str) -> ProcedureFile:
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{path}: {key}: {message}")

    for key in sorted(set(fields) - _FIELDS):
        problem(key, f"unknown key (expected: {', '.join(sorted(_FIELDS))})")
    procedure_id = fields.get("id", path.stem)
    if not isinstance(procedure_id, str) or not _ID.match(procedure_id):
        problem("id", f"expected letters, digits, '-', '_' or '.', got {procedure_id!r}")
        procedure_id = path.stem
    version = fields.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problem("version", f"expected a whole number from 1, got {version!r}")
        version = 1
    title = _text(fields.get("title"), "title", problem)
    raw_steps = fields.get("steps")
    if raw_steps is None:
        raw_steps = [m.group("text") for m in map(_CHECKLIST.match, body.splitlines()) if m]
    steps: list[Step] = []
    if not isinstance(raw_steps, list):
        problem("steps", "expected a list of steps")
    else:
        for index, raw in enumerate(raw_steps):
            step = _step(raw, f"steps[{index}]", problem)
            if step is not None:
                steps.append(step)
        if not raw_steps:
            problem("steps", "no steps (give steps = [...] or checklist items '- [ ] ...')")
    scopes: dict[str, frozenset[str]] = {}
    applies = fields.get("applies_to", {})
    if not isinstance(applies, Mapping):
        problem("applies_to", "expected a table with alarms, device_types, zones")
        applies = {}
    for key in sorted(set(applies) - _APPLIES):
        problem(f"applies_to.{key}", f"unknown key (expected: {', '.join(sorted(_APPLIES))})")
    for key in sorted(_APPLIES):
        value = applies.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problem(f"applies_to.{key}", "expected a list of names")
            value = []
        scopes[key] = frozenset(value)
    if problems:
        raise ProcedureError(problems)
    return ProcedureFile(
        procedure_id,
        version,
        title,
        steps,
        str(path),
        alarms=scopes["alarms"],
        device_types=scopes["device_types"],
        zones=scopes["zones"],
    )


def _text(value: Any, key: str, problem: Any) -> dict[str, str]:
    if isinstance(value, str) and value.strip():
        return {"fr": value, "en": value}
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items())
    ):
        return dict(value)
    problem(key, f"expected a text or {{fr = ..., en = ...}}, got {value!r}")
    return {}


def _step(raw: Any, key: str, problem: Any) -> Step | None:
    if isinstance(raw, str):
        command = call = None
        while match := _STEP_ANNOTATION.search(raw):
            if match.group("key") == "command":
                command = match.group("value").strip()
            else:
                call = match.group("value").strip()
            raw = raw[: match.start()]
        text = _text(raw, f"{key}.text", problem)
        return Step(text, command, call) if text else None
    if not isinstance(raw, Mapping):
        problem(key, f"expected a text or a table with text, command, call; got {raw!r}")
        return None
    for extra in sorted(set(raw) - {"text", "command", "call"}):
        problem(f"{key}.{extra}", "unknown key (expected: call, command, text)")
    text = _text(raw.get("text"), f"{key}.text", problem)
    optional: dict[str, str | None] = {}
    for name in ("command", "call"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problem(f"{key}.{name}", f"expected a text, got {value!r}")
            value = None
        optional[name] = value
    return Step(text, optional["command"], optional["call"]) if text else None


def missing_procedures(alarms: Iterable[tuple[str, str]], known: Iterable[str]) -> list[str]:
    """Problems for alarms that name a procedure nobody declares.

    :param alarms: ``(where the alarm is declared, procedure id)`` pairs.
    :param known: every procedure id (files and ``[[procedures]]``).
    """
    ids = set(known)
    return [
        f"{where}: names procedure {procedure!r}, which no procedure file nor "
        "[[procedures]] declares"
        for where, procedure in alarms
        if procedure not in ids
    ]
