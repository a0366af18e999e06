"""Rules: a condition and the actions it triggers, read from the deployment's TOML files.

A rule file holds ``[[rule]]`` tables::

    [[rule]]
    name = "tank-a-high"
    when = "centre/demo/tank-a/level > 90 for 30 s"

    [[rule.then]]
    device = "tank-a"
    command = "set_level"
    arguments = { setpoint = 50 }

    [[rule.then]]
    notify = "Tank A was high for 30 s: brought back to 50 %"

Every problem names the file, the rule and the key (and, in ``when``, the
character position). See docs/automation.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grammar import Condition, ConditionError, parse
from .incidents import INCIDENT_KEYS, IncidentRequest, incident_request

__all__ = [
    "CommandAction",
    "GroupAction",
    "IncidentAction",
    "NotifyAction",
    "Rule",
    "RuleError",
    "load_directory",
    "load_file",
    "rules_directory",
    "selector_matches",
]

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


class RuleError(ValueError):
    """Rule files that cannot be used; ``problems`` lists each one, naming file, rule and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class CommandAction:
    """Send one command to one device."""

    device: str
    command: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    member: str | None = None
    key: str = ""


@dataclass(frozen=True)
class GroupAction:
    """Send one command to every device a selector matches (zone, family, tag)."""

    command: str
    selector: Mapping[str, str]
    arguments: Mapping[str, Any] = field(default_factory=dict)
    members: str | list[str] = "all"
    key: str = ""


@dataclass(frozen=True)
class NotifyAction:
    """Write a note in the journal."""

    message: str
    key: str = ""


@dataclass(frozen=True)
class IncidentAction:
    """Open an incident in the operations layer (and send the nearest crew, if asked)."""

    request: IncidentRequest
    key: str = ""


Action = CommandAction | GroupAction | NotifyAction | IncidentAction


@dataclass
class Rule:
    """A rule as loaded, and its state in the running hub."""

    name: str
    when: str
    condition: Condition
    actions: list[Action]
    source: str
    """``file: rule[i]`` (what check-config and the journal name)."""
    description: str = ""
    enabled: bool = True
    held: bool = False
    """The condition held at the last evaluation (a firing needs it false first)."""
    deadline: float = float("inf")
    last_fired_ts: int | None = None
    last_values: dict[str, Any] = field(default_factory=dict)
    fired: int = 0
    failing: bool = False

    def as_json(self) -> dict[str, Any]:
        """What the API shows of a rule."""
        return {
            "name": self.name,
            "description": self.description,
            "when": self.when,
            "enabled": self.enabled,
            "holding": self.held,
            "source": self.source,
            "fired": self.fired,
            "last_fired_ts": self.last_fired_ts,
            "last_values": self.last_values,
            "failing": self.failing,
            "actions": [_action_json(a) for a in self.actions],
        }


def _action_json(action: Action) -> dict[str, Any]:
    if isinstance(action, CommandAction):
        return {"device": action.device, "command": action.command, "arguments": action.arguments}
    if isinstance(action, GroupAction):
        return {"group": action.command, **action.selector, "arguments": action.arguments}
    if isinstance(action, IncidentAction):
        return {"incident": action.request.title, **action.request.as_json()}
    return {"notify": action.message}


def selector_matches(device: Any, command: str, selector: Mapping[str, str]) -> bool:
    """True if ``device`` has ``command`` and every criterion of ``selector`` (zone, family, tag)."""
    return (
        command in device.command_specs
        and selector.get("zone", device.zone) == device.zone
        and selector.get("family", device.family) == device.family
        and ("tag" not in selector or selector["tag"] in device.info.tags)
    )


def rules_directory(config: Any, directory: str | None) -> Path | None:
    """The rules directory, relative to the deployment file."""
    if directory is None:
        return None
    path = Path(directory)
    if not path.is_absolute():
        path = Path(str(config.source)).parent / path
    return path


def load_directory(directory: Path) -> list[Rule]:
    """Every rule of every ``*.toml`` file of ``directory`` (sorted by file name).

    :raises RuleError: listing every problem; a rule name used twice is one.
    """
    if not directory.is_dir():
        raise RuleError([f"{directory}: not a directory of rule files"])
    rules: list[Rule] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            rules += load_file(path)
        except RuleError as error:
            problems += error.problems
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.name in seen:
            problems.append(
                f"{rule.source}: name: {rule.name!r} is already used by {seen[rule.name]}"
            )
        seen.setdefault(rule.name, rule.source)
    if problems:
        raise RuleError(problems)
    return rules


