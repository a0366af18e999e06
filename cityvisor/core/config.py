"""The deployment file: one TOML file -> a validated :class:`Config`.

A deployment (a city, a demo, a test bench) is described by one TOML file
with the sections ``[site]``, ``[store]``, ``[web]``, ``[plugins]`` and the
lists ``[[zones]]``, ``[[devices]]``, ``[[alarms]]``, ``[[procedures]]`` and
``[[users]]``. :func:`load_config` reads it in two passes:

1. TOML syntax, ``${ENV_VAR}`` substitution, the schema below and the cross
   references the file can check on its own (zones, unique ids, the devices
   an alarm or a camera link names);
2. :meth:`Config.resolve_devices`, once the plugins are loaded: each
   device's ``type`` must be a known device type and its ``config`` table
   must satisfy that type's own ``Config`` model.

Every problem is reported at once, one line each, naming the file, the key
path and what was expected (``demo.toml: devices[2].config.port: Input
should be a valid integer, got "abc"``), in a :class:`ConfigError`: a user's
mistake is a message, never a traceback.

The models' field docstrings are the configuration reference:
``cityvisor config-reference`` renders them into ``docs/configuration.md``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema

from .alarms import AlarmSpec, Procedure, alarm
from .devices import DeviceConfig, DeviceInfo, DeviceType
from .plugins import PluginConflictError, collect_device_types
from .points import DataType
from .users import Role, User

if TYPE_CHECKING:
    from .plugins import PluginManager

__all__ = [
    "CAMERA_FAMILY",
    "LICENCES",
    "SENSITIVE_FAMILIES",
    "AlarmEntry",
    "Config",
    "ConfigError",
    "DeviceEntry",
    "OpenDataAggregate",
    "OpenDataBroker",
    "OpenDataFamily",
    "OpenDataSection",
    "PluginsSection",
    "ProcedureEntry",
    "ResolvedDevice",
    "SecuritySection",
    "SiteSection",
    "StoreSection",
    "UserEntry",
    "WebSection",
    "ZoneEntry",
    "check_config",
    "load_config",
    "parse_config",
    "redact",
    "reference",
    "resolve_devices",
]

CAMERA_FAMILY = "cameras"
"""The family of the device types a device's ``watched_by`` may name."""

SECRET_WORDS = ("password", "passwd", "secret", "key", "community", "token")
"""A key whose name contains one of these holds a secret: it is redacted in dumps.

Matching by substring over-redacts (``keyboard``) rather than leaks (``auth_key``).
"""

REDACTED = "***"


