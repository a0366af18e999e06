"""Modbus HAL: shared connections, paced requests, coalesced reads, typed failures.

The layers, from the wire up:

- :class:`ModbusEndpoint`: one connection (Modbus/TCP, or RTU over a serial
  line) shared by every unit behind it. One request in flight at a time,
  a minimum interval between requests, a timeout per request, reconnection
  with capped exponential backoff. A unit's poll sends its blocks in one
  turn on the wire; a write waits for that turn only, not for every unit
  queued behind it. Failures are typed
  (:class:`ModbusExceptionError`, :class:`ModbusTimeoutError`,
  :class:`ModbusMalformedReplyError`, :class:`ModbusConnectionError`) and each
  carries the :class:`~cityvisor.core.points.Quality` it means.
- :class:`ModbusPool`: hands out endpoints by address with reference counting,
  so two cabinets behind one gateway share one TCP connection.
- :class:`ReadPlan`: the block reads that cover a set of points, merging
  neighbours of the same table within the 125-register (2000-bit) limit and a
  maximum gap. Computed once per profile and member count, never per poll.
- :class:`ModbusDevice`: one unit read through a :class:`Profile`; ``poll()``
  returns ``{relative_id: value | Quality}`` and never raises for a failed
  block, only :class:`ModbusConnectionError` when the endpoint itself is lost
  (the supervisor then restarts the driver).

A driver's ``run()`` reads::

    async with pool.tcp(config.host, config.port) as endpoint:
        cabinet = endpoint.device(config.unit, load_profile("lighting_cabinet"),
                                  members={"circuit": self.members("circuit")})
        await cabinet.poll()                 # raises ModbusConnectionError if unreachable
        task_status.started()
        async for result in cabinet.poll_every(config.period):
            self.publish(result.good)
            for quality, ids in result.by_quality().items():
                self.mark(quality, ids)

pymodbus runs on asyncio; everything here uses anyio primitives and starts no
task of its own.

Where each part lives: ``endpoint.py`` (the connection, its turns and
backoff), ``plan.py`` (the request planner and decoder), ``device.py`` (a
unit through its profile), ``pool.py`` (endpoints shared by address),
``settings.py`` (addresses, pacing, timeouts), ``errors.py`` (typed
failures); profiles themselves are :mod:`cityvisor.hal.modbus_profile`.
"""

from __future__ import annotations

from ..modbus_profile import (
    Profile,
    ProfileError,
    RegisterSpec,
    Table,
    ValueType,
    bundled_profiles,
    load_profile,
)
from .device import ModbusDevice
from .endpoint import ModbusEndpoint
from .errors import (
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionError,
    ModbusMalformedReplyError,
    ModbusTimeoutError,
    exception_quality,
)
from .plan import Block, PollResult, ReadPlan
from .pool import ModbusPool
from .settings import ModbusSettings, SerialAddress, TcpAddress

__all__ = [
    "Block",
    "ModbusConnectionError",
    "ModbusDevice",
    "ModbusEndpoint",
    "ModbusError",
    "ModbusExceptionError",
    "ModbusMalformedReplyError",
    "ModbusPool",
    "ModbusSettings",
    "ModbusTimeoutError",
    "PollResult",
    "Profile",
    "ProfileError",
    "ReadPlan",
    "RegisterSpec",
    "SerialAddress",
    "Table",
    "TcpAddress",
    "ValueType",
    "bundled_profiles",
    "exception_quality",
    "load_profile",
]
