"""``[plugins.link]``: the hub's role in a Sparkplug B network and how it reaches the broker."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cityvisor.core.devices import DeviceConfig

__all__ = ["LinkSettings", "settings_problems"]

SPARKPLUG_ID = r"^[A-Za-z0-9_.-]{1,64}$"
"""Group, node and host ids: one MQTT topic level without wildcards."""

KEY = "plugins.link"


class LinkSettings(DeviceConfig):
    """``[plugins.link]``: edge node or central host application over MQTT Sparkplug B."""

    role: Literal["off", "edge", "central"] = "off"
    """``edge`` publishes this hub's devices; ``central`` gathers the edges' points; ``off``."""
    host: str = "127.0.0.1"
    """The MQTT broker's address."""
    port: int = Field(default=1883, ge=1, le=65535)
    """The MQTT broker's port (8883 is the usual one with TLS)."""
    group: str = ""
    """The Sparkplug group id of an edge (``dijon-metropole``)."""
    node: str = ""
    """The Sparkplug edge node id of an edge (``chenove``): one per hub."""
    groups: list[str] = []
    """The groups a central gathers (none: every group on the broker)."""
    primary_hosts: list[str] = []
    """An edge publishes only while one of these central host ids says online (none: always)."""
    host_id: str = ""
    """The Sparkplug host application id of a central (its STATE topic)."""
    standby_for: str = ""
    """A standby central: the host id of the active central it takes over from."""
    keepalive: int = Field(default=10, ge=2, le=600)
    """MQTT keepalive in seconds: a silent peer is declared dead after 1.5 times this."""
    username: str = ""
    """The broker user (per node: ``edge-chenove``)."""
    password_env: str = Field(default="", pattern=r"^([A-Z_][A-Z0-9_]{0,63})?$")
    """The environment variable holding the broker password (never in the file)."""
    tls_ca: str | None = None
    """CA certificate file (PEM) that signed the broker's: TLS on when set."""
    tls_cert: str | None = None
    """This hub's client certificate (PEM), when the broker asks for one."""
    tls_key: str | None = None
    """The key of ``tls_cert`` (PEM)."""
    points: str = "**"
    """Pattern of the points an edge publishes."""
    buffer: str = "link-buffer.sqlite"
    """An edge's disk buffer of changes made while the broker is away (relative to the file)."""
    buffer_limit: int = Field(default=100_000, ge=100, le=50_000_000)
    """Changes the disk buffer keeps; beyond it the oldest are dropped (and counted)."""
    command_user: str = Field(default="central", pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    """An edge journals central commands as ``<command_user>:<the central's user>``."""
    command_role: Literal["operator", "supervisor"] = "operator"
    """The role central commands run with at an edge (interlocks always apply)."""
    command_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds a central waits for an edge's result before it reports a timeout."""
    max_commands: int = Field(default=64, ge=1, le=10_000)
    """Commands a central waits for at once; beyond it new ones are refused."""

    @field_validator("group", "node", "host_id", "standby_for")
    @classmethod
    def _sparkplug_id(cls, value: str) -> str:
        if value and not _valid(value):
            raise ValueError(
                f"expected a Sparkplug id (1 to 64 letters, digits, '.', '_' or '-': one MQTT "
                f"topic level, without '/', '+' or '#'), got {value!r}"
            )
        return value

    def path(self, config: Any, value: str) -> Path:
        """A file named in the settings, relative to the deployment file."""
        path = Path(value)
        if not path.is_absolute():
            path = Path(str(getattr(config, "source", "."))).parent / path
        return path

    def password(self) -> str:
        """The broker password from the environment ('' when none is configured)."""
        return os.environ.get(self.password_env, "") if self.password_env else ""

    def tls_context(self, config: Any) -> ssl.SSLContext | None:
        """The TLS context for the broker, or None without ``tls_ca``."""
        if self.tls_ca is None:
            return None
        context = ssl.create_default_context(cafile=str(self.path(config, self.tls_ca)))
        if self.tls_cert is not None:
            key = None if self.tls_key is None else str(self.path(config, self.tls_key))
            context.load_cert_chain(str(self.path(config, self.tls_cert)), key)
        return context


def settings_problems(settings: LinkSettings, config: Any) -> list[str]:
    """What the schema cannot say: the keys a role needs, files and variables that must exist."""
    problems: list[str] = []
    if settings.role == "edge":
        for key in ("group", "node"):
            if not getattr(settings, key):
                problems.append(f"{KEY}.{key}: an edge needs its Sparkplug {key} id")
    if settings.role == "edge":
        for index, host in enumerate(settings.primary_hosts):
            if not _valid(host):
                problems.append(
                    f"{KEY}.primary_hosts[{index}]: {host!r} is not a Sparkplug id "
                    "(letters, digits, '.', '_', '-')"
                )
    if settings.role == "central":
        if not settings.host_id:
            problems.append(f"{KEY}.host_id: a central needs its Sparkplug host application id")
        for index, group in enumerate(settings.groups):
            if not _valid(group):
                problems.append(
                    f"{KEY}.groups[{index}]: {group!r} is not a Sparkplug id "
                    "(letters, digits, '.', '_', '-')"
                )
        if settings.standby_for and settings.standby_for == settings.host_id:
            problems.append(f"{KEY}.standby_for: a central cannot stand by for itself")
    if settings.role != "off":
        if settings.password_env and settings.password_env not in os.environ:
            problems.append(
                f"{KEY}.password_env: the environment variable {settings.password_env} is not set"
            )
        if settings.password_env and not settings.username:
            problems.append(f"{KEY}.username: a password needs a user name")
        for key in ("tls_ca", "tls_cert", "tls_key"):
            value = getattr(settings, key)
            if value is not None and not settings.path(config, value).is_file():
                problems.append(f"{KEY}.{key}: no file {value!r}")
        if (settings.tls_cert or settings.tls_key) and settings.tls_ca is None:
            problems.append(f"{KEY}.tls_ca: a client certificate needs the broker's CA")
    return problems


def _valid(identifier: str) -> bool:
    return re.fullmatch(SPARKPLUG_ID, identifier) is not None