class ConfigError(Exception):
    """A deployment file that cannot be used, with every problem found in it.

    ``problems`` holds one line per problem, each naming the file, the key
    path and what was expected; ``str(error)`` joins them with newlines.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- value types

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"expected a slug (lower-case letters, digits, '-' and '_', at most 64), got {_show(value)}"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"expected a name of letters, digits, '-', '_', '.' and '@', got {_show(value)}"
        )
    return value


Slug = Annotated[
    str,
    AfterValidator(_slug),
    WithJsonSchema({"type": "string", "pattern": _SLUG.pattern}),
]
"""An identifier that goes into point ids and URLs: ``dijon``, ``cab-07``."""

Name = Annotated[
    str,
    AfterValidator(_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern}),
]
"""An identifier that may use capitals and dots: ``DEMO-01``, ``alice.martin``."""


def _text(value: Any) -> Any:
    # A plain string serves every language; a table gives one text per language.
    if isinstance(value, str):
        return {"fr": value, "en": value}
    return value


Language = Annotated[str, pydantic.StringConstraints(pattern=r"^[a-z]{2}$")]

Text = Annotated[
    dict[Language, str],
    BeforeValidator(_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ],
            "description": 'a string, or one text per language: {fr = "...", en = "..."}',
        }
    ),
]
"""Operator-facing text: ``"Niveau haut"`` or ``{fr = "Niveau haut", en = "High water"}``."""


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ValueError(f"expected a number, true/false or a string, got {_show(value)}")
    return value


Scalar = Annotated[
    Any,
    AfterValidator(_scalar),
    WithJsonSchema({"type": ["number", "boolean", "string"]}),
]


class Section(pydantic.BaseModel):
    """Base of every part of the deployment file: unknown keys are errors, docstrings are docs."""

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True
    )


# --------------------------------------------------------------------------- sections


class SiteSection(Section):
    """`[site]`: the deployment as a whole."""

    name: str = Field(min_length=1)
    """The deployment's name, shown in the HMI's title bar (``"Dijon Métropole"``)."""
    timezone: str = "Europe/Paris"
    """IANA time zone the HMI shows times in (everything is stored in UTC)."""
    language: Literal["fr", "en"] = "fr"
    """Default language of the HMI and of operator-facing texts."""
    latitude: float | None = Field(default=None, ge=-90, le=90)
    """Latitude of the site in degrees (dusk/dawn schedules, the map's initial view)."""
    longitude: float | None = Field(default=None, ge=-180, le=180)
    """Longitude of the site in degrees (dusk/dawn schedules, the map's initial view)."""

    @pydantic.field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'expected an IANA time zone such as "Europe/Paris", got {_show(value)}'
            ) from None
        return value

    @pydantic.model_validator(mode="after")
    def _both_coordinates(self) -> SiteSection:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class StoreSection(Section):
    """`[store]`: where and how the journal, alarm states and history are kept."""

    path: Path = Path("cityvisor.sqlite")
    """The SQLite file; a relative path is relative to the config file's directory."""
    flush_interval: float = Field(default=1.0, gt=0, le=60)
    """Seconds between two history writes (history is the only thing a crash can lose)."""
    retention: dict[Slug, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: {"default": 365.0}
    )
    """Days of history kept per history class (``PointSpec.history``); ``default``
    applies to every class not listed and is 365 unless given."""

    @pydantic.field_validator("path")
    @classmethod
    def _relative_to_config_file(cls, value: Path, info: ValidationInfo) -> Path:
        # The file is read from anywhere (a service unit, a test): anchor relative
        # paths on the config file, not on the current directory.
        base = (info.context or {}).get("base_dir")
        if base is not None and not value.is_absolute():
            return Path(os.path.normpath(Path(base) / value))
        return value

    @pydantic.field_validator("retention")
    @classmethod
    def _positive_days(cls, value: dict[str, float]) -> dict[str, float]:
        if "none" in value:
            raise ValueError('history class "none" is never recorded: remove it')
        return {"default": 365.0, **value}


