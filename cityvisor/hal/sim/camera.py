"""An ONVIF camera simulator: SOAP over HTTP on aiohttp, as a real camera answers.

Each :class:`SimulatedCamera` listens on its own port of 127.0.0.1 (ONVIF
fixes the device service at ``/onvif/device_service``, so cameras cannot
share a port by path) and serves, with the shapes of the ONVIF WSDLs that
onvif-zeep-async ships:

- device: ``GetSystemDateAndTime`` (unauthenticated, with the camera's own,
  possibly skewed, clock), ``GetDeviceInformation``, ``GetServices``,
  ``GetCapabilities``;
- media: ``GetProfiles``, ``GetStreamUri``, ``GetSnapshotUri``, and the
  snapshot itself: a JPEG showing the camera's name and time, behind HTTP
  Digest authentication (RFC 7616, ``qop=auth``, MD5 or with
  ``snapshot_auth="digest-sha256"`` SHA-256) or, with
  ``snapshot_auth="basic"``, HTTP Basic;
- PTZ: ``GetPresets``, ``GotoPreset`` (the head travels for
  ``ptz_travel_time`` seconds), ``GetStatus``;
- events: ``CreatePullPointSubscription``, ``PullMessages`` (long poll),
  ``Renew``, ``Unsubscribe``, ``SetSynchronizationPoint``, with motion,
  tampering and digital-input events raised from Python
  (:meth:`SimulatedCamera.set_motion`...).

Every operation but ``GetSystemDateAndTime`` checks the WS-Security
UsernameToken digest, ``Base64(SHA1(nonce + created + password))``, and a
``Created`` within five minutes of the camera's clock; a bad one gets the
SOAP 1.2 fault a real camera sends (``env:Sender`` / ``ter:NotAuthorized``,
HTTP 400). Every XML prefix used is declared on the envelope: zeep rejects
replies that use undeclared ones.

:meth:`SimulatedCamera.misbehave` replaces the answer to one operation (or
to ``snapshot``) with whatever a test's handler sends: truncated or odd
XML, a generic fault with HTTP 401, a body that never ends. It is how the
client is tested against cameras that do not follow the book.

``requests`` counts what reached the camera, by operation, plus
``snapshot`` (images served), ``unauthorized`` (refused requests) and
``http`` (every HTTP request): tests and the benchmark read it.

Run cameras from the command line with ``cityvisor sim camera --count 4``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import io
import logging
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import anyio
from aiohttp import web

__all__ = ["ENVELOPE_START", "Preset", "SimulatedCamera", "envelope", "main", "run_cameras"]

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "ter": "http://www.onvif.org/ver10/error",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tns1": "http://www.onvif.org/ver10/topics",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
_DECLARATIONS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())

ENVELOPE_START = f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope {_DECLARATIONS}><s:Body>'
"""Every reply up to its ``<s:Body>``, all prefixes declared (for :meth:`SimulatedCamera.misbehave`)."""


def envelope(body: str) -> str:
    """A whole SOAP 1.2 reply around ``body``, with every prefix of :data:`NS` declared."""
    return f"{ENVELOPE_START}{body}</s:Body></s:Envelope>"


UNAUTHENTICATED = frozenset({"GetSystemDateAndTime"})
"""Operations a camera answers without credentials (the client needs the clock first)."""

TOKEN_WINDOW = 300.0
"""Seconds a UsernameToken's Created may differ from the camera's clock."""

MAX_SUBSCRIPTIONS = 16
MAX_QUEUED_EVENTS = 256
REALM = "cityvisor-sim"

SNAPSHOT_AUTH = {"digest": "MD5", "digest-sha256": "SHA-256", "basic": ""}
"""How the snapshot URI authenticates: Digest's algorithm by name, or Basic."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""What :meth:`SimulatedCamera.misbehave` is given: an aiohttp handler."""

MOTION = "tns1:VideoSource/MotionAlarm"
TAMPER = "tns1:VideoSource/GlobalSceneChange/ImagingService"
DIGITAL_INPUT = "tns1:Device/Trigger/DigitalInput"


