"""Modbus failures, typed: each exception carries the point quality it means."""

from __future__ import annotations

import logging

from cityvisor.core.devices import DeviceError
from cityvisor.core.points import Quality


class _TimeoutsAreQualities(logging.Filter):
    """Drop pymodbus's ERROR line for each request it timed out, and each failed connection.

    The endpoint leaves the per-request timeout to pymodbus, which logs every
    one; here a timeout is a point quality (``comm_failure:timeout``), and the
    endpoint itself warns when timeouts in a row make it reopen the
    connection. A dead unit must not fill the operator's log. pymodbus logs
    an identical message again as ``Repeating....``: dropped too when what it
    repeats was.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dropping = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith("Repeating...."):
            self._dropping = message.startswith(self.DROPPED)
        return not self._dropping

    DROPPED = ("No response received after", "Failed to connect")
    """Messages the endpoint reports itself, once per outage rather than once per attempt."""


logging.getLogger("pymodbus.logging").addFilter(_TimeoutsAreQualities())


# --------------------------------------------------------------------------- errors

# Modbus exception codes: (name, quality class). Addressing and function errors
# are configuration mistakes (the profile does not match the device); gateway
# errors mean the unit behind the gateway cannot be reached, a communication
# failure; everything else is the device saying it cannot do it.
_EXCEPTION_CODES: dict[int, tuple[str, str]] = {
    1: ("illegal_function", "config_error"),
    2: ("illegal_data_address", "config_error"),
    3: ("illegal_data_value", "config_error"),
    4: ("server_device_failure", "device_failure"),
    5: ("acknowledge", "device_failure"),
    6: ("device_busy", "device_failure"),
    7: ("negative_acknowledge", "device_failure"),
    8: ("memory_parity_error", "device_failure"),
    10: ("gateway_path_unavailable", "comm_failure"),
    11: ("gateway_target_no_response", "comm_failure"),
}


def exception_quality(code: int) -> Quality:
    """The quality a Modbus exception code gives the points it concerns.

    The reason is ``<class>:<exception name>``, for example
    ``config_error:illegal_data_address`` or ``device_failure:device_busy``;
    ``reason.partition(":")[0]`` is the class.
    """
    name, kind = _EXCEPTION_CODES.get(code, (f"exception_{code}", "device_failure"))
    return Quality.bad(f"{kind}:{name}")


class ModbusError(Exception):
    """A Modbus request failed; ``quality`` is what that means for the points it read."""

    quality: Quality = Quality.bad("comm_failure")


class ModbusExceptionError(ModbusError):
    """The device answered with a Modbus exception (illegal address, busy...)."""

    def __init__(self, code: int, function_code: int, unit: int, address: int) -> None:
        self.code = code
        self.function_code = function_code
        self.unit = unit
        self.address = address
        self.quality = exception_quality(code)
        name = _EXCEPTION_CODES.get(code, (f"exception_{code}", ""))[0]
        self.name = name
        super().__init__(
            f"unit {unit} answered exception {code} ({name}) to function {function_code} "
            f"at address {address}"
        )


class ModbusTimeoutError(ModbusError):
    """No answer within the request timeout."""

    quality = Quality.bad("comm_failure:timeout")


class ModbusMalformedReplyError(ModbusError):
    """An answer that cannot be decoded, or that does not match the request."""

    quality = Quality.bad("comm_failure:malformed_reply")


class ModbusConnectionError(ModbusError, DeviceError):
    """The endpoint's connection is lost or cannot be opened.

    A :class:`~cityvisor.core.devices.DeviceError` with reason
    ``comm_failure``: raised out of a driver's ``run()``, it makes the
    supervisor mark the device's points bad and restart it. ``retry_after``
    is the time left before the endpoint (or the unit) is worth trying
    again: the supervisor waits that, not a backoff of its own.
    """

    quality = Quality.bad("comm_failure")

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        DeviceError.__init__(self, message, reason="comm_failure", retry_after=retry_after)


class _MalformedFrameError(Exception):
    """Set on pymodbus's pending response when the reply cannot be decoded."""


class _ConnectionLostError(Exception):
    """Set on pymodbus's pending response when the link drops while it waits."""
