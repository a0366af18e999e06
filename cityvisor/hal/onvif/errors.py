"""Camera failures, typed: refused credentials, unexpected answers, SOAP faults, malformed replies."""

from __future__ import annotations

from cityvisor.core.devices import DeviceError

from .limits import AUTH_RETRY_AFTER

# --------------------------------------------------------------------------- errors


class CameraError(DeviceError):
    """A camera could not be used; ``reason`` is the quality reason of its points."""

    def __init__(
        self, message: str, *, reason: str = "comm_failure", retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)


class CameraAuthError(CameraError):
    """The camera refused the credentials (``ter:NotAuthorized``, or 401 on the snapshot).

    Reason ``config_error``: only fixing the configuration helps, so the
    supervisor waits ``retry_after`` seconds instead of hammering the camera
    (which may lock the account after a few failures).
    """

    def __init__(self, message: str, *, retry_after: float = AUTH_RETRY_AFTER) -> None:
        super().__init__(message, reason="config_error", retry_after=retry_after)


class CameraAnswerError(CameraError):
    """The camera answered, but not with what was asked: that function failed, not the camera."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="device_failure")


class CameraFaultError(CameraAnswerError):
    """The camera answered a request with a SOAP fault (an unknown preset, a refused order)."""

    def __init__(self, message: str, subcode: str = "") -> None:
        super().__init__(message)
        self.subcode = subcode


class CameraReplyError(CameraAnswerError):
    """The camera's reply could not be read: truncated or odd XML, wrong types, over its limit."""