@dataclass(frozen=True)
class Preset:
    """A PTZ preset: token, name and the pan/tilt/zoom position it stands for."""

    token: str
    name: str
    pan: float
    tilt: float
    zoom: float


DEFAULT_PRESETS = (
    Preset("1", "Home", 0.0, 0.0, 0.0),
    Preset("2", "Entrance", 0.5, -0.2, 0.3),
    Preset("3", "Street", -0.6, 0.1, 0.8),
)


class SoapFaultError(Exception):
    """A fault to answer: SOAP 1.2 code, ONVIF subcode, reason text, HTTP status."""

    def __init__(self, subcode: str, reason: str, *, code: str = "s:Sender", status: int = 400):
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.status = code, subcode, reason, status


@dataclass
class _Subscription:
    id: str
    expires: float
    queue: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED_EVENTS))
    wake: anyio.Event = field(default_factory=anyio.Event)

    def push(self, message: str) -> None:
        self.queue.append(message)
        self.wake.set()


class SimulatedCamera:
    """One simulated ONVIF camera. ``await start()`` it, ``await stop()`` it (it is then gone).

    ``clock_offset`` skews the camera's clock (seconds): a client that does
    not correct its WS-Security timestamps is then refused. With
    ``uri_credentials`` the stream URI carries ``user:password@`` as some
    cameras' do, so a client can be tested for stripping it.
    """

    def __init__(
        self,
        name: str = "Camera",
        *,
        username: str = "admin",
        password: str = "admin",
        host: str = "127.0.0.1",
        port: int = 0,
        manufacturer: str = "Cityvisor",
        model: str = "SimCam PTZ-2",
        firmware: str = "4.3.1",
        serial: str | None = None,
        presets: Sequence[Preset] = DEFAULT_PRESETS,
        ptz_travel_time: float = 0.5,
        clock_offset: float = 0.0,
        image_size: tuple[int, int] = (320, 180),
        uri_credentials: bool = False,
        snapshot_auth: str = "digest",
        time_zone: str = "UTC",
    ) -> None:
        if snapshot_auth not in SNAPSHOT_AUTH:
            raise ValueError(f"snapshot_auth is one of {', '.join(SNAPSHOT_AUTH)}")
        self.snapshot_auth = snapshot_auth
        self.time_zone = ZoneInfo(time_zone)
        """The zone of the time burned into the pictures (the site's, as a real camera is set)."""
        self.name = name
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.manufacturer = manufacturer
        self.model = model
        self.firmware = firmware
        self.serial = serial or secrets.token_hex(4).upper()
        self.presets = {p.token: p for p in presets}
        self.ptz_travel_time = ptz_travel_time
        self.clock_offset = clock_offset
        self.image_size = image_size
        self.uri_credentials = uri_credentials
        self.requests: Counter[str] = Counter()
        """Requests that reached the camera, by operation (see the module docstring)."""
        self._position = (0.0, 0.0, 0.0)
        self._move: tuple[float, tuple[float, float, float], tuple[float, float, float]] | None = (
            None
        )
        self._properties: dict[tuple[str, str], tuple[str, str, str, str, bool]] = {}
        self.set_motion(False)
        self.set_tamper(False)
        self.set_input("DI_1", False)
        self._subscriptions: OrderedDict[str, _Subscription] = OrderedDict()
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._frame: tuple[int, bytes] | None = None
        self._frame_lock = anyio.Lock()
        self._runner: web.AppRunner | None = None
        self._misbehaviour: dict[str, Handler] = {}

    def misbehave(self, operation: str, handler: Handler | None) -> None:
        """Answer ``operation`` (``"GetPresets"``, ``"snapshot"``...) with ``handler``; None restores.

        The handler gets the aiohttp request and returns the response as
        is: no envelope is added, no credentials are checked.
        """
        if handler is None:
            self._misbehaviour.pop(operation, None)
        else:
            self._misbehaviour[operation] = handler

    # -- lifecycle -----------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port``: where the camera answers."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the camera listens."""
        return self._runner is not None

    async def start(self) -> None:
        """Listen (on the same port as before, after a :meth:`stop`)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/onvif/{service:[a-z_]+}", self._soap)
        app.router.add_post("/onvif/subscription/{id}", self._soap)
        app.router.add_get("/onvif/snapshot", self._snapshot)
        # Long polls must not hold a stop back: a camera that goes away just goes.
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Close the socket and every connection: to its clients the camera is gone."""
        runner, self._runner = self._runner, None
        for subscription in self._subscriptions.values():
            subscription.wake.set()
        self._subscriptions.clear()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatedCamera:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what happens in front of the camera ------------------------------------

    def set_motion(self, active: bool = True) -> None:
        """Motion starts (or stops) in the picture: a ``MotionAlarm`` event."""
        self._set_property(MOTION, "Source", "VideoSource_1", "State", active)

    def set_tamper(self, active: bool = True) -> None:
        """The camera is covered, moved or blinded (or back to normal): a tamper event."""
        self._set_property(TAMPER, "Source", "VideoSource_1", "State", active)

    def set_input(self, token: str, active: bool) -> None:
        """A digital input (a door contact wired to the camera) changes."""
        self._set_property(DIGITAL_INPUT, "InputToken", token, "LogicalState", active)

    def _set_property(
        self, topic: str, source_name: str, source: str, data_name: str, value: bool
    ) -> None:
        key = (topic, source)
        previous = self._properties.get(key)
        self._properties[key] = (topic, source_name, source, data_name, value)
        if previous is not None and previous[4] != value:
            message = self._notification(self._properties[key], "Changed")
            for subscription in self._subscriptions.values():
                subscription.push(message)

    @property
    def position(self) -> tuple[float, float, float]:
        """Where the PTZ head is now: pan, tilt, zoom."""
        if self._move is None:
            return self._position
        started, origin, target = self._move
        travel = self.ptz_travel_time
        done = 1.0 if travel <= 0 else min(1.0, (time.monotonic() - started) / travel)
        if done >= 1.0:
            self._position, self._move = target, None
            return target
        return tuple(o + (t - o) * done for o, t in zip(origin, target, strict=True))  # type: ignore[return-value]

    @property
    def moving(self) -> bool:
        """True while the head travels to a preset."""
        _ = self.position
        return self._move is not None

    def now(self) -> dt.datetime:
        """The camera's clock (UTC, skewed by ``clock_offset``)."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_offset)

    # -- SOAP ----------------------------------------------------------------

    async def _soap(self, request: web.Request) -> web.StreamResponse:
        self.requests["http"] += 1
        try:
            try:
                envelope = ET.fromstring(await request.read())
            except ET.ParseError as error:
                raise SoapFaultError("ter:WellFormed", f"not well-formed XML: {error}") from None
            body = envelope.find(f"{{{NS['s']}}}Body")
            if body is None or len(body) == 0:
                raise SoapFaultError("ter:WellFormed", "no SOAP body")
            operation = body[0]
            name = operation.tag.rpartition("}")[2]
            self.requests[name] += 1
            misbehaviour = self._misbehaviour.get(name)
            if misbehaviour is not None:
                return await misbehaviour(request)  # type: ignore[return-value]
            if name not in UNAUTHENTICATED:
                self._authenticate(envelope)
            handler = getattr(self, "_op_" + _snake(name), None)
            if handler is None:
                raise SoapFaultError(
                    "ter:ActionNotSupported", f"{name} is not supported", code="s:Receiver"
                )
            content = await handler(operation, request)
        except SoapFaultError as fault:
            if fault.subcode == "ter:NotAuthorized":
                self.requests["unauthorized"] += 1
            return self._reply(_fault(fault), status=fault.status)
        return self._reply(content)

    @staticmethod
    def _reply(content: str, status: int = 200) -> web.Response:
        text = envelope(content)
        return web.Response(
            text=text, status=status, content_type="application/soap+xml", charset="utf-8"
        )

    def _authenticate(self, envelope: ET.Element) -> None:
        token = envelope.find(
            f"{{{NS['s']}}}Header/{{{NS['wsse']}}}Security/{{{NS['wsse']}}}UsernameToken"
        )
        if token is None:
            raise SoapFaultError("ter:NotAuthorized", "Sender not Authorized")
        username = token.findtext(f"{{{NS['wsse']}}}Username") or ""
        password = token.find(f"{{{NS['wsse']}}}Password")
        nonce = token.findtext(f"{{{NS['wsse']}}}Nonce") or ""
        created = token.findtext(f"{{{NS['wsu']}}}Created") or ""
        if password is None or username != self.username:
            raise SoapFaultError("ter:NotAuthorized", "Sender not Authorized")
        given = password.text or ""
        if password.get("Type", "").endswith("#PasswordText"):
            ok = secrets.compare_digest(given.encode(), self.password.encode())
        else:
            try:
                raw_nonce = base64.b64decode(nonce, validate=True)
                stamp = dt.datetime.fromisoformat(created)
            except ValueError:
                raise SoapFaultError("ter:NotAuthorized", "Sender not Authorized") from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            if abs((stamp - self.now()).total_seconds()) > TOKEN_WINDOW:
                # What a real camera does with a client whose clock is off.
                raise SoapFaultError("ter:NotAuthorized", "Sender not Authorized: Created is stale")
            expected = base64.b64encode(
                hashlib.sha1(raw_nonce + created.encode() + self.password.encode()).digest()
            )
            ok = secrets.compare_digest(given.encode(), expected)
        if not ok:
            raise SoapFaultError("ter:NotAuthorized", "Sender not Authorized")

    # -- device service --------------------------------------------------------

    async def _op_get_system_date_and_time(self, body: ET.Element, request: web.Request) -> str:
        now = self.now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime>{_date_time(now)}</tt:UTCDateTime>"
            f"<tt:LocalDateTime>{_date_time(now)}</tt:LocalDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    async def _op_get_device_information(self, body: ET.Element, request: web.Request) -> str:
        return (
            "<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{escape(self.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(self.model)}</tds:Model>"
            f"<tds:FirmwareVersion>{escape(self.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(self.serial)}</tds:SerialNumber>"
            "<tds:HardwareId>SIM-1</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    def _services(self) -> list[tuple[str, str, str, int, int]]:
        base = self.url
        return [
            ("device", NS["tds"], f"{base}/onvif/device_service", 2, 60),
            ("media", NS["trt"], f"{base}/onvif/media_service", 2, 60),
            ("ptz", NS["tptz"], f"{base}/onvif/ptz_service", 2, 60),
            ("events", NS["tev"], f"{base}/onvif/events_service", 2, 60),
        ]

    async def _op_get_services(self, body: ET.Element, request: web.Request) -> str:
        services = "".join(
            f"<tds:Service><tds:Namespace>{namespace}</tds:Namespace>"
            f"<tds:XAddr>{address}</tds:XAddr><tds:Version><tt:Major>{major}</tt:Major>"
            f"<tt:Minor>{minor}</tt:Minor></tds:Version></tds:Service>"
            for _, namespace, address, major, minor in self._services()
        )
        return f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>"

    async def _op_get_capabilities(self, body: ET.Element, request: web.Request) -> str:
        addresses = {name: address for name, _, address, _, _ in self._services()}
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{addresses['device']}</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{addresses['events']}</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false"
            "</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>"
            f"<tt:Media><tt:XAddr>{addresses['media']}</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
            "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            "</tt:StreamingCapabilities></tt:Media>"
            f"<tt:PTZ><tt:XAddr>{addresses['ptz']}</tt:XAddr></tt:PTZ>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    # -- media service ---------------------------------------------------------

    PROFILES = (("Profile_1", "mainStream", 1920, 1080), ("Profile_2", "subStream", 640, 360))

    async def _op_get_profiles(self, body: ET.Element, request: web.Request) -> str:
        profiles = "".join(
            f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>'
            '<tt:VideoSourceConfiguration token="VideoSourceConfig_1">'
            "<tt:Name>VideoSourceConfig</tt:Name><tt:UseCount>2</tt:UseCount>"
            "<tt:SourceToken>VideoSource_1</tt:SourceToken>"
            '<tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>'
            f'<tt:VideoEncoderConfiguration token="VideoEncoder_{token}">'
            f"<tt:Name>{name}</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height>"
            "</tt:Resolution><tt:Quality>4</tt:Quality>"
            "<tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>"
            "</tt:RateControl><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
            "</tt:VideoEncoderConfiguration>"
            '<tt:PTZConfiguration token="PTZConfig_1"><tt:Name>PTZ</tt:Name>'
            "<tt:UseCount>2</tt:UseCount><tt:NodeToken>PTZNode_1</tt:NodeToken>"
            "</tt:PTZConfiguration></trt:Profiles>"
            for token, name, width, height in self.PROFILES
        )
        return f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"

    def _profile(self, body: ET.Element) -> str:
        token = _text(body, "ProfileToken")
        if token not in {p[0] for p in self.PROFILES}:
            raise SoapFaultError("ter:InvalidArgVal", f"no profile {token!r}")
        return token

    @staticmethod
    def _media_uri(uri: str) -> str:
        return (
            f"<trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
        )

    async def _op_get_stream_uri(self, body: ET.Element, request: web.Request) -> str:
        token = self._profile(body)
        userinfo = f"{self.username}:{self.password}@" if self.uri_credentials else ""
        uri = f"rtsp://{userinfo}{self.host}:554/Streaming/{token}"
        return f"<trt:GetStreamUriResponse>{self._media_uri(uri)}</trt:GetStreamUriResponse>"

    async def _op_get_snapshot_uri(self, body: ET.Element, request: web.Request) -> str:
        token = self._profile(body)
        uri = f"{self.url}/onvif/snapshot?profile={token}"
        return f"<trt:GetSnapshotUriResponse>{self._media_uri(uri)}</trt:GetSnapshotUriResponse>"

    # -- PTZ service -------------------------------------------------------------

    @staticmethod
    def _ptz_vector(pan: float, tilt: float, zoom: float) -> str:
        return (
            f'<tt:PanTilt x="{pan:.4f}" y="{tilt:.4f}" space="http://www.onvif.org/ver10/tptz/'
            'PanTiltSpaces/PositionGenericSpace"/>'
            f'<tt:Zoom x="{zoom:.4f}" space="http://www.onvif.org/ver10/tptz/'
            'ZoomSpaces/PositionGenericSpace"/>'
        )

    async def _op_get_presets(self, body: ET.Element, request: web.Request) -> str:
        self._profile(body)
        presets = "".join(
            f"<tptz:Preset token={quoteattr(p.token)}><tt:Name>{escape(p.name)}</tt:Name>"
            f"<tt:PTZPosition>{self._ptz_vector(p.pan, p.tilt, p.zoom)}</tt:PTZPosition>"
            "</tptz:Preset>"
            for p in self.presets.values()
        )
        return f"<tptz:GetPresetsResponse>{presets}</tptz:GetPresetsResponse>"

    async def _op_goto_preset(self, body: ET.Element, request: web.Request) -> str:
        self._profile(body)
        preset = self.presets.get(_text(body, "PresetToken"))
        if preset is None:
            raise SoapFaultError("ter:InvalidArgVal", "ter:NoToken: no such preset")
        self._move = (time.monotonic(), self.position, (preset.pan, preset.tilt, preset.zoom))
        return "<tptz:GotoPresetResponse/>"

    async def _op_get_status(self, body: ET.Element, request: web.Request) -> str:
        self._profile(body)
        pan, tilt, zoom = self.position
        state = "MOVING" if self.moving else "IDLE"
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus>"
            f"<tt:Position>{self._ptz_vector(pan, tilt, zoom)}</tt:Position>"
            f"<tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>{state}</tt:Zoom>"
            f"</tt:MoveStatus><tt:UtcTime>{_iso(self.now())}</tt:UtcTime>"
            "</tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    # -- events service ------------------------------------------------------------

    def _notification(self, prop: tuple[str, str, str, str, bool], operation: str) -> str:
        topic, source_name, source, data_name, value = prop
        return (
            "<wsnt:NotificationMessage>"
            '<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
            f"{topic}</wsnt:Topic><wsnt:Message>"
            f'<tt:Message UtcTime="{_iso(self.now())}" PropertyOperation="{operation}">'
            f'<tt:Source><tt:SimpleItem Name="{source_name}" Value="{escape(source)}"/></tt:Source>'
            f'<tt:Data><tt:SimpleItem Name="{data_name}" Value="{str(value).lower()}"/></tt:Data>'
            "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
        )

    def _initialize(self, subscription: _Subscription) -> None:
        for prop in self._properties.values():
            subscription.push(self._notification(prop, "Initialized"))

    def _termination(self, body: ET.Element, name: str, default: float = 60.0) -> float:
        text = _text(body, name)
        if not text:
            return default
        try:
            if text.startswith("P"):
                return max(1.0, _duration(text))
            absolute = dt.datetime.fromisoformat(text)
            return max(1.0, (absolute - self.now()).total_seconds())
        except ValueError:
            raise SoapFaultError("ter:InvalidArgVal", f"bad time {text!r}") from None

    def _times(self, subscription: _Subscription, prefix: str) -> str:
        now = self.now()
        left = subscription.expires - time.monotonic()
        return (
            f"<{prefix}:CurrentTime>{_iso(now)}</{prefix}:CurrentTime>"
            f"<{prefix}:TerminationTime>{_iso(now + dt.timedelta(seconds=left))}"
            f"</{prefix}:TerminationTime>"
        )

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._subscriptions.items() if s.expires <= now]:
            del self._subscriptions[key]

    async def _op_create_pull_point_subscription(
        self, body: ET.Element, request: web.Request
    ) -> str:
        self._expire()
        while len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            self._subscriptions.popitem(last=False)  # bounded, as a camera is: oldest goes
        seconds = self._termination(body, "InitialTerminationTime")
        subscription = _Subscription(secrets.token_hex(8), time.monotonic() + seconds)
        self._subscriptions[subscription.id] = subscription
        self._initialize(subscription)
        address = f"{self.url}/onvif/subscription/{subscription.id}"
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{address}</wsa:Address></tev:SubscriptionReference>"
            f"{self._times(subscription, 'wsnt')}</tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription(self, request: web.Request) -> _Subscription:
        self._expire()
        subscription = self._subscriptions.get(request.match_info.get("id", ""))
        if subscription is None:
            raise SoapFaultError("ter:InvalidArgVal", "unknown or expired subscription")
        return subscription

    async def _op_pull_messages(self, body: ET.Element, request: web.Request) -> str:
        subscription = self._subscription(request)
        try:
            timeout = min(_duration(_text(body, "Timeout") or "PT1S"), 60.0)
            limit = max(1, int(_text(body, "MessageLimit") or "100"))
        except ValueError:
            raise SoapFaultError("ter:InvalidArgVal", "bad Timeout or MessageLimit") from None
        if not subscription.queue:
            with anyio.move_on_after(timeout):
                await subscription.wake.wait()
        if self._subscriptions.get(subscription.id) is not subscription:
            raise SoapFaultError("ter:InvalidArgVal", "unknown or expired subscription")
        messages = [
            subscription.queue.popleft() for _ in range(min(limit, len(subscription.queue)))
        ]
        if not subscription.queue:
            subscription.wake = anyio.Event()
        return (
            f"<tev:PullMessagesResponse>{self._times(subscription, 'tev')}"
            f"{''.join(messages)}</tev:PullMessagesResponse>"
        )

    async def _op_renew(self, body: ET.Element, request: web.Request) -> str:
        subscription = self._subscription(request)
        subscription.expires = time.monotonic() + self._termination(body, "TerminationTime")
        now = self.now()
        left = subscription.expires - time.monotonic()
        return (
            f"<wsnt:RenewResponse><wsnt:TerminationTime>"
            f"{_iso(now + dt.timedelta(seconds=left))}</wsnt:TerminationTime>"
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime></wsnt:RenewResponse>"
        )

    async def _op_unsubscribe(self, body: ET.Element, request: web.Request) -> str:
        subscription = self._subscription(request)
        del self._subscriptions[subscription.id]
        subscription.wake.set()
        return "<wsnt:UnsubscribeResponse/>"

    async def _op_set_synchronization_point(self, body: ET.Element, request: web.Request) -> str:
        self._initialize(self._subscription(request))
        return "<tev:SetSynchronizationPointResponse/>"

    # -- snapshot (HTTP Digest) ----------------------------------------------------

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        self.requests["http"] += 1
        misbehaviour = self._misbehaviour.get("snapshot")
        if misbehaviour is not None:
            return await misbehaviour(request)
        authorised = self._basic_ok(request) if self.snapshot_auth == "basic" else None
        if authorised is None:
            authorised = self._digest_ok(request)
        if not authorised:
            self.requests["snapshot_challenge"] += 1
            if self.snapshot_auth == "basic":
                challenge = f'Basic realm="{REALM}"'
            else:
                nonce = secrets.token_hex(16)
                self._nonces[nonce] = time.monotonic()
                while len(self._nonces) > 256:
                    self._nonces.popitem(last=False)
                algorithm = SNAPSHOT_AUTH[self.snapshot_auth]
                challenge = (
                    f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm={algorithm}'
                )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if request.query.get("profile") not in {p[0] for p in self.PROFILES}:
            return web.Response(status=404, text="no such profile")
        self.requests["snapshot"] += 1
        return web.Response(body=await self.frame(), content_type="image/jpeg")

    def _basic_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        expected = f"{self.username}:{self.password}".encode()
        return secrets.compare_digest(given, expected)

    def _digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest ") or self.snapshot_auth == "basic":
            return False
        algorithm = SNAPSHOT_AUTH[self.snapshot_auth]
        fields = {k: v1 or v2 for k, v1, v2 in _DIGEST_FIELD.findall(header[7:])}
        if fields.get("algorithm", "MD5").upper() != algorithm:
            return False  # a client that ignored the algorithm asked for
        issued = self._nonces.get(fields.get("nonce", ""))
        if (
            issued is None
            or time.monotonic() - issued > 300
            or fields.get("username") != self.username
        ):
            return False
        digest = _sha256 if algorithm == "SHA-256" else _md5
        ha1 = digest(f"{self.username}:{REALM}:{self.password}")
        ha2 = digest(f"{request.method}:{fields.get('uri', '')}")
        if fields.get("qop") == "auth":
            expected = digest(
                f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
            )
        else:
            expected = digest(f"{ha1}:{fields['nonce']}:{ha2}")
        return secrets.compare_digest(expected, fields.get("response", ""))

    async def frame(self) -> bytes:
        """The current JPEG: a new one each second, as a camera's encoder makes them."""
        now = self.now()
        second = int(now.timestamp())
        async with self._frame_lock:
            if self._frame is None or self._frame[0] != second:
                image = await anyio.to_thread.run_sync(
                    _render, self.name, now.astimezone(self.time_zone), self.image_size
                )
                self._frame = (second, image)
            return self._frame[1]