def load_file(path: Path) -> list[Rule]:
    """The rules of one file. :raises RuleError: naming file, rule and key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RuleError([f"{path}: {error}"]) from None
    unknown = sorted(set(document) - {"rule"})
    problems = [f"{path}: {key}: unknown table (expected [[rule]])" for key in unknown]
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError([f"{path}: rule: expected [[rule]] tables"])
    rules = []
    for index, table in enumerate(tables):
        try:
            rules.append(_rule(path, index, table))
        except RuleError as error:
            problems += error.problems
    if problems:
        raise RuleError(problems)
    return rules


def _rule(path: Path, index: int, table: Any) -> Rule:
    where = f"{path}: rule[{index}]"
    if not isinstance(table, dict):
        raise RuleError([f"{where}: expected a table"])
    problems: list[str] = []
    name = table.get("name")
    if not isinstance(name, str) or not name or not set(name) <= set(NAME_CHARS) or len(name) > 64:
        problems.append(
            f"{where}: name: expected lower-case letters, digits, - or _ (got {name!r})"
        )
        name = f"rule-{index}"
    else:
        where = f"{path}: rule[{index}] ({name})"
    for key in sorted(set(table) - {"name", "when", "then", "description", "enabled"}):
        problems.append(
            f"{where}: {key}: unknown key (expected name, when, then, description, enabled)"
        )
    when = table.get("when")
    condition: Condition | None = None
    if not isinstance(when, str):
        problems.append(f"{where}: when: expected a condition string")
    else:
        try:
            condition = parse(when)
        except ConditionError as error:
            problems.append(f"{where}: when: {error}")
    then = table.get("then")
    actions: list[Action] = []
    if not isinstance(then, list) or not then:
        problems.append(f"{where}: then: expected at least one [[rule.then]] action")
    else:
        for number, entry in enumerate(then):
            try:
                actions.append(_action(f"{where}: then[{number}]", entry))
            except RuleError as error:
                problems += error.problems
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{where}: enabled: expected true or false")
    description = table.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{where}: description: expected a string")
    if problems or condition is None:
        raise RuleError(problems)
    return Rule(
        name=name,
        when=when,  # type: ignore[arg-type]
        condition=condition,
        actions=actions,
        source=where,
        description=description,
        enabled=bool(enabled),
    )


_SELECTOR_KEYS = ("zone", "family", "tag")


def _action(where: str, entry: Any) -> Action:
    if not isinstance(entry, dict):
        raise RuleError([f"{where}: expected a table"])
    arguments = entry.get("arguments", {})
    if not isinstance(arguments, dict):
        raise RuleError([f"{where}: arguments: expected a table"])
    if "notify" in entry:
        _only(where, entry, {"notify"})
        if not isinstance(entry["notify"], str) or not entry["notify"].strip():
            raise RuleError([f"{where}: notify: expected the note's text"])
        return NotifyAction(entry["notify"], key=where)
    if "incident" in entry:
        _only(where, entry, set(INCIDENT_KEYS))

        def problem(message: str) -> RuleError:
            return RuleError([f"{where}: {message}"])

        return IncidentAction(incident_request(entry, problem), key=where)
    if "group" in entry:
        _only(where, entry, {"group", "arguments", "members", *_SELECTOR_KEYS})
        selector = {k: entry[k] for k in _SELECTOR_KEYS if k in entry}
        if not selector or not all(isinstance(v, str) for v in selector.values()):
            raise RuleError([f"{where}: expected a selector: zone, family or tag (strings)"])
        if not isinstance(entry["group"], str):
            raise RuleError([f"{where}: group: expected a command name"])
        members = entry.get("members", "all")
        return GroupAction(entry["group"], selector, arguments, members, key=where)
    if "command" in entry:
        _only(where, entry, {"command", "device", "arguments", "member"})
        device, command = entry.get("device"), entry["command"]
        if not isinstance(device, str) or not isinstance(command, str):
            raise RuleError([f"{where}: expected device and command (strings)"])
        member = entry.get("member")
        if member is not None and not isinstance(member, str):
            raise RuleError([f"{where}: member: expected a string"])
        return CommandAction(device, command, arguments, member, key=where)
    raise RuleError(
        [
            f"{where}: expected one of command (with device), group (with a selector), "
            "notify, incident"
        ]
    )


def _only(where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(entry) - allowed)
    if extra:
        raise RuleError([f"{where}: {k}: unknown key here" for k in extra])
