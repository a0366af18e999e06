"""The OIDs cityvisor reads, numeric (IF-MIB is not bundled), and the interface status enumerations."""

from __future__ import annotations

import enum

# --------------------------------------------------------------------------- OIDs

SYS_DESCR = "1.3.6.1.2.1.1.1.0"


SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"


SYS_UPTIME = "1.3.6.1.2.1.1.3.0"


SYS_CONTACT = "1.3.6.1.2.1.1.4.0"


SYS_NAME = "1.3.6.1.2.1.1.5.0"


SYS_LOCATION = "1.3.6.1.2.1.1.6.0"


SNMP_ENGINE_ID = "1.3.6.1.6.3.10.2.1.1.0"


SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"


SNMP_IN_BAD_COMMUNITY_NAMES = "1.3.6.1.2.1.11.4.0"


# IF-MIB ifTable columns (index: ifIndex).
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"


IF_DESCR = "1.3.6.1.2.1.2.2.1.2"


IF_TYPE = "1.3.6.1.2.1.2.2.1.3"


IF_SPEED = "1.3.6.1.2.1.2.2.1.5"


IF_PHYS_ADDRESS = "1.3.6.1.2.1.2.2.1.6"


IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"


IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8"


IF_LAST_CHANGE = "1.3.6.1.2.1.2.2.1.9"


IF_IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"


IF_IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"


IF_OUT_OCTETS = "1.3.6.1.2.1.2.2.1.16"


IF_OUT_ERRORS = "1.3.6.1.2.1.2.2.1.20"


# IF-MIB ifXTable columns (same index).
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"


IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"


IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"


IF_HIGH_SPEED = "1.3.6.1.2.1.31.1.1.1.15"


IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.18"


# Standard notifications (SNMPv2-MIB snmpTraps / IF-MIB).
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


LINK_UP = "1.3.6.1.6.3.1.1.5.4"


class IfAdminStatus(enum.IntEnum):
    """IF-MIB ifAdminStatus: what the operator asked for."""

    UP = 1
    DOWN = 2
    TESTING = 3


class IfOperStatus(enum.IntEnum):
    """IF-MIB ifOperStatus: what the port really does."""

    UP = 1
    DOWN = 2
    TESTING = 3
    UNKNOWN = 4
    DORMANT = 5
    NOT_PRESENT = 6
    LOWER_LAYER_DOWN = 7
