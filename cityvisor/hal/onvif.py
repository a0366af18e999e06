"""ONVIF for the HAL: one client per camera on onvif-zeep-async, with typed errors.

A cameras plugin needs this module only, never ``onvif`` or ``zeep`` itself:

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

Credentials never leave this module: they are not in ``repr``, not in error
messages or logs, and URIs are returned without ``user:password@``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import RunVar

from cityvisor.core.devices import DeviceError

from .http import ChallengeAuth, InsecureChallengeError, ResponseTooLargeError, read_body

__all__ = [
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
    "strip_credentials",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

AUTH_RETRY_AFTER = 300.0
"""Seconds before a camera that refused our credentials is tried again."""

SOAP_BODY_LIMIT = 2 * 2**20
"""Bytes a SOAP reply may have (a camera's longest, GetProfiles or PullMessages, is tens of kB)."""

SNAPSHOT_LIMIT = 4 * 2**20
"""Bytes a snapshot may have unless the client is given another limit."""

CONCURRENT_CONNECTS = 4
"""Handshakes in flight at once (per event loop): a hub starting 200 cameras would
otherwise parse the same WSDLs 200 times at once before the library's cache fills."""

_connects: RunVar[anyio.CapacityLimiter] = RunVar("cityvisor_onvif_connects")

_PULLPOINT = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
_RENEW_AT = 0.8
"""Renew a subscription when this fraction of its lifetime has passed."""


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


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class DeviceInformation:
    """What ``GetDeviceInformation`` says about the camera."""

    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str


@dataclass(frozen=True)
class MediaProfile:
    """A media profile: a stream configuration the camera offers (main stream, sub stream)."""

    token: str
    name: str
    encoding: str = ""
    width: int = 0
    height: int = 0
    ptz: bool = False
    """True if the profile has a PTZ configuration (PTZ calls need such a profile)."""


@dataclass(frozen=True)
class PtzPreset:
    """A stored PTZ position."""

    token: str
    name: str
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None

    def matches(self, status: PtzStatus, tolerance: float = 0.01) -> bool:
        """True if the head stands (idle) at this preset's position."""
        pairs = [(self.pan, status.pan), (self.tilt, status.tilt), (self.zoom, status.zoom)]
        known = [(a, b) for a, b in pairs if a is not None and b is not None]
        return not status.moving and bool(known) and all(abs(a - b) <= tolerance for a, b in known)


@dataclass(frozen=True)
class PtzStatus:
    """Where the PTZ head is and whether it moves."""

    pan: float | None
    tilt: float | None
    zoom: float | None
    moving: bool
    utc_time: dt.datetime | None = None


@dataclass(frozen=True)
class CameraEvent:
    """One event from the camera's PullPoint subscription.

    ``kind`` is ``motion``, ``tamper``, ``input`` or ``other``; ``source``
    names what it concerns (``VideoSource_1``, an input token); ``active`` is
    the state it reports; ``initial`` is True for the current state the
    camera sends when subscribing or on a synchronisation point.
    """

    kind: str
    source: str
    active: bool
    topic: str
    utc_time: dt.datetime | None = None
    initial: bool = False


_TOPICS = (
    ("motion", ("MotionAlarm", "CellMotionDetector/Motion", "MotionDetector", "Motion")),
    ("tamper", ("GlobalSceneChange", "TamperDetector", "Tamper")),
    ("input", ("DigitalInput", "Trigger/Relay")),
)
_TRUE = frozenset({"true", "1", "on", "active"})


def classify_topic(topic: str) -> str:
    """``motion``, ``tamper``, ``input`` or ``other`` for an ONVIF topic (vendors vary)."""
    for kind, markers in _TOPICS:
        if any(marker in topic for marker in markers):
            return kind
    return "other"


def strip_credentials(uri: str | None) -> str:
    """The URI without ``user:password@`` (what may be shown or logged)."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# --------------------------------------------------------------------------- the library


_library: ModuleType | None = None


def _onvif() -> ModuleType:
    """Import onvif-zeep-async on first use (it takes half a second; most CLI commands never need it)."""
    global _library
    if _library is None:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        import onvif.client

        # onvif.client calls logging.basicConfig(level=INFO) when imported;
        # logging is the application's to configure, so undo it.
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        # Every service the library creates (update_xaddrs makes its own) builds
        # its transport from this module-level name: ours reads bounded bodies.
        onvif.client.AsyncTransportProtocolErrorHandler = _bounded_transport(
            onvif.client.AsyncTransportProtocolErrorHandler
        )
        _library = onvif.client
    return _library


_HTTP_401 = "http:401"
"""The code of the fault the transport raises for an HTTP 401 (whatever the body said)."""


def _bounded_transport(base: type) -> type:
    """The library's SOAP transport, reading every reply through :func:`read_body`.

    A reply with HTTP 200 must be well-formed XML: zeep parses in recovery
    mode, which turns a truncated reply into a silently shorter one (half a
    preset list). An HTTP 401 becomes a fault with code ``http:401`` before
    zeep parses the body: cameras answer a wrong password with a 401 and a
    generic fault (no ``ter:NotAuthorized``) or an HTML page, and it must
    read as a credentials problem either way. A fault (not another
    exception) keeps the library's own fallback working: it retries an
    unauthenticated ``GetSystemDateAndTime`` with credentials when that one
    is refused.
    """
    import lxml.etree
    import zeep.exceptions

    strict = lxml.etree.XMLParser(resolve_entities=False, no_network=True)

    def well_formed(response: aiohttp.ClientResponse, content: bytes) -> bytes:
        if response.status == 200:
            lxml.etree.fromstring(content, strict)  # raises XMLSyntaxError, read as a bad reply
        return content

    class BoundedTransport(base):  # type: ignore[misc, valid-type]
        async def _post_internal(
            self, address: str, message: str | bytes, headers: dict[str, str]
        ) -> tuple[aiohttp.ClientResponse, bytes]:
            headers = dict(headers or {})
            headers.setdefault("Content-Type", 'text/xml; charset="utf-8"')
            data = message.encode("utf-8") if isinstance(message, str) else message
            response = await self._send("POST", address, data=data, headers=headers)
            return response, well_formed(response, await read_body(response, SOAP_BODY_LIMIT))

        async def get(
            self,
            address: str,
            params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
        ) -> Any:
            response = await self._send("GET", address, params=params, headers=headers or {})
            return self._aiohttp_to_requests_response(
                response, await read_body(response, SOAP_BODY_LIMIT)
            )

        async def _send(self, method: str, address: str, **options: Any) -> Any:
            try:
                response = await self.session.request(
                    method, address, proxy=self.proxy, timeout=self._client_timeout, **options
                )
            except RuntimeError as error:  # the session was closed under us: a lost connection
                raise aiohttp.ClientConnectionError(str(error)) from error
            if response.status == 401:
                response.close()
                raise zeep.exceptions.Fault("HTTP 401 Unauthorized", code=_HTTP_401)
            return response

    return BoundedTransport


# --------------------------------------------------------------------------- the client


class OnvifClient:
    """One ONVIF camera, reached through onvif-zeep-async.

    ::

        async with OnvifClient("10.20.3.14", 80, "cityvisor", password) as camera:
            info = await camera.device_information()
            profiles = await camera.profiles()
            jpeg = await camera.snapshot(profiles[0].token)

    ``timeout`` bounds every request (seconds). ``snapshot_limit`` bounds a
    picture (bytes); ``allow_basic_over_http`` lets snapshots answer a Basic
    challenge over plain HTTP (the password then crosses the network in
    clear; refused by default). Create a new client to reconnect:
    :meth:`connect` reads the camera's clock again, which a camera that
    rebooted may have changed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        auth_retry_after: float = AUTH_RETRY_AFTER,
        snapshot_limit: int = SNAPSHOT_LIMIT,
        allow_basic_over_http: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.auth_retry_after = auth_retry_after
        self.snapshot_limit = snapshot_limit
        self.allow_basic_over_http = allow_basic_over_http
        self.snapshot_auth: ChallengeAuth | None = None
        """How snapshots authenticate (its ``scheme`` says what the camera asked for)."""
        self._username = username
        self._password = password
        self._camera: Any = None
        self._snapshots: aiohttp.ClientSession | None = None
        self.services: dict[str, str] = {}
        """Service namespace -> address, from ``GetServices`` (or ``GetCapabilities``)."""
        self._snapshot_uris: dict[str, str] = {}
        self.clock_offset = 0.0
        """Seconds the camera's clock is ahead of ours (WS-Security timestamps follow it)."""
        self.unreadable_events = 0
        """Event messages skipped because they could not be read."""

    def __repr__(self) -> str:
        return f"<OnvifClient {self.host}:{self.port}>"

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connection ------------------------------------------------------------

    async def connect(self) -> DeviceInformation:
        """Read the clock, find the services, check the credentials; return the device information."""
        library = _onvif()
        with self._errors("connect"):
            self._camera = library.ONVIFCamera(
                self.host,
                self.port,
                self._username,
                self._password,
                no_cache=True,  # the WSDLs are local files: no cache database in the user's home
                adjust_time=True,  # sign tokens in the camera's time (GetSystemDateAndTime)
            )
            # Snapshots keep one authentication middleware per camera: after the
            # first challenge it authenticates pre-emptively (one request per image).
            self.snapshot_auth = ChallengeAuth(
                self._username,
                self._password,
                allow_basic_over_http=self.allow_basic_over_http,
            )
            self._snapshots = aiohttp.ClientSession(
                middlewares=(self.snapshot_auth,),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            limiter = _connects.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(CONCURRENT_CONNECTS)
            _connects.set(limiter)
        async with limiter:
            # The clock, then the services (GetServices, else GetCapabilities): up to
            # three requests, each allowed ``timeout``.
            deadline = self.timeout * 3
            with self._errors("GetServices", deadline), anyio.fail_after(deadline):
                await self._camera.update_xaddrs()
        self.services = dict(self._camera.xaddrs)
        diff = self._camera.dt_diff
        self.clock_offset = diff.total_seconds() if diff is not None else 0.0
        return await self.device_information()

    async def aclose(self) -> None:
        """Close every connection to the camera (safe to call twice, and after failures)."""
        camera, self._camera = self._camera, None
        snapshots, self._snapshots = self._snapshots, None
        with anyio.move_on_after(5, shield=True):
            if snapshots is not None:
                await snapshots.close()
            if camera is not None:
                try:
                    await camera.close()
                except Exception:  # closing must never hide the error that made us close
                    log.debug("%r: closing failed", self, exc_info=True)

    @property
    def connected(self) -> bool:
        """True between :meth:`connect` and :meth:`aclose`."""
        return self._camera is not None

    def _require(self) -> Any:
        if self._camera is None:
            raise CameraError(f"camera {self.host}:{self.port} is not connected")
        return self._camera

    @contextmanager
    def _errors(self, operation: str, deadline: float | None = None) -> Iterator[None]:
        """Turn whatever the library raises into a :class:`CameraError` that names no secret.

        ``deadline`` is what the timeout message names when the caller allows
        more than ``timeout`` (the connection's several requests).
        """
        library = _onvif()
        import lxml.etree
        import zeep.exceptions

        where = f"{operation} on {self.host}:{self.port}"
        try:
            yield
        except CameraError:
            raise
        except zeep.exceptions.Fault as fault:
            subcodes = [getattr(c, "localname", str(c)) for c in (fault.subcodes or [])]
            if (
                fault.code == _HTTP_401
                or "NotAuthorized" in subcodes
                or "FailedAuthentication" in str(fault.code)
            ):
                raise CameraAuthError(
                    f"{where}: the camera refused the credentials",
                    retry_after=self.auth_retry_after,
                ) from None
            detail = "/".join(subcodes) or str(fault.code or "")
            raise CameraFaultError(f"{where}: {fault.message} ({detail})", detail) from None
        except library.ONVIFAuthError:
            raise CameraAuthError(
                f"{where}: the camera refused the credentials", retry_after=self.auth_retry_after
            ) from None
        except InsecureChallengeError as error:
            raise CameraAuthError(f"{where}: {error}", retry_after=self.auth_retry_after) from None
        except (TimeoutError, library.ONVIFTimeoutError):
            within = self.timeout if deadline is None else deadline
            raise CameraError(f"{where}: no answer within {within:g} s") from None
        except zeep.exceptions.TransportError as error:
            if error.status_code == 401:
                raise CameraAuthError(
                    f"{where}: the camera refused the credentials",
                    retry_after=self.auth_retry_after,
                ) from None
            # The camera answered, with an HTTP error and no SOAP fault.
            raise CameraReplyError(f"{where}: HTTP {error.status_code}") from None
        except ResponseTooLargeError as error:
            raise CameraReplyError(f"{where}: {error}") from None
        except (
            ValueError,
            TypeError,
            AttributeError,
            LookupError,
            lxml.etree.LxmlError,
            zeep.exceptions.Error,
        ) as error:
            # The camera answered something we cannot read (zeep's XMLSyntaxError,
            # lxml's "Invalid tag name", a number that is not one, a missing field).
            message = _without_userinfo(str(error))[:200]
            raise CameraReplyError(
                f"{where}: the camera's reply could not be read ({type(error).__name__}: {message})"
            ) from None
        except (OSError, aiohttp.ClientError, library.ONVIFError) as error:
            # The library's messages may quote a URI; keep only the error's type
            # and strip any userinfo from what is left.
            message = _without_userinfo(str(error))
            raise CameraError(f"{where}: {type(error).__name__}: {message}") from None

    async def _call(
        self,
        service: str,
        operation: str,
        params: Mapping[str, Any] | None = None,
        parse: Callable[[Any], T] | None = None,
    ) -> Any:
        """One request; ``parse`` turns the reply into values under the same error handling."""
        camera = self._require()
        with self._errors(operation):
            with anyio.fail_after(self.timeout):
                proxy = await _service(camera.create_onvif_service, service)
                result = await getattr(proxy, operation)(dict(params) if params else None)
            return result if parse is None else parse(result)

    # -- device ------------------------------------------------------------------

    async def device_information(self) -> DeviceInformation:
        """Manufacturer, model, firmware, serial number (``GetDeviceInformation``)."""

        def parse(info: Any) -> DeviceInformation:
            return DeviceInformation(
                manufacturer=str(info.Manufacturer or ""),
                model=str(info.Model or ""),
                firmware=str(info.FirmwareVersion or ""),
                serial=str(info.SerialNumber or ""),
                hardware_id=str(info.HardwareId or ""),
            )

        information: DeviceInformation = await self._call(
            "devicemgmt", "GetDeviceInformation", parse=parse
        )
        return information

    def supports(self, service: str) -> bool:
        """True if the camera announced the service (``"ptz"``, ``"events"``, ``"media"``)."""
        namespaces = {
            "media": "http://www.onvif.org/ver10/media/wsdl",
            "ptz": "http://www.onvif.org/ver20/ptz/wsdl",
            "events": "http://www.onvif.org/ver10/events/wsdl",
        }
        return namespaces.get(service, service) in self.services

    # -- media -------------------------------------------------------------------

    async def profiles(self) -> list[MediaProfile]:
        """The camera's media profiles, main stream first as the camera lists them."""
        profiles: list[MediaProfile] = await self._call("media", "GetProfiles", parse=_profiles)
        return profiles

    async def stream_uri(self, profile: str, protocol: str = "RTSP") -> str:
        """The profile's stream URI (RTSP unicast), without credentials."""
        uri: str = await self._call(
            "media",
            "GetStreamUri",
            {
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": protocol}},
                "ProfileToken": profile,
            },
            parse=_uri,
        )
        return uri

    async def snapshot_uri(self, profile: str) -> str:
        """The profile's snapshot URI, without credentials."""
        uri: str = await self._call(
            "media", "GetSnapshotUri", {"ProfileToken": profile}, parse=_uri
        )
        return uri

    async def snapshot(self, profile: str) -> bytes:
        """A JPEG of the profile's current picture, at most ``snapshot_limit`` bytes.

        Authenticated as the camera's challenge asks (:class:`~cityvisor.hal.http.ChallengeAuth`);
        the body is streamed and given up past the limit (:class:`CameraReplyError`).
        """
        self._require()
        uri = self._snapshot_uris.get(profile) or await self.snapshot_uri(profile)
        self._snapshot_uris[profile] = uri
        if not uri:
            raise CameraFaultError(f"{self.host}:{self.port} gives no snapshot URI for {profile}")
        session = self._snapshots
        assert session is not None
        with self._errors("snapshot"), anyio.fail_after(self.timeout):
            async with session.get(uri) as response:
                if response.status == 401:
                    raise CameraAuthError(
                        f"snapshot on {self.host}:{self.port}: the camera refused the credentials",
                        retry_after=self.auth_retry_after,
                    )
                if response.status >= 300:
                    raise CameraFaultError(
                        f"snapshot on {self.host}:{self.port}: HTTP {response.status}"
                    )
                return await read_body(response, self.snapshot_limit)

    # -- PTZ ---------------------------------------------------------------------

    async def presets(self, profile: str) -> list[PtzPreset]:
        """The PTZ presets of a profile (``GetPresets``)."""
        presets: list[PtzPreset] = await self._call(
            "ptz", "GetPresets", {"ProfileToken": profile}, parse=_presets
        )
        return presets

    async def goto_preset(self, profile: str, preset: str) -> None:
        """Order the head to a preset (returns when the camera accepted the order, not arrived)."""
        await self._call("ptz", "GotoPreset", {"ProfileToken": profile, "PresetToken": preset})

    async def ptz_status(self, profile: str) -> PtzStatus:
        """Where the head is and whether it moves (``GetStatus``)."""
        status: PtzStatus = await self._call(
            "ptz", "GetStatus", {"ProfileToken": profile}, parse=_ptz_status
        )
        return status

    # -- events ------------------------------------------------------------------

    @asynccontextmanager
    async def events(
        self,
        *,
        lifetime: float = 60.0,
        pull_timeout: float = 5.0,
        buffer: int = 64,
    ) -> AsyncIterator[ObjectReceiveStream[CameraEvent]]:
        """Subscribe to the camera's events (PullPoint) for the length of an ``async with``.

        ::

            async with camera.events() as events:
                async for event in events:
                    ...

        The subscription lives ``lifetime`` seconds and is renewed at 80 % of
        it; ``PullMessages`` waits up to ``pull_timeout`` seconds for events,
        so one arrives as soon as the camera has it. Events go through a
        memory stream of ``buffer`` items: a consumer that falls behind makes
        the puller wait (the camera queues meanwhile), nothing grows without
        bound. A failed pull or renewal raises out of the ``async with``.
        """
        camera = self._require()
        with self._errors("CreatePullPointSubscription"):
            with anyio.fail_after(self.timeout):
                service = await _service(camera.create_events_service)
                created = await service.CreatePullPointSubscription(
                    {"InitialTerminationTime": _duration(lifetime)}
                )
                address = _onvif().normalize_url(created.SubscriptionReference.Address._value_1)
                camera.xaddrs[_PULLPOINT] = address
                manager = await _service(
                    camera.create_subscription_service, "PullPointSubscription"
                )
                pullpoint = await _service(camera.create_pullpoint_service)
        send, receive = anyio.create_memory_object_stream[CameraEvent](buffer)
        try:
            with send, receive:  # closed even if the puller never got to start
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pull, pullpoint, pull_timeout, send)
                    tg.start_soon(self._renew, manager, lifetime, _lifetime(created, lifetime))
                    yield receive
                    tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(2, shield=True):
                try:
                    await manager.Unsubscribe()
                except Exception:  # a courtesy: the subscription expires on the camera anyway
                    log.debug("%r: Unsubscribe failed", self, exc_info=True)

    async def _pull(self, pullpoint: Any, pull_timeout: float, send: Any) -> None:
        request = {"Timeout": dt.timedelta(seconds=pull_timeout), "MessageLimit": 100}
        async with send:
            while True:
                with self._errors("PullMessages"), anyio.fail_after(pull_timeout + self.timeout):
                    result = await pullpoint.PullMessages(request)
                for message in getattr(result, "NotificationMessage", None) or []:
                    try:
                        event = _event(message)
                    except (ValueError, TypeError, AttributeError) as error:
                        # One odd message is that message's loss, not the subscription's.
                        self.unreadable_events += 1
                        log.warning("%r: an event could not be read (%s)", self, error)
                        continue
                    if event is not None:
                        await send.send(event)

    async def _renew(self, manager: Any, lifetime: float, granted: float) -> None:
        while True:
            await anyio.sleep(max(1.0, granted * _RENEW_AT))
            with self._errors("Renew"), anyio.fail_after(self.timeout):
                result = await manager.Renew(_duration(lifetime))
            granted = _lifetime(result, lifetime)


# --------------------------------------------------------------------------- parsing


async def _service(create: Any, *args: Any) -> Any:
    """A service proxy from the library, created under a shield.

    Creating one opens an aiohttp session and builds zeep clients (local work,
    no request); cancelled half-way, the library would lose the session
    unclosed. The shield lets that short step finish.
    """
    with anyio.CancelScope(shield=True):
        return await create(*args)


def _without_userinfo(text: str) -> str:
    return " ".join(strip_credentials(w) if "://" in w else w for w in text.split(" "))


def _duration(seconds: float) -> str:
    return f"PT{max(1, math.ceil(seconds))}S"


def _lifetime(result: Any, default: float) -> float:
    """Seconds the camera granted: TerminationTime - CurrentTime (both in its clock)."""
    current = getattr(result, "CurrentTime", None)
    termination = getattr(result, "TerminationTime", None)
    if isinstance(current, dt.datetime) and isinstance(termination, dt.datetime):
        try:
            return max(1.0, (termination - current).total_seconds())
        except TypeError:  # one naive, one aware: the camera's clock format is broken
            pass
    return default


def _uri(result: Any) -> str:
    uri = getattr(result, "Uri", None)
    if uri is not None and not isinstance(uri, str):
        raise TypeError(f"Uri is a {type(uri).__name__}, not text")
    return strip_credentials(uri)


def _profiles(result: Any) -> list[MediaProfile]:
    profiles = []
    for profile in result or []:
        encoder = getattr(profile, "VideoEncoderConfiguration", None)
        resolution = getattr(encoder, "Resolution", None)
        profiles.append(
            MediaProfile(
                token=str(profile.token),
                name=str(getattr(profile, "Name", "") or profile.token),
                encoding=str(getattr(encoder, "Encoding", "") or ""),
                width=int(getattr(resolution, "Width", 0) or 0),
                height=int(getattr(resolution, "Height", 0) or 0),
                ptz=getattr(profile, "PTZConfiguration", None) is not None,
            )
        )
    return profiles


def _presets(result: Any) -> list[PtzPreset]:
    presets = []
    for preset in result or []:
        if preset.token is None:
            raise ValueError("a preset without a token")
        pan, tilt, zoom = _vector(getattr(preset, "PTZPosition", None))
        presets.append(
            PtzPreset(
                token=str(preset.token),
                name=str(getattr(preset, "Name", "") or preset.token),
                pan=pan,
                tilt=tilt,
                zoom=zoom,
            )
        )
    return presets


def _ptz_status(result: Any) -> PtzStatus:
    if result is None:
        raise ValueError("an empty PTZ status")
    pan, tilt, zoom = _vector(getattr(result, "Position", None))
    move = getattr(result, "MoveStatus", None)
    states = {str(getattr(move, axis, "") or "").upper() for axis in ("PanTilt", "Zoom")}
    when = getattr(result, "UtcTime", None)
    return PtzStatus(
        pan, tilt, zoom, "MOVING" in states, when if isinstance(when, dt.datetime) else None
    )


def _vector(position: Any) -> tuple[float | None, float | None, float | None]:
    pan_tilt = getattr(position, "PanTilt", None)
    zoom = getattr(position, "Zoom", None)

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return (
        number(getattr(pan_tilt, "x", None)),
        number(getattr(pan_tilt, "y", None)),
        number(getattr(zoom, "x", None)),
    )


def _items(container: Any) -> dict[str, str]:
    items = getattr(container, "SimpleItem", None) or []
    return {str(item.Name): str(item.Value) for item in items}


def _event(message: Any) -> CameraEvent | None:
    """A :class:`CameraEvent` from one ``wsnt:NotificationMessage``; None if it has no state."""
    topic_node = getattr(message, "Topic", None)
    topic = str(getattr(topic_node, "_value_1", "") or "").strip()
    body = getattr(getattr(message, "Message", None), "_value_1", None)
    if body is None:
        return None
    source = _items(getattr(body, "Source", None))
    data = _items(getattr(body, "Data", None))
    if not data:
        return None
    kind = classify_topic(topic)
    value = next(iter(data.values()))
    for name in ("State", "IsMotion", "IsTamper", "LogicalState", "Motion", "Tamper"):
        if name in data:
            value = data[name]
            break
    when = getattr(body, "UtcTime", None)
    return CameraEvent(
        kind=kind,
        source=next(iter(source.values()), ""),
        active=value.strip().lower() in _TRUE,
        topic=topic,
        utc_time=when if isinstance(when, dt.datetime) else None,
        initial=str(getattr(body, "PropertyOperation", "")) == "Initialized",
    )
