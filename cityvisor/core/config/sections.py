"""The deployment file's sections and entries: site, store, journal, web, security, plugins, zones, devices, alarms, procedures, users."""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, ValidationInfo

from ..alarms import AlarmSpec, Procedure, alarm
from ..devices import DeviceInfo
from ..store import SqliteStore, Store
from ..users import Role, User
from .errors import ConfigError
from .messages import _show
from .values import Name, Scalar, Slug, Text


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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StoreSection(Section):
    """`[store]`: where and how the journal, alarm states and history are kept."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    """``sqlite`` (the default: everything in one file) or ``postgres`` (journal, alarm
    states and history in PostgreSQL, see docs/postgres.md; needs ``cityvisor[postgres]``)."""
    path: Path = Path("cityvisor.sqlite")
    """The SQLite file; a relative path is relative to the config file's directory. With
    ``backend = "postgres"`` it holds only the local tables (accounts, sessions, plugins')."""
    dsn: str | None = None
    """The PostgreSQL connection string (``host=db.example dbname=cityvisor user=cityvisor``
    or a ``postgresql://`` URL), without its password; required with ``backend = "postgres"``."""
    password_env: str | None = None
    """The environment variable holding the PostgreSQL password (``CITYVISOR_PG_PASSWORD``);
    unset: libpq's own ``PGPASSWORD`` or ``~/.pgpass``, or no password (trust, certificates)."""
    partition: Literal["day", "month"] = "day"
    """The span of one PostgreSQL history partition, created on demand."""
    flush_interval: float = Field(default=1.0, gt=0, le=60)
    """Seconds between two history writes (history is the only thing a crash can lose)."""
    history_buffer: int = Field(default=1_000_000, ge=1_000, le=100_000_000)
    """Point changes queued for history at most (about 100 bytes each with their time and
    value): past it, while the database is slow or away, the oldest are dropped and counted."""
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

    @pydantic.field_validator("dsn")
    @classmethod
    def _dsn_without_password(cls, value: str | None, info: ValidationInfo) -> str | None:
        backend = info.data.get("backend")
        if value is None:
            if backend == "postgres":
                raise ValueError(
                    'backend "postgres" needs a dsn such as "host=127.0.0.1 dbname=cityvisor"'
                )
            return None
        if backend != "postgres":
            raise ValueError('a dsn is only read with backend = "postgres"')
        try:
            from psycopg import conninfo
        except ImportError:
            raise ValueError(
                "the PostgreSQL driver is not installed: pip install 'cityvisor[postgres]'"
            ) from None
        try:
            parts = conninfo.conninfo_to_dict(value)
        except Exception:
            # libpq's message may quote the string, and so a password: not shown.
            raise ValueError(
                "expected a libpq connection string (key=value ...) or a postgresql:// URL"
            ) from None
        if parts.get("password"):
            raise ValueError(
                "holds a password: give it through the environment variable named by"
                " store.password_env, never in the file"
            )
        return value

    @pydantic.field_validator("password_env")
    @classmethod
    def _an_environment_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                f"expected the name of an environment variable (CITYVISOR_PG_PASSWORD), got {_show(value)}"
            )
        return value

    @pydantic.field_validator("retention")
    @classmethod
    def _positive_days(cls, value: dict[str, float]) -> dict[str, float]:
        if "none" in value:
            raise ValueError('history class "none" is never recorded: remove it')
        return {"default": 365.0, **value}

    def create_store(
        self, source: str = "<config>", environ: Mapping[str, str] | None = None
    ) -> Store:
        """The store this section describes (not opened yet).

        :raises ConfigError: when ``password_env`` names a variable that is not set.
        """
        if self.backend == "sqlite":
            return SqliteStore(
                self.path,
                flush_interval=self.flush_interval,
                retention_days=dict(self.retention),
                max_pending=self.history_buffer,
            )
        from ..store.postgres import PostgresStore  # an optional dependency: imported on use

        environ = os.environ if environ is None else environ
        password = None
        if self.password_env is not None:
            password = environ.get(self.password_env)
            if password is None:
                raise ConfigError(
                    [
                        f"{source}: store.password_env: environment variable"
                        f" {self.password_env} is not set"
                    ]
                )
        assert self.dsn is not None  # the validator requires it for this backend
        return PostgresStore(
            self.dsn,
            self.path,
            password=password,
            partition=self.partition,
            flush_interval=self.flush_interval,
            retention_days=dict(self.retention),
            max_pending=self.history_buffer,
        )


class JournalSection(Section):
    """`[journal]`: the daily anchor of the journal's hash chain (see docs/security.md)."""

    anchor_key: str | None = None
    """The Ed25519 private key that signs anchors and bundles, kept outside the database:
    a PEM file (``cityvisor journal keygen``; relative to the config file's directory)
    or ``env:NAME``, an environment variable holding the PEM text. Unset: no anchors."""
    anchor_file: Path = Path("journal-anchors.jsonl")
    """The file each anchor is appended to (one JSON line each), for archiving elsewhere;
    a relative path is relative to the config file's directory."""

    @pydantic.field_validator("anchor_file")
    @classmethod
    def _file_relative_to_config_file(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        if base is not None and not value.is_absolute():
            return Path(os.path.normpath(Path(base) / value))
        return value

    @pydantic.field_validator("anchor_key")
    @classmethod
    def _key_relative_to_config_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.startswith("env:"):
            if value == "env:":
                raise ValueError("env: needs the name of an environment variable (env:NAME)")
            return value
        base = (info.context or {}).get("base_dir")
        if base is not None and not Path(value).is_absolute():
            return os.path.normpath(Path(base) / value)
        return value


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
