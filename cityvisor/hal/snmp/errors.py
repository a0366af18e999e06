"""SNMP failures, typed: timeouts, refused credentials, refused sets, protocol errors."""

from __future__ import annotations

from pysnmp.proto import errind

from cityvisor.core.devices import DeviceError

# --------------------------------------------------------------------------- errors

#: How long a driver waits after an authentication failure: a wrong password is
#: not fixed by retrying, and a storm of bad requests can lock accounts or fill logs.
AUTH_RETRY_AFTER = 300.0


class SnmpError(DeviceError):
    """An SNMP exchange failed; ``reason`` is the quality reason for the device's points."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "comm_failure",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)


class SnmpTimeoutError(SnmpError):
    """No answer from the agent after every retry (``comm_failure``)."""


class SnmpAuthError(SnmpError):
    """The agent refuses our credentials (``config_error``, with a long ``retry_after``).

    Raised for v3 reports (unknown user, wrong digest, decryption error) and
    for a v2c community (or a v3 privacy key) the agent silently ignores,
    detected as explained in :meth:`SnmpClient.get`.
    """

    def __init__(self, message: str, *, retry_after: float = AUTH_RETRY_AFTER) -> None:
        super().__init__(message, reason="config_error", retry_after=retry_after)


class SnmpSetRefusedError(SnmpError):
    """The agent refused a SET (``notWritable``, ``noAccess``, ``readOnly``, ``wrongValue``...).

    ``status`` is the SNMP error-status name and ``oid`` the refused object. A
    refusal is an answer, not a communication failure: the command that asked
    for the SET fails with this message, the device stays online.
    """

    def __init__(self, oid: str, status: str, agent: str) -> None:
        super().__init__(f"{agent} refused to set {oid}: {status}", reason="config_error")
        self.oid = oid
        self.status = status


class SnmpProtocolError(SnmpError):
    """The agent answered with an error to a read (``genErr``, ``tooBig``...) or broke the protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="device_failure")


# Reports that mean "your credentials are wrong": retrying will not help.
_AUTH_INDICATIONS = (
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.WrongDigest,
    errind.DecryptionError,
    errind.AuthenticationFailure,
    errind.AuthenticationError,
    errind.UnsupportedSecurityLevel,
    errind.UnsupportedAuthProtocol,
    errind.UnsupportedPrivProtocol,
    errind.NoEncryption,
    errind.NoAuthentication,
)
