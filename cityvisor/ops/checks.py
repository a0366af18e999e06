"""What ``cityvisor check-config`` verifies of the operations layer, beyond its schema.

- the procedure files load (each problem names the file and the key);
- every alarm of the deployment (``[[alarms]]`` and the default alarms of
  the device types it uses) names a procedure that a file or
  ``[[procedures]]`` declares, and the message names both;
- crews, services and procedure scopes name zones that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .operations import procedures_directory
from .procedures import ProcedureError, load_directory, missing_procedures
from .settings import OpsSettings

if TYPE_CHECKING:
    from cityvisor.core.config import Config

__all__ = ["config_problems"]


def config_problems(
    config: Config, settings: OpsSettings, device_types: Mapping[str, type[Any]]
) -> list[str]:
    """Every problem of ``[plugins.ops]`` and of the alarms' procedures, one sentence each."""
    problems: list[str] = []
    zones = {z.id for z in config.zones}
    files = {}
    directory = procedures_directory(config, settings)
    if directory is not None:
        try:
            files = load_directory(directory)
        except ProcedureError as error:
            problems += [f"plugins.ops.procedures: {p}" for p in error.problems]
    for procedure in files.values():
        for zone in sorted(procedure.zones - zones):
            problems.append(f"{procedure.source}: applies_to.zones: unknown zone {zone!r}")
        for name in sorted(procedure.device_types - set(device_types)):
            problems.append(f"{procedure.source}: applies_to.device_types: unknown type {name!r}")
    for index, crew in enumerate(settings.crews):
        for zone in crew.zones:
            if zone != "*" and zone not in zones:
                problems.append(f"plugins.ops.crews[{index}].zones: unknown zone {zone!r}")
    default = settings.open311.default_zone
    if default is not None and default not in zones:
        problems.append(f"plugins.ops.open311.default_zone: unknown zone {default!r}")
    if not settings.require_procedures:
        return problems
    known = set(files) | {p.id for p in config.procedures}
    named: list[tuple[str, str]] = [
        (f"alarms[{i}] ({entry.name})", entry.procedure)
        for i, entry in enumerate(config.alarms)
        if entry.procedure
    ]
    used = sorted({d.type for d in config.devices})
    for type_name in used:
        device_type = device_types.get(type_name)
        if device_type is None:
            continue
        for alarm_name, spec in device_type.alarm_specs.items():
            if spec.procedure:
                named.append((f"alarm {alarm_name} of device type {type_name}", spec.procedure))
    problems += missing_procedures(named, known)
    return problems