# --------------------------------------------------------------------------- helpers

_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fault(fault: SoapFaultError) -> str:
    return (
        f"<s:Fault><s:Code><s:Value>{fault.code}</s:Value><s:Subcode>"
        f"<s:Value>{fault.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{escape(fault.reason)}</s:Text></s:Reason></s:Fault>'
    )


def _text(element: ET.Element, name: str) -> str:
    """The text of the first descendant named ``name``, whatever its namespace."""
    for child in element.iter():
        if child.tag.rpartition("}")[2] == name:
            return (child.text or "").strip()
    return ""


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date_time(moment: dt.datetime) -> str:
    return (
        f"<tt:Time><tt:Hour>{moment.hour}</tt:Hour><tt:Minute>{moment.minute}</tt:Minute>"
        f"<tt:Second>{moment.second}</tt:Second></tt:Time>"
        f"<tt:Date><tt:Year>{moment.year}</tt:Year><tt:Month>{moment.month}</tt:Month>"
        f"<tt:Day>{moment.day}</tt:Day></tt:Date>"
    )


_DURATION = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def _duration(text: str) -> float:
    """Seconds in an xs:duration such as ``PT1M30S`` (days and smaller units)."""
    match = _DURATION.match(text.strip())
    if match is None or text.strip() in ("P", "PT"):
        raise ValueError(f"not a duration: {text!r}")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


