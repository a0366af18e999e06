"""The ONVIF client: one per camera, with its services, snapshots, PTZ and a pull-point event subscription."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self, TypeVar

import aiohttp
import anyio
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import RunVar

from ..http import ChallengeAuth, InsecureChallengeError, ResponseTooLargeError, read_body
from .errors import CameraAuthError, CameraError, CameraFaultError, CameraReplyError
from .limits import AUTH_RETRY_AFTER, CONCURRENT_CONNECTS, SNAPSHOT_LIMIT
from .parsing import (
    _duration,
    _event,
    _lifetime,
    _presets,
    _profiles,
    _ptz_status,
    _uri,
    _without_userinfo,
)
from .transport import _HTTP_401, _onvif
from .values import CameraEvent, DeviceInformation, MediaProfile, PtzPreset, PtzStatus

log = logging.getLogger(__name__)


T = TypeVar("T")


_connects: RunVar[anyio.CapacityLimiter] = RunVar("cityvisor_onvif_connects")


_PULLPOINT = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"


_RENEW_AT = 0.8
"""Renew a subscription when this fraction of its lifetime has passed."""


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
