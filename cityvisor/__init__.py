"""cityvisor: a plugin-based, SCADA-style hypervisor for a city's control room.

This module is the public SDK: everything a plugin author needs is importable
from here, and nothing else should be imported from ``cityvisor.core``::

    from cityvisor import DeviceType, DeviceConfig, hookimpl, point, command, alarm
"""

from .core.alarms import Priority, alarm
from .core.commands import (
    boolean,
    choice,
    command,
    integer,
    interlock,
    number,
    reaches,
    string,
)
from .core.devices import DeviceConfig, DeviceError, DeviceInfo, DeviceType, point
from .core.hookspecs import hookimpl
from .core.points import Deadband, PointValue, Quality, Scaling
from .core.users import Role, User

__version__ = "0.1.0"

__all__ = [
    "Deadband",
    "DeviceConfig",
    "DeviceError",
    "DeviceInfo",
    "DeviceType",
    "PointValue",
    "Priority",
    "Quality",
    "Role",
    "Scaling",
    "User",
    "__version__",
    "alarm",
    "boolean",
    "choice",
    "command",
    "hookimpl",
    "integer",
    "interlock",
    "number",
    "point",
    "reaches",
    "string",
]