FONTS = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""A font with French accents (Debian's fonts-dejavu-core; FreeType finds it by name too)."""


@functools.cache
def _font(size: int) -> Any:
    """The pictures' font at ``size`` px: DejaVu Sans, else Pillow's own (accents may go)."""
    from PIL import ImageFont

    for name in FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def caption(moment: dt.datetime) -> str:
    """The time burned into a picture: ``2026-12-02 15:16:00 CET`` (``moment``'s own zone)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def _render(name: str, moment: dt.datetime, size: tuple[int, int]) -> bytes:
    """A JPEG showing the camera's name and the time in ``moment``'s zone (Pillow; in a thread)."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, (40, 60, 80))
    draw = ImageDraw.Draw(image)
    # A street-like scene so the picture is not a flat colour: road, kerb, a lamp post.
    draw.rectangle((0, height * 2 // 3, width, height), fill=(70, 70, 70))
    draw.line((0, height * 2 // 3, width, height * 2 // 3), fill=(200, 200, 200), width=2)
    draw.line(
        (width * 3 // 4, height // 4, width * 3 // 4, height * 2 // 3), fill=(30, 30, 30), width=3
    )
    font = _font(max(10, height // 12))
    draw.text((8, 6), name, fill=(255, 255, 255), font=font)
    draw.text((8, height - height // 8 - 6), caption(moment), fill=(255, 255, 0), font=font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


# --------------------------------------------------------------------------- many cameras


async def run_cameras(
    cameras: Sequence[SimulatedCamera], *, task_status: Any = anyio.TASK_STATUS_IGNORED
) -> None:
    """Start every camera, report ready, and serve until cancelled (then stop them all)."""
    try:
        for camera in cameras:
            await camera.start()
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for camera in cameras:
                await camera.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``cityvisor sim camera``: serve ``--count`` cameras until interrupted."""
    parser = argparse.ArgumentParser(
        prog="cityvisor sim camera", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=1, help="number of cameras (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port of the first camera; the next ones follow (0: any)",
    )
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument(
        "--time-zone",
        default="UTC",
        help="zone of the time written on the pictures (default UTC; e.g. Europe/Paris)",
    )
    parser.add_argument(
        "--motion-every",
        type=float,
        default=0.0,
        help="seconds between simulated motion bursts (0: never)",
    )
    args = parser.parse_args(argv)
    cameras = [
        SimulatedCamera(
            f"Camera {i + 1}",
            username=args.username,
            password=args.password,
            host=args.host,
            port=args.port + i if args.port else 0,
            time_zone=args.time_zone,
        )
        for i in range(args.count)
    ]

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(run_cameras, cameras)
            for camera in cameras:
                log.info(
                    "%s: ONVIF device service at %s/onvif/device_service", camera.name, camera.url
                )
            while args.motion_every > 0:
                await anyio.sleep(args.motion_every)
                for camera in cameras:
                    camera.set_motion(True)
                await anyio.sleep(2.0)
                for camera in cameras:
                    camera.set_motion(False)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, backend="asyncio")
    return 0
