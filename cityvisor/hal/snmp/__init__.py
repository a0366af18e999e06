"""SNMP for the HAL: a client per agent, counter rates, and one trap/inform receiver.

Fibre network switches speak SNMP v2c or v3 (IF-MIB) and send traps. This
package is everything a switches plugin needs, so that it never touches
pysnmp itself:

* :class:`SnmpManager` owns the pysnmp engines (one UDP socket shared by
  every agent whose credentials can share it) and hands out
  :class:`SnmpClient` objects, one per agent: ``get``, table walks with
  GETBULK (or GETNEXT), typed ``set``, timeouts and retries, and errors
  turned into :class:`SnmpError` subclasses whose ``reason`` is the quality
  reason of the device's points (they are :class:`~cityvisor.core.devices.DeviceError`,
  so the supervisor understands them directly).
* :class:`CounterRate` turns successive counter samples into rates, with
  32-bit wrap and agent restarts handled (no spikes).
* :class:`TrapReceiver` is the one UDP listener for v1/v2c/v3 notifications;
  it dispatches each to the device registered for the sender's address
  through bounded memory streams or non-blocking callbacks.

Values come back as plain Python: integers for INTEGER/Counter/Gauge,
seconds (float) for TimeTicks, ``str`` for OCTET STRING (hex ``aa:bb:..``
when the bytes are not text, as for a MAC address), dotted strings for OIDs
and IP addresses, and ``None`` for noSuchObject/noSuchInstance/endOfMibView.

IF-MIB is not bundled with pysnmp, so every OID here is numeric; the usual
ones are module constants (:data:`IF_NAME`, :data:`IF_HC_IN_OCTETS`...).

Credentials (communities, v3 keys) come from the configuration; they are
kept out of ``repr`` and never logged.

Where each part lives: ``client.py`` (:class:`SnmpManager`,
:class:`SnmpClient`), ``counters.py`` (:class:`CounterRate`), ``traps.py``
(:class:`TrapReceiver`, :class:`Notification`), ``values.py`` (conversion
to and from Python), ``credentials.py``, ``oids.py`` (numeric OIDs and the
interface status enumerations) and ``errors.py`` (typed failures).
"""

from __future__ import annotations

from pysnmp.proto.rfc1902 import (
    Counter32,
    Counter64,
    Gauge32,
    Integer32,
    IpAddress,
    ObjectIdentifier,
    OctetString,
    TimeTicks,
    Unsigned32,
)

from .client import SnmpClient, SnmpManager
from .counters import CounterRate
from .credentials import (
    AuthProtocol,
    CommunityCredentials,
    Credentials,
    PrivProtocol,
    UsmCredentials,
)
from .errors import (
    AUTH_RETRY_AFTER,
    SnmpAuthError,
    SnmpError,
    SnmpProtocolError,
    SnmpSetRefusedError,
    SnmpTimeoutError,
)
from .oids import (
    IF_ADMIN_STATUS,
    IF_ALIAS,
    IF_DESCR,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_IN_ERRORS,
    IF_IN_OCTETS,
    IF_INDEX,
    IF_LAST_CHANGE,
    IF_NAME,
    IF_OPER_STATUS,
    IF_OUT_ERRORS,
    IF_OUT_OCTETS,
    IF_PHYS_ADDRESS,
    IF_SPEED,
    IF_TYPE,
    LINK_DOWN,
    LINK_UP,
    SNMP_ENGINE_ID,
    SNMP_IN_BAD_COMMUNITY_NAMES,
    SNMP_TRAP_OID,
    SYS_CONTACT,
    SYS_DESCR,
    SYS_LOCATION,
    SYS_NAME,
    SYS_OBJECT_ID,
    SYS_UPTIME,
    IfAdminStatus,
    IfOperStatus,
)
from .traps import Notification, NotificationCallback, TrapReceiver
from .values import SnmpValue, TableIndex, to_python

__all__ = [
    "AUTH_RETRY_AFTER",
    "IF_ADMIN_STATUS",
    "IF_ALIAS",
    "IF_DESCR",
    "IF_HC_IN_OCTETS",
    "IF_HC_OUT_OCTETS",
    "IF_HIGH_SPEED",
    "IF_INDEX",
    "IF_IN_ERRORS",
    "IF_IN_OCTETS",
    "IF_LAST_CHANGE",
    "IF_NAME",
    "IF_OPER_STATUS",
    "IF_OUT_ERRORS",
    "IF_OUT_OCTETS",
    "IF_PHYS_ADDRESS",
    "IF_SPEED",
    "IF_TYPE",
    "LINK_DOWN",
    "LINK_UP",
    "SNMP_ENGINE_ID",
    "SNMP_IN_BAD_COMMUNITY_NAMES",
    "SNMP_TRAP_OID",
    "SYS_CONTACT",
    "SYS_DESCR",
    "SYS_LOCATION",
    "SYS_NAME",
    "SYS_OBJECT_ID",
    "SYS_UPTIME",
    "AuthProtocol",
    "CommunityCredentials",
    "Counter32",
    "Counter64",
    "CounterRate",
    "Credentials",
    "Gauge32",
    "IfAdminStatus",
    "IfOperStatus",
    "Integer32",
    "IpAddress",
    "Notification",
    "NotificationCallback",
    "ObjectIdentifier",
    "OctetString",
    "PrivProtocol",
    "SnmpAuthError",
    "SnmpClient",
    "SnmpError",
    "SnmpManager",
    "SnmpProtocolError",
    "SnmpSetRefusedError",
    "SnmpTimeoutError",
    "SnmpValue",
    "TableIndex",
    "TimeTicks",
    "TrapReceiver",
    "Unsigned32",
    "UsmCredentials",
    "to_python",
]
