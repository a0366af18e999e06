"""Loading a deployment file: TOML, environment substitution, validation and the cross-checks between sections."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from ..devices import DeviceConfig, DeviceType
from ..plugins import PluginConflictError, collect_device_types
from .errors import ConfigError, Loc, Problem
from .messages import _pydantic_problems
from .model import Config, _format
from .sections import DeviceEntry

if TYPE_CHECKING:
    from ..plugins import PluginManager


_ENV = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, substitute and validate a deployment file (pass 1: no plugin needed).

    ``"${NAME}"`` in any string value is replaced by the environment variable
    ``NAME`` (``$${NAME}`` keeps a literal ``${NAME}``), so secrets can stay
    out of the file. Relative paths in the file are relative to its directory.

    :raises ConfigError: the file is missing, is not valid TOML (file, line
        and column named), or has problems (each with its key path).
    """
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as error:
        raise ConfigError([f"{source}: cannot read the file: {error.strerror or error}"]) from None
    try:
        text_ = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [f"{source}: not UTF-8 text ({error.reason} at byte {error.start})"]
        ) from None
    try:
        data = tomllib.loads(text_)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_toml_problem(source, text_, error)]) from None
    return parse_config(
        data, source=source, base_dir=Path(source).resolve().parent, environ=environ
    )


def parse_config(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-parsed TOML data (what :func:`load_config` does after reading).

    :raises ConfigError: listing every problem found, each with its key path.
    """
    problems: list[Problem] = []
    data = _substitute(data, (), os.environ if environ is None else environ, problems)
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as error:
        problems.extend(_pydantic_problems(error, (), Config))
        raise ConfigError(_format(source, problems)) from None
    problems.extend(_cross_reference_problems(config))
    if problems:
        raise ConfigError(_format(source, problems))
    config._source = source
    return config


def resolve_devices(
    config: Config, device_types: Mapping[str, type[DeviceType]]
) -> list[tuple[DeviceEntry, DeviceConfig]]:
    """The enabled devices with their typed config (what the hub builds), in file order.

    :raises ConfigError: see :meth:`Config.resolve_devices`.
    """
    return [(r.entry, r.config) for r in config.resolve_devices(device_types) if r.enabled]


def check_config(config: Config, plugins: PluginManager) -> list[str]:
    """Every problem of a loaded config once the plugins are known (pass 2), as lines.

    Resolves the devices against the plugins' device types, validates the
    plugins' ``[plugins.<name>]`` settings, then asks each
    plugin's :func:`~cityvisor.core.hookspecs.cityvisor_check_config`. A
    plugin whose check raises is reported by name, not propagated.
    """
    problems: list[str] = []
    device_types: dict[str, type[DeviceType]] = {}
    try:
        device_types = collect_device_types(plugins)
        config.resolve_devices(device_types)
    except PluginConflictError as error:
        problems.append(f"{config.source}: {error}")
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        config.load_settings(plugins)
    except ConfigError as error:
        problems.extend(error.problems)
    # call_each records a plugin whose check raises in plugins.failures and goes on.
    failed_before = len(plugins.failures)
    for _plugin, found in plugins.call_each(
        "cityvisor_check_config", config=config, device_types=device_types, plugins=plugins
    ):
        problems.extend(f"{config.source}: {problem}" for problem in found or ())
    problems.extend(
        f"{config.source}: could not check: {failure}"
        for failure in plugins.failures[failed_before:]
    )
    return problems


def _toml_problem(source: str, text_: str, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    match = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if match:
        line, column = match.group(1), match.group(2)
        return (
            f"{source}: line {line}, column {column}: TOML syntax error: {message[: match.start()]}"
        )
    match = re.search(r" \(at end of document\)$", message)
    if match:
        line = str(text_.count("\n") + 1)
        return f"{source}: line {line} (end of file): TOML syntax error: {message[: match.start()]}"
    return f"{source}: TOML syntax error: {message}"


def _substitute(value: Any, loc: Loc, environ: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1):  # "$${NAME}" is an escaped, literal "${NAME}"
                return match.group(0)[1:]
            name = match.group(2)
            if name not in environ:
                problems.append((loc, f"environment variable {name} is not set"))
                return match.group(0)
            return environ[name]

        return _ENV.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, (*loc, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), environ, problems) for i, v in enumerate(value)]
    return value


def _cross_reference_problems(config: Config) -> list[Problem]:
    """What one file can check on its own: ids unique, every reference declared."""
    problems: list[Problem] = []
    zones = {z.id for z in config.zones}
    devices: dict[str, DeviceEntry] = {}

    def unique(kind: str, key: str, values: Iterable[str]) -> None:
        seen: dict[str, int] = {}
        for index, value in enumerate(values):
            if value in seen:
                problems.append(
                    ((kind, index, key), f"duplicate {key} {value!r} (also {kind}[{seen[value]}])")
                )
            else:
                seen[value] = index

    unique("zones", "id", (z.id for z in config.zones))
    unique("devices", "id", (d.id for d in config.devices))
    unique("alarms", "name", (a.name for a in config.alarms))
    unique("procedures", "id", (p.id for p in config.procedures))
    unique("users", "name", (u.name for u in config.users))
    declared_zones = ", ".join(sorted(zones)) or "none: add [[zones]]"

    for index, device in enumerate(config.devices):
        devices.setdefault(device.id, device)
        if device.zone not in zones:
            problems.append(
                (
                    ("devices", index, "zone"),
                    f"unknown zone {device.zone!r} (declared zones: {declared_zones})",
                )
            )
    for index, device in enumerate(config.devices):
        for position, camera_id in enumerate(device.watched_by):
            if camera_id not in devices:
                problems.append(
                    (("devices", index, "watched_by", position), f"unknown device {camera_id!r}")
                )
            elif camera_id == device.id:
                problems.append(
                    (("devices", index, "watched_by", position), "a device cannot watch itself")
                )
    for index, entry in enumerate(config.alarms):
        where: Loc = ("alarms", index, "point")
        parts = entry.point.split("/")
        if len(parts) not in (4, 5) or not all(parts):
            problems.append(
                (
                    where,
                    f"expected a point id zone/family/device/[member/]point, got {entry.point!r}",
                )
            )
            continue
        zone, _family, device_id = parts[:3]
        named = devices.get(device_id)
        if zone not in zones:
            problems.append((where, f"unknown zone {zone!r} (declared zones: {declared_zones})"))
        elif named is None:
            problems.append((where, f"unknown device {device_id!r}"))
        elif named.zone != zone:
            problems.append(
                (where, f"device {device_id!r} is in zone {named.zone!r}, not {zone!r}")
            )
    for index, user in enumerate(config.users):
        for position, zone in enumerate(user.zones):
            if zone != "*" and zone not in zones:
                problems.append(
                    (
                        ("users", index, "zones", position),
                        f'unknown zone {zone!r} (declared zones: {declared_zones}, or "*")',
                    )
                )
    return problems