class WebSection(Section):
    """`[web]`: the HMI and API server."""

    host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` exposes the HMI to the network."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port to listen on; ``0`` lets the system pick a free one (tests)."""
    session_lifetime: float = Field(default=12 * 3600, gt=0)
    """Seconds an operator's session lasts without activity (a shift is 12 hours)."""
    secure_cookies: bool = False
    """Mark session cookies Secure: set it when the HMI is served over HTTPS."""
    tile_url: str = ""
    """Map tile URL template (``https://tile.example.org/{z}/{x}/{y}.png``); empty: no
    background map, equipment is drawn on a blank canvas."""
    basemap: Path | None = None
    """A GeoJSON file drawn under the equipment on the map (outlines of the communes,
    main streets), served by the hub itself: a background that needs neither a tile
    server nor the Internet. A relative path is relative to the config file's
    directory. ``cityvisor demo`` writes one for its communes."""
    metrics_token: str = ""
    """Bearer token that lets a Prometheus server read ``/metrics`` without a session
    (``metrics_token = "${CITYVISOR_METRICS_TOKEN}"``); empty: ``/metrics`` needs a
    logged-in session like every other page."""
    read_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a client has to send a whole request (head and body): from the
    connection's opening for the first, from its first byte for later ones; also how
    long a kept-alive connection may idle. Past it the connection is closed (slow-loris:
    headers or a body dripped to hold connections open)."""
    max_connections_per_address: int = Field(default=100, ge=0, le=100_000)
    """Open connections allowed from one client address (HTTP and WebSocket); more
    are answered 429 and closed. Behind a reverse proxy every client has the
    proxy's address: raise it, or set ``0`` for no limit."""
    ws_send_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a WebSocket client's send queue may stay full (the client reads
    nothing) before it is closed (code 1013) and counted as dropped."""
    ws_heartbeat: float = Field(default=10.0, ge=1, le=300)
    """Seconds between two pings to an idle WebSocket client; a client that has not
    answered within half of it is dropped (a client that reads nothing at all)."""

    @pydantic.field_validator("basemap")
    @classmethod
    def _basemap_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir")
        if base is not None and not value.is_absolute():
            value = Path(os.path.normpath(Path(base) / value))
        if base is not None and not value.is_file():
            raise ValueError(f"no GeoJSON file at {value}")
        return value

    @pydantic.field_validator("tile_url")
    @classmethod
    def _tile_template(cls, value: str) -> str:
        if value and not all(part in value for part in ("{z}", "{x}", "{y}")):
            raise ValueError(
                f"expected a URL template with {{z}}, {{x}} and {{y}}, got {_show(value)}"
            )
        return value


class SecuritySection(Section):
    """`[security]`: site-wide security policy."""

    zone_reading: Literal["all", "own"] = "all"
    """What a user limited to some zones may *read*: ``"all"``, every zone's devices,
    points, alarms and journal (acting stays limited to their zones); ``"own"``, only
    those of their zones, on every screen, API route and WebSocket feed (for communes
    that are separate authorities; hidden things answer 404). Admins and users of every zone (``*``)
    read everything either way."""


class PluginsSection(Section):
    """`[plugins]`: which plugins are loaded, and their own settings.

    A sub-table ``[plugins.<name>]`` holds the settings of the plugin of that
    name (shared lighting schedules, for instance), checked against the
    model the plugin declares (see ``cityvisor plugins``).
    """

    model_config = pydantic.ConfigDict(extra="allow")

    disabled: list[str] = []
    """Names of plugins not to load (built-in or installed), e.g. ``["demo"]``."""
    entry_points: bool = True
    """Load the plugins installed as packages (the ``cityvisor`` entry-point group)."""

    @pydantic.model_validator(mode="after")
    def _tables_only(self) -> PluginsSection:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(
                    f"{name}: expected disabled, entry_points or a [plugins.{name}] table of "
                    f"that plugin's settings, got {_show(value)}"
                )
        return self

    def tables(self) -> dict[str, dict[str, Any]]:
        """The ``[plugins.<name>]`` tables as written, by plugin name."""
        return dict(self.model_extra or {})


class ZoneEntry(Section):
    """`[[zones]]`: a commune or district; operators and rules act per zone."""

    id: Slug
    """Identifier used in point ids (``dijon/lighting/cab-07/level``) and user rights."""
    name: str = Field(min_length=1)
    """Display name (``"Chenôve"``)."""
    label: Text = {}
    """Translated display names, when they differ from ``name``."""


class DeviceEntry(Section):
    """`[[devices]]`: one piece of equipment, driven by the plugin that provides its type."""

    id: Slug
    """Unique identifier of the device across the deployment (``cab-07``)."""
    type: str = Field(min_length=1)
    """Device type name provided by a plugin (``demo.tank``, ``lighting.cabinet``);
    ``cityvisor plugins`` lists them."""
    zone: Slug
    """The zone the device belongs to (a declared ``[[zones]]`` id)."""
    name: str = ""
    """Display name (``"Armoire place Darcy"``)."""
    tags: list[str] = []
    """Free tags for group commands and filters (``["public-building", "centre"]``)."""
    location: tuple[float, float] | None = None
    """``[latitude, longitude]`` in degrees, to place the device on the map."""
    watched_by: list[Slug] = []
    """Ids of the camera devices that watch this one (shown with its alarms)."""
    require_approval: list[str] = []
    """Commands of this device that need a second person's approval, beyond its type's own."""
    enabled: bool = True
    """``false`` keeps the entry without running it (its type's plugin need not be installed)."""
    config: dict[str, Any] = {}
    """The device's settings, checked against its type's own schema (address, port,
    credentials...); see ``cityvisor plugins`` for each type."""

    @pydantic.field_validator("location")
    @classmethod
    def _on_earth(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            latitude, longitude = value
            if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
                raise ValueError(
                    f"expected [latitude, longitude] in degrees, got [{latitude}, {longitude}]"
                )
        return value

    def info(self) -> DeviceInfo:
        """The device's identity, as drivers and the HMI see it."""
        return DeviceInfo(
            id=self.id,
            type=self.type,
            zone=self.zone,
            name=self.name or self.id,
            tags=frozenset(self.tags),
            location=self.location,
            watched_by=tuple(self.watched_by),
            require_approval=frozenset(self.require_approval),
        )


_CONDITIONS = ("high", "low", "equals", "not_equals", "quality_bad")


class AlarmEntry(Section):
    """`[[alarms]]`: an alarm a deployment adds on one point, beyond its device type's defaults.

    Give exactly one condition: ``high``, ``low``, ``equals``, ``not_equals``
    or ``quality_bad = true``.
    """

    name: Name
    """Unique name of the alarm in the deployment (``darcy-tank-overflow``)."""
    point: str
    """Full point id: ``zone/family/device/point`` or ``zone/family/device/member/point``."""
    high: float | None = None
    """Active when the value is above this limit."""
    low: float | None = None
    """Active when the value is below this limit."""
    equals: Scalar = None
    """Active when the value equals this (a state alarm)."""
    not_equals: Scalar = None
    """Active when the value differs from this."""
    quality_bad: bool = False
    """Active when the point's quality is bad."""
    deadband: float = Field(default=0.0, ge=0)
    """Hysteresis of a limit alarm, in the point's unit: it clears this far inside the limit."""
    priority: Literal["critical", "high", "medium", "low"] = "medium"
    """What the operator should deal with first."""
    message: Text = {}
    """What the operator reads in the alarm list."""
    procedure: str | None = None
    """Id of the operating procedure to follow (``[[procedures]]`` or the city's own list)."""
    on_delay: float = Field(default=0.0, ge=0)
    """Seconds the condition must hold before the alarm is raised."""
    off_delay: float = Field(default=0.0, ge=0)
    """Seconds the condition must be gone before the alarm clears."""
    latching: bool = False
    """Stay active after the condition clears, until acknowledged."""

    @pydantic.model_validator(mode="after")
    def _one_condition(self) -> AlarmEntry:
        given = [kind for kind in _CONDITIONS if self._condition_value(kind) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"expected exactly one of high, low, equals, not_equals, quality_bad = true "
                f"(found: {found})"
            )
        return self

    def _condition_value(self, kind: str) -> Any:
        if kind == "quality_bad":
            return True if self.quality_bad else None
        return getattr(self, kind)

    @property
    def condition(self) -> str:
        """The kind of condition given (``high``, ``equals``...)."""
        return next(k for k in _CONDITIONS if self._condition_value(k) is not None)

    def to_spec(self) -> tuple[AlarmSpec, str]:
        """The alarm declaration and the full id of the point it watches."""
        return self.spec(), self.point

    def spec(self) -> AlarmSpec:
        """The alarm declaration the alarm manager runs (``point`` is a full point id)."""
        return alarm(
            self.point,
            high=self.high,
            low=self.low,
            equals=self.equals,
            not_equals=self.not_equals,
            quality_bad=self.quality_bad,
            deadband=self.deadband,
            priority=self.priority,
            message=self.message or None,
            procedure=self.procedure,
            on_delay=self.on_delay,
            off_delay=self.off_delay,
            latching=self.latching,
            name=self.name,
        )


class ProcedureEntry(Section):
    """`[[procedures]]`: an operating procedure, the checklist an operator follows."""

    id: Name
    """Identifier alarms refer to (``DEMO-01``)."""
    version: int = Field(default=1, ge=1)
    """Revision number: raise it when the steps change (the journal records which one was used)."""
    title: Text
    """What the procedure is for."""
    steps: list[Text] = Field(min_length=1)
    """The steps, in order; each a string or ``{fr = "...", en = "..."}``."""

    def to_procedure(self) -> Procedure:
        """The procedure as the alarm manager serves it."""
        return Procedure.create(self.id, self.title, self.steps, version=self.version)


class UserEntry(Section):
    """`[[users]]`: who may use the HMI. Passwords are not here: ``cityvisor users`` sets them."""

    name: Name
    """Login name."""
    role: Literal["viewer", "operator", "supervisor", "admin"]
    """What the user may do; each role includes the ones before it."""
    zones: list[str] = Field(default_factory=lambda: ["*"])
    """Zone ids the user may act in; ``"*"`` means every zone."""

    def user(self) -> User:
        """The user as the command bus and the web layer see them."""
        return User(self.name, Role.parse(self.role), frozenset(self.zones))


SENSITIVE_FAMILIES = ("cameras", "access", "switches")
"""Families never published as open data: images of people, badges and access
events, the network's topology. ``[opendata.families]`` may not name them."""

FREQUENCIES = ("continuous", "hourly", "daily", "weekly", "monthly", "irregular")
"""Update frequencies a dataset may declare (the EU frequency vocabulary's names)."""


class OpenDataAggregate(Section):
    """`[opendata.families.<family>.aggregate.<point>]`: a point published only aggregated.

    A value that could identify a person (a vehicle on a loop, a presence)
    is published as a statistic per time bucket and per group of devices,
    never device by device: a group with fewer devices than ``minimum_group``
    is left out of the dataset.
    """

    bucket: float = Field(default=3600.0, gt=0)
    """Seconds per bucket; at least ``[opendata] minimum_bucket``."""
    by: str = "zone"
    """Group of devices: ``zone``, ``site`` (all of them) or ``tag:<prefix>`` (the device's
    tag that starts with the prefix, ``tag:street:`` for one group per street)."""
    statistic: Literal["count", "sum", "mean", "max"] = "count"
    """``count``: changes to true (bool points) or changes; ``sum``, ``mean``, ``max`` of
    the good values, per bucket and group."""
    minimum_group: int = Field(default=3, ge=1)
    """Devices a group needs to be published; at least ``[opendata] minimum_group``."""

    @pydantic.field_validator("by")
    @classmethod
    def _known_grouping(cls, value: str) -> str:
        if value not in ("zone", "site") and not (value.startswith("tag:") and len(value) > 4):
            raise ValueError(f'expected "zone", "site" or "tag:<prefix>", got {_show(value)}')
        return value


class OpenDataFamily(Section):
    """`[opendata.families.<family>]`: what one family publishes."""

    publish: bool = True
    """``false`` publishes nothing of this family."""
    points: list[str] | None = None
    """Names of the points published as they are (``["level", "on"]``); absent: the
    points the family's open data model maps. String points are never published."""
    aggregate: dict[str, OpenDataAggregate] = {}
    """Points published only aggregated in time and space, by point name."""
    update_frequency: Literal["continuous", "hourly", "daily", "weekly", "monthly", "irregular"] = (
        "continuous"
    )
    """How often the dataset changes, for the catalogue (``continuous``, ``hourly``,
    ``daily``, ``weekly``, ``monthly``, ``irregular``)."""
    title: Text = {}
    """The dataset's title in the catalogue (fr/en); absent: the family's name."""


class OpenDataBroker(Section):
    """`[opendata.broker]`: push the published entities to an NGSI-LD context broker."""

    url: str = Field(min_length=1)
    """The broker's base URL (``http://broker:1026``); entities go to
    ``/ngsi-ld/v1/entityOperations/upsert`` under it."""
    tenant: str = ""
    """``NGSILD-Tenant`` header to send; empty: the broker's default tenant."""
    interval: float = Field(default=60.0, ge=1)
    """Seconds between two pushes."""
    retries: int = Field(default=3, ge=0, le=10)
    """Retries of a failed push (connection error, 429, 5xx) before waiting for the next."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one request may take."""
    token: str = ""
    """Bearer token the broker wants (``"${CITYVISOR_BROKER_TOKEN}"``); empty: none."""

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {_show(value)}")
        return value.rstrip("/")


class OpenDataSection(Section):
    """`[opendata]`: the data the city publishes (off unless ``enabled = true``).

    Datasets are served without a session under ``/opendata/`` and written by
    ``cityvisor export``. Cameras, badge readers and network switches are never
    published; device hosts, credentials and names of people never leave.
    """

    enabled: bool = False
    """Publish open data: ``/opendata/`` answers, ``cityvisor export`` works."""
    publisher: str = ""
    """Who publishes (the catalogue's ``dct:publisher``); empty: the site's name."""
    contact: str = ""
    """E-mail address for questions about the data (the catalogue's contact point)."""
    licence: str = "etalab-2.0"
    """Licence of every dataset: ``etalab-2.0`` (Licence Ouverte 2.0), ``odbl-1.0``,
    ``cc-by-4.0``, ``cc0-1.0`` or the licence's URL."""
    base_url: str = ""
    """Public URL the datasets are reached at (``https://data.example.org``), for the
    catalogue's links; empty: links relative to the server that answers."""
    families: dict[Slug, OpenDataFamily] = {}
    """What each family publishes; absent: every family with an open data model, its
    mapped points."""
    minimum_bucket: float = Field(default=3600.0, gt=0)
    """Seconds: the shortest time bucket an aggregate may declare."""
    minimum_group: int = Field(default=3, ge=1)
    """The fewest devices an aggregate's group may hold to be published."""
    rate_limit: int = Field(default=60, ge=1, le=100_000)
    """Requests per minute one client address may make to ``/opendata/``."""
    cache_seconds: int = Field(default=60, ge=0, le=86_400)
    """``Cache-Control: max-age`` of the answers; the server renders a dataset at most
    this often."""
    history_days: float = Field(default=31.0, gt=0)
    """The longest history range one request may ask for, in days."""
    broker: OpenDataBroker | None = None
    """Push to an NGSI-LD context broker (``[opendata.broker]``); absent: no push."""

    @pydantic.field_validator("families")
    @classmethod
    def _nothing_sensitive(cls, value: dict[str, OpenDataFamily]) -> dict[str, OpenDataFamily]:
        for family in value:
            if family in SENSITIVE_FAMILIES:
                raise ValueError(
                    f"{family}: this family is personal or security-sensitive and is never "
                    "published (cameras, access, switches)"
                )
        return value

    @pydantic.field_validator("licence")
    @classmethod
    def _known_licence(cls, value: str) -> str:
        if value not in LICENCES and not re.match(r"^https?://\S+$", value):
            known = ", ".join(LICENCES)
            raise ValueError(f"expected one of {known} or a licence URL, got {_show(value)}")
        return value

    @pydantic.model_validator(mode="after")
    def _private_floor(self) -> OpenDataSection:
        for family, entry in self.families.items():
            for point, aggregate in entry.aggregate.items():
                if aggregate.bucket < self.minimum_bucket:
                    raise ValueError(
                        f"families.{family}.aggregate.{point}.bucket: {aggregate.bucket:g} s is "
                        f"below minimum_bucket ({self.minimum_bucket:g} s)"
                    )
                if aggregate.minimum_group < self.minimum_group:
                    raise ValueError(
                        f"families.{family}.aggregate.{point}.minimum_group: "
                        f"{aggregate.minimum_group} is below minimum_group ({self.minimum_group})"
                    )
        return self


LICENCES = {
    "etalab-2.0": (
        "Licence Ouverte 2.0",
        "https://www.etalab.gouv.fr/licence-ouverte-open-licence",
    ),
    "odbl-1.0": ("Open Database License 1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
    "cc-by-4.0": ("Creative Commons BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc0-1.0": ("Creative Commons Zero 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
}
"""Licences known by short name: (title, URL)."""


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


# --------------------------------------------------------------------------- loading

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

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


def _path(loc: Loc) -> str:
    """``("devices", 2, "config", "port")`` -> ``devices[2].config.port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML terms, kept short."""
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _pydantic_problems(
    error: pydantic.ValidationError, prefix: Loc, model: type[pydantic.BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = "unknown key"
            if allowed:
                message += f" (expected one of: {', '.join(allowed)})"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in ("value_error", "assertion_error"):
            message = str(item.get("ctx", {}).get("error", item["msg"]))
        else:
            message = f"{item['msg']}, got {_show(item['input'])}"
        problems.append(((*prefix, *loc), message))
    return problems


def _allowed_keys(model: type[pydantic.BaseModel], loc: Loc) -> list[str]:
    """The keys a table at ``loc`` accepts, when it is a model (for "unknown key" messages)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            if typing.get_origin(annotation) in (list, tuple) and args:
                annotation = args[0]
                continue
            return []
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return []
            annotation = field.annotation
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X | None, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


# --------------------------------------------------------------------------- secrets

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True if a key's name says it holds a secret (``password``, ``auth_key``, ``community``)."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of JSON-like data with secrets masked (see :meth:`Config.redacted`)."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", value)
    return value


# --------------------------------------------------------------------------- reference

_SECTIONS: tuple[tuple[str, type[Section], bool], ...] = (
    ("site", SiteSection, False),
    ("store", StoreSection, False),
    ("web", WebSection, False),
    ("security", SecuritySection, False),
    ("plugins", PluginsSection, False),
    ("zones", ZoneEntry, True),
    ("devices", DeviceEntry, True),
    ("alarms", AlarmEntry, True),
    ("procedures", ProcedureEntry, True),
    ("users", UserEntry, True),
    ("opendata", OpenDataSection, False),
    ("opendata.families.<family>", OpenDataFamily, False),
    ("opendata.families.<family>.aggregate.<point>", OpenDataAggregate, False),
    ("opendata.broker", OpenDataBroker, False),
)


def reference() -> str:
    """The configuration reference in Markdown, generated from the models above.

    ``docs/configuration.md`` is this text (a test keeps them equal):
    regenerate it with ``cityvisor config-reference -o docs/configuration.md``.
    """
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from cityvisor/core/config.py by `cityvisor config-reference"
        " -o docs/configuration.md`; do not edit by hand. -->",
        "",
        "A deployment is one TOML file (`cityvisor run -c city.toml`). Check it with",
        "`cityvisor check-config city.toml`: every problem is reported at once, with",
        "the file and line, the entry by its id and the key path (`city.toml:57: device",
        "cab-07: config.port: ...`) and what was expected.",
        "Unknown keys are errors. Durations are in seconds. A *slug* is an identifier",
        "of lower-case letters, digits, `-` and `_` (at most 64 characters).",
        "",
        "Any string value may contain `${NAME}`: it is replaced by the environment variable",
        "`NAME` (an error if it is not set; `$${NAME}` keeps the text as is). Keep device",
        "passwords and keys there. Keys whose name contains password, secret, key,",
        "community or token are shown as `***` whenever the config is displayed.",
        "",
        "Each device's `config` table is checked against its device type's own",
        "schema: `cityvisor plugins` lists the device types installed.",
        "",
    ]
    for name, model, is_list in _SECTIONS:
        header = f"[[{name}]]" if is_list else f"[{name}]"
        doc = (model.__doc__ or "").strip().split("\n", 1)
        summary = doc[0].split(":", 1)[-1].strip()
        lines += [f"## `{header}`", "", summary[0].upper() + summary[1:], ""]
        if len(doc) > 1:
            lines += [_dedent(doc[1]), ""]
        if name == "site":
            lines += ["This section is required.", ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        schema = model.model_json_schema()
        required = set(schema.get("required", ()))
        for key, field in model.model_fields.items():
            prop = schema["properties"][key]
            default = "*required*" if key in required else _default(field)
            description = " ".join((field.description or "").split())
            lines.append(
                f"| `{key}` | {_schema_type(prop, schema)} | {default} | {_cell(description)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _dedent(text_: str) -> str:
    return "\n".join(line.strip() for line in text_.strip().splitlines())


def _cell(text_: str) -> str:
    return text_.replace("|", "\\|").replace("``", "`")


def _default(field: pydantic.fields.FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, Path):
        value = str(value)
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _schema_type(prop: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """A short, readable type from a JSON schema fragment."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return f"`{_toml(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{_toml(v)}`" for v in prop["enum"])
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        shown = " or ".join(_schema_type(o, root) for o in options)
        if len(options) < len(prop["anyOf"]):
            shown += " (optional)"
        return shown
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_schema_type(i, root) for i in prop["prefixItems"]) + "]"
        return f"list of {_schema_type(prop.get('items', {}), root)}"
    if kind == "object":
        values = prop.get("additionalProperties")
        if not isinstance(values, Mapping) or not values:
            patterns = prop.get("patternProperties") or {}
            values = next(iter(patterns.values()), None)
        if isinstance(values, Mapping) and values:
            return f"table of {_schema_type(values, root)}"
        return "table"
    names = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    shown = names.get(kind or "", "any")
    limits = [
        f"{symbol} {_toml(prop[key])}"
        for key, symbol in (
            ("exclusiveMinimum", ">"),
            ("minimum", "≥"),
            ("exclusiveMaximum", "<"),
            ("maximum", "≤"),
        )
        if key in prop
    ]
    if limits:
        shown += " (" + ", ".join(limits) + ")"
    if prop.get("pattern") == _SLUG.pattern:
        shown = "slug"
    elif "pattern" in prop:
        shown += f" matching `{prop['pattern']}`"
    return shown


if __name__ == "__main__":  # python -m cityvisor.core.config [--reference]
    import sys

    sys.stdout.write(reference() + "\n")


# --------------------------------------------------------------------------- check-config's report

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
