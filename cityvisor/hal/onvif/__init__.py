"""ONVIF for the HAL: one client per camera on onvif-zeep-async, with typed errors.

A cameras plugin needs this package only, never ``onvif`` or ``zeep`` itself:

* :class:`OnvifClient` is one camera: :meth:`~OnvifClient.connect` reads the
  camera's clock (``GetSystemDateAndTime``, unauthenticated) so that every
  WS-Security UsernameToken is signed in the camera's time, finds its
  services (``GetServices``, falling back to ``GetCapabilities``) and checks
  the credentials with ``GetDeviceInformation``. Then: media profiles,
  stream and snapshot URIs, the snapshot itself (authenticated as the
  camera's challenge asks: Digest MD5 or SHA-256, or Basic where allowed),
  PTZ presets (list, go to, status) and events.
* :meth:`OnvifClient.events` runs a PullPoint subscription (motion,
  tampering, digital inputs) under the caller's task group: it long-polls
  ``PullMessages``, renews the subscription at 80 % of its lifetime and
  unsubscribes on exit. A failed pull or renewal raises into the caller,
  whose supervisor restarts the driver (the library's ``PullPointManager``
  renews from a fire-and-forget task and only reports loss to a callback:
  see docs/families/cameras.md).
* Every call runs under a timeout; failures become :class:`CameraError`
  subclasses, which are :class:`~cityvisor.core.devices.DeviceError`: a
  wrong password (``ter:NotAuthorized``, or any HTTP 401, whatever fault
  comes with it) is :class:`CameraAuthError` (reason ``config_error``,
  retried only after ``auth_retry_after`` seconds: no retry storm); an
  unreachable or silent camera is ``comm_failure``; an answer that is not
  the one asked for is a :class:`CameraAnswerError` (``device_failure``):
  a SOAP fault (:class:`CameraFaultError`) or a reply that cannot be read
  (:class:`CameraReplyError`: truncated or odd XML, a value of the wrong
  type, a body over its limit). The camera is there: a caller may take
  such a failure of an optional call (PTZ, events) as that function's
  alone.
* Every body read from the camera is streamed and bounded
  (:func:`cityvisor.hal.http.read_body`): ``SOAP_BODY_LIMIT`` for SOAP
  replies, ``snapshot_limit`` for pictures.

Credentials never leave this package: they are not in ``repr``, not in error
messages or logs, and URIs are returned without ``user:password@``.

Where each part lives: ``client.py`` (:class:`OnvifClient`), ``values.py``
(what a camera tells, and event topics), ``parsing.py`` (SOAP answers into
those values), ``transport.py`` (the library and its bounded transport),
``limits.py`` and ``errors.py`` (typed failures).
"""

from __future__ import annotations

from .client import OnvifClient
from .errors import (
    CameraAnswerError,
    CameraAuthError,
    CameraError,
    CameraFaultError,
    CameraReplyError,
)
from .limits import AUTH_RETRY_AFTER, CONCURRENT_CONNECTS, SNAPSHOT_LIMIT, SOAP_BODY_LIMIT
from .values import (
    CameraEvent,
    DeviceInformation,
    MediaProfile,
    PtzPreset,
    PtzStatus,
    classify_topic,
    strip_credentials,
)

__all__ = [
    "AUTH_RETRY_AFTER",
    "CONCURRENT_CONNECTS",
    "SNAPSHOT_LIMIT",
    "SOAP_BODY_LIMIT",
    "CameraAnswerError",
    "CameraAuthError",
    "CameraError",
    "CameraEvent",
    "CameraFaultError",
    "CameraReplyError",
    "DeviceInformation",
    "MediaProfile",
    "OnvifClient",
    "PtzPreset",
    "PtzStatus",
    "classify_topic",
    "strip_credentials",
]
