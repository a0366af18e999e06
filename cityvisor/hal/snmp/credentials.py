"""SNMP credentials: v1/v2c communities and v3 users (authentication and privacy protocols)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from pysnmp.entity import config as pysnmp_config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_PRIV_CBC56_DES,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    UsmUserData,
)
from pysnmp.proto.rfc1902 import (
    OctetString,
)

# --------------------------------------------------------------------------- credentials

AuthProtocol: TypeAlias = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]


PrivProtocol: TypeAlias = Literal["DES", "AES", "AES192", "AES256"]


_AUTH_PROTOCOLS = {
    "MD5": USM_AUTH_HMAC96_MD5,
    "SHA": USM_AUTH_HMAC96_SHA,
    "SHA224": USM_AUTH_HMAC128_SHA224,
    "SHA256": USM_AUTH_HMAC192_SHA256,
    "SHA384": USM_AUTH_HMAC256_SHA384,
    "SHA512": USM_AUTH_HMAC384_SHA512,
}


_PRIV_PROTOCOLS = {
    "DES": USM_PRIV_CBC56_DES,
    "AES": USM_PRIV_CFB128_AES,
    "AES192": USM_PRIV_CFB192_AES,
    "AES256": USM_PRIV_CFB256_AES,
}


@dataclass(frozen=True, slots=True)
class CommunityCredentials:
    """SNMP v2c: a community string (kept out of ``repr``)."""

    community: str = field(repr=False)

    @property
    def version(self) -> str:
        """``"v2c"``."""
        return "v2c"


@dataclass(frozen=True, slots=True)
class UsmCredentials:
    """SNMP v3 USM user with authPriv (authentication and privacy keys kept out of ``repr``)."""

    user: str
    auth_key: str = field(repr=False)
    priv_key: str = field(repr=False)
    auth_protocol: AuthProtocol = "SHA"
    priv_protocol: PrivProtocol = "AES"

    def __post_init__(self) -> None:
        if self.auth_protocol not in _AUTH_PROTOCOLS:
            raise ValueError(f"unknown SNMPv3 authentication protocol {self.auth_protocol!r}")
        if self.priv_protocol not in _PRIV_PROTOCOLS:
            raise ValueError(f"unknown SNMPv3 privacy protocol {self.priv_protocol!r}")
        # RFC 3414 requires at least 8 characters; pysnmp would fail later and less clearly.
        if len(self.auth_key) < 8 or len(self.priv_key) < 8:
            raise ValueError(f"SNMPv3 keys of user {self.user!r} must be at least 8 characters")

    @property
    def version(self) -> str:
        """``"v3"``."""
        return "v3"

    def add_to(self, engine: SnmpEngine, engine_id: bytes | None = None) -> None:
        """Declare this user in a pysnmp engine (an agent's, or a receiver's for ``engine_id``)."""
        pysnmp_config.add_v3_user(
            engine,
            self.user,
            _AUTH_PROTOCOLS[self.auth_protocol],
            self.auth_key,
            _PRIV_PROTOCOLS[self.priv_protocol],
            self.priv_key,
            securityEngineId=None if engine_id is None else OctetString(engine_id),
        )

    def user_data(self) -> UsmUserData:
        """The pysnmp form of these credentials."""
        return UsmUserData(
            self.user,
            self.auth_key,
            self.priv_key,
            authProtocol=_AUTH_PROTOCOLS[self.auth_protocol],
            privProtocol=_PRIV_PROTOCOLS[self.priv_protocol],
        )


Credentials: TypeAlias = CommunityCredentials | UsmCredentials
