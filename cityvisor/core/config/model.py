"""The validated deployment: the Config, and each device resolved to its type and settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic

from ..alarms import AlarmSpec
from ..devices import DeviceConfig, DeviceInfo, DeviceType
from ..points import DataType
from ..users import User
from .errors import ConfigError, Loc, Problem
from .messages import _path, _pydantic_problems
from .opendata import OpenDataSection
from .redaction import redact
from .sections import (
    AlarmEntry,
    DeviceEntry,
    JournalSection,
    PluginsSection,
    ProcedureEntry,
    Section,
    SecuritySection,
    SiteSection,
    StoreSection,
    UserEntry,
    WebSection,
    ZoneEntry,
)

if TYPE_CHECKING:
    from ..plugins import PluginManager


CAMERA_FAMILY = "cameras"
"""The family of the device types a device's ``watched_by`` may name."""


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class ResolvedDevice:
    """A device entry checked against its device type: what the hub needs to run it."""

    index: int
    """Position in ``[[devices]]`` (for messages: ``devices[3]``)."""
    entry: DeviceEntry
    """The device as the file declares it."""
    info: DeviceInfo
    device_type: type[DeviceType]
    config: DeviceConfig
    """The ``config`` table validated by the type's own ``Config`` model."""
    enabled: bool


