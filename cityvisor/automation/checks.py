"""What ``cityvisor check-config`` verifies of the rules, beyond their own syntax.

- the rule files load (each problem names the file, the rule and the key);
- every point a condition reads exists, and the literal it is compared
  with fits the point's type;
- every device and command an action names exists, and every group
  selector matches at least one device that has the command;
- the playbook files load, their group steps (and undo) match devices,
  their waits read points that exist;
- an incident (a rule's action, a playbook's step) names a zone and a
  device that exist, and the operations layer (``[plugins.ops]``) is on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cityvisor.core.devices import Resources
from cityvisor.core.points import DataType, PointDB, PointSpec

from .grammar import Compare, Truthy
from .incidents import IncidentRequest
from .playbooks import load_playbooks
from .rules import (
    CommandAction,
    GroupAction,
    IncidentAction,
    RuleError,
    load_directory,
    rules_directory,
    selector_matches,
)
from .settings import AutomationSettings

if TYPE_CHECKING:
    from cityvisor.core.config import Config

__all__ = ["config_problems", "type_problem"]


def type_problem(spec: PointSpec, op: str, literal: Any) -> str | None:
    """Why ``literal`` cannot be compared with a point of this spec (None when it can)."""
    kind = spec.dtype
    if kind is DataType.BOOL:
        if not isinstance(literal, bool) or op not in ("==", "!="):
            return "a bool point is compared with == or != and true or false"
    elif kind in (DataType.INT, DataType.FLOAT):
        if isinstance(literal, bool) or not isinstance(literal, int | float):
            return f"a {kind.value} point is compared with a number"
    elif kind is DataType.STR:
        if not isinstance(literal, str):
            return "a str point is compared with a string in double quotes"
    elif kind is DataType.ENUM:
        labels = dict(spec.labels or {})
        if isinstance(literal, str):
            if literal not in labels.values():
                return f"{literal!r} is none of its labels ({', '.join(labels.values())})"
            if op not in ("==", "!="):
                return "a label is compared with == or !="
        elif isinstance(literal, bool) or not isinstance(literal, int):
            return "an enumerated point is compared with one of its labels or an integer"
    return None


def config_problems(
    config: Config, settings: AutomationSettings, device_types: Mapping[str, type[Any]]
) -> list[str]:
    """Every problem of the rules, one sentence each naming file, rule and key."""
    directory = rules_directory(config, settings.rules)
    if directory is None:
        return []
    try:
        rules = load_directory(directory)
    except RuleError as error:
        return [f"plugins.automation.rules: {p}" for p in error.problems]
    points = PointDB()
    devices = {}
    for resolved in config.resolve_devices(device_types):
        device = resolved.device_type(resolved.info, resolved.config, points, Resources())
        device.declare_points()
        devices[device.id] = device
    problems: list[str] = []
    for rule in rules:
        for node in rule.condition.walk():
            if not isinstance(node, Compare | Truthy):
                continue
            where = f"{rule.source}: when: position {node.position}"
            if node.point not in points:
                problems.append(f"{where}: unknown point {node.point!r}")
                continue
            spec = points.get(node.point).spec
            if isinstance(node, Truthy):
                if spec.dtype is not DataType.BOOL:
                    problems.append(
                        f"{where}: {node.point} is a {spec.dtype.value} point: compare it"
                    )
            else:
                problem = type_problem(spec, node.op, node.literal)
                if problem:
                    problems.append(f"{where}: {node.point}: {problem}")
        for action in rule.actions:
            if isinstance(action, CommandAction):
                target = devices.get(action.device)
                if target is None:
                    problems.append(f"{action.key}: device: unknown device {action.device!r}")
                elif action.command not in target.command_specs:
                    problems.append(
                        f"{action.key}: command: device {action.device} has no command "
                        f"{action.command!r} (it has {', '.join(sorted(target.command_specs))})"
                    )
            elif isinstance(action, GroupAction):
                problems += _selector_problems(
                    action.key, devices.values(), action.command, action.selector
                )
            elif isinstance(action, IncidentAction):
                problems += _incident_problems(action.key, action.request, config, devices)
    return problems + _playbook_problems(config, settings, points, devices)


def _incident_problems(
    where: str, request: IncidentRequest, config: Config, devices: Mapping[str, Any]
) -> list[str]:
    problems = []
    ops = config.settings("ops")
    if ops is None or not ops.enabled:
        problems.append(f"{where}: incident: the operations layer is off ([plugins.ops] enabled)")
    if request.zone not in {z.id for z in config.zones}:
        problems.append(f"{where}: zone: unknown zone {request.zone!r}")
    if request.device is not None and request.device not in devices:
        problems.append(f"{where}: device: unknown device {request.device!r}")
    return problems


def _selector_problems(
    where: str, devices: Iterable[Any], command: str, selector: Mapping[str, str]
) -> list[str]:
    by_criteria = {k: v for k, v in selector.items() if k != "device"}
    if any(
        selector_matches(d, command, by_criteria) and selector.get("device", d.id) == d.id
        for d in devices
    ):
        return []
    return [
        f"{where}: the selector {dict(selector)} matches no device with the command {command!r}"
    ]


def _playbook_problems(
    config: Config, settings: AutomationSettings, points: PointDB, devices: Mapping[str, Any]
) -> list[str]:
    """Playbook files load; group steps match devices (and their undo too); waits read known points."""
    directory = rules_directory(config, settings.playbooks)
    if directory is None:
        return []
    try:
        books = load_playbooks(directory)
    except RuleError as error:
        return [f"plugins.automation.playbooks: {p}" for p in error.problems]
    problems: list[str] = []
    for book in books.values():
        for index, step in enumerate(book.steps):
            where = f"{directory / (book.name + '.toml')}: step[{index}]"
            if step.kind == "group":
                problems += _selector_problems(where, devices.values(), step.command, step.selector)
                if step.undo is not None:
                    problems += _selector_problems(
                        f"{where}: undo", devices.values(), str(step.undo["command"]), step.selector
                    )
            elif step.incident is not None:
                problems += _incident_problems(where, step.incident, config, devices)
            elif step.kind == "broadcast":
                hydro = config.settings("hydro")
                if hydro is None or step.text not in hydro.alerts:
                    problems.append(
                        f"{where}: broadcast: no alert {step.text!r} in [plugins.hydro.alerts]"
                    )
                if step.device not in devices:
                    problems.append(f"{where}: device: unknown device {step.device!r}")
            elif step.condition is not None:
                for point_id in sorted(
                    step.condition.points() - set(p.id for p in points.points())
                ):
                    problems.append(f"{where}: wait: unknown point {point_id!r}")
    return problems