class Config(Section):
    """A deployment: one TOML file, validated. Build it with :func:`load_config`."""

    site: SiteSection
    store: StoreSection = StoreSection()
    journal: JournalSection = JournalSection()
    web: WebSection = WebSection()
    security: SecuritySection = SecuritySection()
    plugins: PluginsSection = PluginsSection()
    zones: list[ZoneEntry] = []
    devices: list[DeviceEntry] = []
    alarms: list[AlarmEntry] = []
    procedures: list[ProcedureEntry] = []
    users: list[UserEntry] = []
    opendata: OpenDataSection = OpenDataSection()

    _source: str = pydantic.PrivateAttr(default="<config>")
    _settings: dict[str, Any] = pydantic.PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file this config was read from, as given (messages start with it)."""
        return self._source

    def __repr__(self) -> str:
        # Never let a repr in a log line carry a device password.
        return (
            f"<Config {self.site.name!r} from {self._source}: {len(self.zones)} zones, "
            f"{len(self.devices)} devices, {len(self.alarms)} alarms>"
        )

    __str__ = __repr__

    def zone(self, zone_id: str) -> ZoneEntry:
        """A declared zone by id (KeyError if unknown)."""
        for zone in self.zones:
            if zone.id == zone_id:
                return zone
        raise KeyError(zone_id)

    def device(self, device_id: str) -> DeviceEntry:
        """A declared device by id (KeyError if unknown)."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)

    def settings(self, plugin: str) -> Any:
        """A plugin's validated ``[plugins.<name>]`` settings (None if it declares none).

        Available once :meth:`load_settings` has run (the hub and
        ``check-config`` run it before anything asks).
        """
        return self._settings.get(plugin)

    def load_settings(self, plugins: PluginManager) -> dict[str, Any]:
        """Validate every ``[plugins.<name>]`` table against its plugin's model.

        :raises ConfigError: a table for a plugin that declares no settings (or
            is not loaded), or settings that do not fit the model, each with
            its key path.
        """
        problems: list[Problem] = []
        models: dict[str, type[pydantic.BaseModel]] = {
            name: model
            for name, model in plugins.call_each("cityvisor_settings")
            if model is not None
        }
        tables = self.plugins.tables()
        for name in tables:
            if name not in models:
                declared = ", ".join(sorted(models)) or "none"
                problems.append(
                    (
                        ("plugins", name),
                        f"no loaded plugin named {name!r} has settings "
                        f"(plugins with settings: {declared})",
                    )
                )
        settings: dict[str, Any] = {}
        for name, model in models.items():
            try:
                settings[name] = model.model_validate(tables.get(name, {}))
            except pydantic.ValidationError as error:
                problems.extend(_pydantic_problems(error, ("plugins", name), model))
        if problems:
            raise ConfigError(_format(self._source, problems))
        self._settings = settings
        return settings

    def alarm_specs(self) -> list[AlarmSpec]:
        """The alarms the deployment adds, as declarations (``point`` is a full point id)."""
        return [entry.spec() for entry in self.alarms]

    def user_list(self) -> list[User]:
        """The declared users, with their role and zones."""
        return [entry.user() for entry in self.users]

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-ready data, with every secret replaced by ``"***"``.

        What may be shown, logged or sent to a browser: keys named like a
        secret (password, secret, key, community, token) are masked, and so
        is the password in a URL's ``user:password@``.
        """
        return redact(self.model_dump(mode="json"))

    def resolve_devices(self, device_types: Mapping[str, type[DeviceType]]) -> list[ResolvedDevice]:
        """Check every device against its device type; return them ready to run.

        ``device_types`` maps type names to classes (what
        :meth:`PluginManager.device_types` returns). Checks each device's
        type exists, its ``config`` table against the type's ``Config``
        model, that ``watched_by`` names cameras, that ``require_approval``
        names the type's commands, and that config alarms name a point the
        type declares with a condition that fits it. A disabled device whose
        type is unknown is skipped rather than refused.

        :raises ConfigError: listing every problem, each with its key path.
        """
        problems: list[Problem] = []
        resolved: list[ResolvedDevice] = []
        known = ", ".join(sorted(device_types)) or "none: no plugin provides a device type"
        for index, entry in enumerate(self.devices):
            where: Loc = ("devices", index)
            device_type = device_types.get(entry.type)
            if device_type is None:
                if entry.enabled:
                    problems.append(
                        (
                            (*where, "type"),
                            f"unknown device type {entry.type!r} (known types: {known})",
                        )
                    )
                continue
            try:
                device_config = device_type.Config.model_validate(entry.config)
            except pydantic.ValidationError as error:
                problems.extend(_pydantic_problems(error, (*where, "config"), device_type.Config))
                continue
            for position, name in enumerate(entry.require_approval):
                if name not in device_type.command_specs:
                    commands = ", ".join(sorted(device_type.command_specs)) or "none"
                    problems.append(
                        (
                            (*where, "require_approval", position),
                            f"{entry.type} has no command {name!r} (its commands: {commands})",
                        )
                    )
            resolved.append(
                ResolvedDevice(
                    index, entry, entry.info(), device_type, device_config, entry.enabled
                )
            )
        by_id = {r.info.id: r for r in resolved}
        for index, entry in enumerate(self.devices):
            for position, camera_id in enumerate(entry.watched_by):
                camera = by_id.get(camera_id)
                if camera is not None and camera.device_type.family != CAMERA_FAMILY:
                    problems.append(
                        (
                            ("devices", index, "watched_by", position),
                            f"{camera_id!r} is a {camera.device_type.type_name}, not a camera",
                        )
                    )
        for index, alarm_entry in enumerate(self.alarms):
            problems.extend(_alarm_point_problems(index, alarm_entry, by_id))
        if problems:
            raise ConfigError(_format(self._source, problems))
        return resolved


# --------------------------------------------------------------------------- messages


_ORDER = {name: position for position, name in enumerate(Config.model_fields)}


def _file_order(problem: Problem) -> tuple[int, int]:
    # Problems are found check by check; the reader wants them in file order.
    loc = problem[0]
    section = _ORDER.get(str(loc[0]), -1) if loc else -1
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return section, index


def _format(source: str, problems: Iterable[Problem]) -> list[str]:
    problems = sorted(problems, key=_file_order)
    return [
        f"{source}: {_path(loc)}: {message}" if loc else f"{source}: {message}"
        for loc, message in problems
    ]


def _alarm_point_problems(
    index: int, entry: AlarmEntry, devices: Mapping[str, ResolvedDevice]
) -> list[Problem]:
    """Check a config alarm's point against its device's type (pass 2)."""
    where: Loc = ("alarms", index, "point")
    parts = entry.point.split("/")
    resolved = devices.get(parts[2]) if len(parts) in (4, 5) else None
    if resolved is None:  # unknown or unresolved device: reported already
        return []
    device_type = resolved.device_type
    family, name = parts[1], parts[-1]
    member = parts[3] if len(parts) == 5 else None
    if family != device_type.family:
        return [
            (
                where,
                f"device {resolved.info.id!r} is of family {device_type.family!r}, not {family!r}",
            )
        ]
    spec = device_type.point_specs.get(name)
    if spec is None:
        names = ", ".join(sorted(device_type.point_specs))
        return [(where, f"{device_type.type_name} has no point {name!r} (its points: {names})")]
    if spec.per and member is None:
        return [
            (
                where,
                f"point {name!r} exists per {spec.per}: give zone/family/device/{spec.per}/{name}",
            )
        ]
    if not spec.per and member is not None:
        return [(where, f"point {name!r} is not per member: give zone/family/device/{name}")]
    if member is not None and spec.per is not None:
        members = _members(device_type, resolved.config, spec.per)
        if members is not None and member not in members:
            return [
                (
                    where,
                    f"device {resolved.info.id!r} has no {spec.per} {member!r} (its {spec.per}s: {', '.join(members)})",
                )
            ]
    condition = entry.condition
    if condition in ("high", "low") and spec.dtype not in (DataType.INT, DataType.FLOAT):
        return [
            (
                ("alarms", index, condition),
                f"a limit needs a numeric point; {name!r} is {spec.dtype.value}",
            )
        ]
    return []


def _members(device_type: type[DeviceType], config: DeviceConfig, per: str) -> list[str] | None:
    # members() is an instance method reading self.config; the device does not exist
    # yet, so call it on a stand-in. A type that overrides it may need more: then
    # the member is not checked here (the hub reports it when it declares points).
    class _StandIn:
        pass

    stand_in = _StandIn()
    stand_in.config = config  # type: ignore[attr-defined]
    try:
        return list(device_type.members(stand_in, per))  # type: ignore[arg-type]
    except Exception:
        return None
