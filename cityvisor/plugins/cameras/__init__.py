"""CCTV cameras over ONVIF: identity, streams, PTZ presets, motion and tamper, snapshots.

The device type below is the datasheet. Optional functions (PTZ presets,
PTZ status, events) fail alone: a camera that answers one of them badly
stays online, that function's points go bad (``device_failure``), the
``unavailable`` point says which function and why, and it is tried again
every ``capability_retry`` seconds. Beyond it the plugin gives alarms
their evidence (the snapshot of the moment an alarm of a watched device
rises, :mod:`.evidence`) and the browser its snapshots, fetched server-side
and shared for a second (:mod:`.snapshots`). See docs/families/cameras.md.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pydantic
from anyio.abc import TaskStatus

from cityvisor import (
    DeviceConfig,
    DeviceType,
    alarm,
    boolean,
    command,
    hookimpl,
    point,
    reaches,
    string,
)
from cityvisor.core.points import Quality
from cityvisor.hal.onvif import (
    SNAPSHOT_LIMIT,
    CameraAnswerError,
    CameraError,
    CameraEvent,
    OnvifClient,
    PtzPreset,
)

from .evidence import KEY, CameraServices


class CameraConfig(DeviceConfig):
    """How to reach an ONVIF camera."""

    host: str
    """The camera's address (name or IP) on the video network."""
    port: int = pydantic.Field(80, ge=1, le=65535)
    """HTTP port of the camera's ONVIF device service."""
    username: str
    """An ONVIF user of the camera; an operator-level account is enough (no admin rights)."""
    password: pydantic.SecretStr
    """Use ``${CAMERA_PASSWORD}``: the value is never logged, returned or shown."""
    profile: str | None = None
    """Media profile token for stream, snapshot and PTZ (default: the camera's first)."""
    watch: bool = False
    """Closed-building watch at start-up: motion raises an alarm (``set_watch`` changes it)."""
    timeout: float = pydantic.Field(10.0, gt=0)
    """Seconds allowed for each request to the camera."""
    evidence_days: float = pydantic.Field(30.0, gt=0, le=30)
    """Days alarm snapshots are kept (French law allows one month of CCTV images at most)."""
    snapshot_max_bytes: int = pydantic.Field(SNAPSHOT_LIMIT, ge=64 * 1024, le=SNAPSHOT_LIMIT)
    """Largest snapshot accepted (bytes, 4 MiB at most: the snapshot cache's limit per
    picture); a longer answer is cut off there and refused."""
    allow_basic_over_http: bool = False
    """Answer a snapshot URI's HTTP Basic challenge over plain HTTP (the password crosses
    the network in clear). Off: such a camera's snapshots fail with a config error."""
    capability_retry: float = pydantic.Field(60.0, gt=0)
    """Seconds before an optional function that answered badly (PTZ, events) is tried again."""


class Camera(DeviceType):
    """An ONVIF camera (Profile S): identity, main stream, PTZ presets, motion and tamper events."""

    family = "cameras"
    type_name = "cameras.camera"
    label = {"fr": "Caméra", "en": "Camera"}
    Config = CameraConfig

    manufacturer = point(str, doc={"fr": "Fabricant", "en": "Manufacturer"})
    model = point(str, doc={"fr": "Modèle", "en": "Model"})
    firmware = point(str, doc={"fr": "Micrologiciel", "en": "Firmware"})
    profiles = point(str, doc={"fr": "Profils vidéo", "en": "Media profiles"})
    stream_uri = point(str, doc={"fr": "Flux principal (RTSP)", "en": "Main stream (RTSP)"})
    presets = point(str, doc={"fr": "Prépositions", "en": "PTZ presets"})
    preset = point(str, doc={"fr": "Préposition atteinte", "en": "Preset reached ('' elsewhere)"})
    motion = point(bool, doc={"fr": "Mouvement détecté", "en": "Motion detected"})
    tamper = point(bool, doc={"fr": "Sabotage", "en": "Tampering"})
    watch = point(bool, doc={"fr": "Veille bâtiment fermé", "en": "Closed-building watch"})
    watched_motion = point(bool, doc={"fr": "Mouvement sous veille", "en": "Motion while watched"})
    unavailable = point(
        str,
        doc={
            "fr": "Fonctions indisponibles (et pourquoi)",
            "en": "Functions unavailable (and why)",
        },
    )

    tampering = alarm(
        "tamper",
        equals=True,
        priority="high",
        message={"fr": "Caméra sabotée ou masquée", "en": "Camera tampered with"},
        procedure="CCTV-02",
    )
    motion_while_watched = alarm(
        "watched_motion",
        equals=True,
        priority="high",
        off_delay=10,  # motion events flicker: one intrusion, one alarm
        message={"fr": "Mouvement dans un bâtiment fermé", "en": "Motion in a closed building"},
        procedure="CCTV-03",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: OnvifClient | None = None
        self._profile = ""
        self._presets: dict[str, PtzPreset] = {}
        self._watch: bool = self.config.watch  # type: ignore[attr-defined]
        self._motion = False
        self._moved = anyio.Event()
        self._unavailable: dict[str, str] = {}

    @command(
        preset=string(max_length=64, doc={"fr": "Nom de la préposition", "en": "Preset name"}),
        feedback=reaches("preset", param="preset", within=30),
        label={"fr": "Aller à la préposition", "en": "Go to preset"},
        doc={
            "fr": "Tourner la caméra vers une préposition ; fait quand elle y est.",
            "en": "Turn the camera to a stored preset; done when it stands there.",
        },
    )
    async def goto_preset(self, preset: str) -> None:
        """Turn the camera to a stored preset; done when it stands there."""
        if "ptz_presets" in self._unavailable:
            raise CameraError(
                f"the presets are unavailable: {self._unavailable['ptz_presets']}",
                reason="device_failure",
            )
        target = self._presets.get(preset)
        if target is None:
            raise ValueError(f"no preset {preset!r} (presets: {', '.join(self._presets)})")
        await self._online().goto_preset(self._profile, target.token)
        self.publish({"preset": ""})
        self._moved.set()

    @command(
        label={"fr": "Prendre un instantané", "en": "Take a snapshot"},
        doc={
            "fr": "Enregistrer l'image du moment (parmi les images de la caméra).",
            "en": "Store the current picture (listed with the camera's evidence).",
        },
    )
    async def take_snapshot(self) -> None:
        """Store the current picture (listed with the camera's evidence)."""
        services = self.resources.get(KEY, _not_running)  # the hub's, made at its start-up
        await services.evidence.capture(self.id, reason="command")

    @command(
        on=boolean(doc={"fr": "Veille active", "en": "Watch on"}),
        feedback=reaches("watch", param="on", within=2),
        label={"fr": "Veille bâtiment fermé", "en": "Closed-building watch"},
        doc={
            "fr": "Activer ou couper la veille bâtiment fermé (groupée par zone pour un confinement).",
            "en": "Turn the closed-building watch on or off (group it by zone for a lockdown).",
        },
    )
    async def set_watch(self, on: bool) -> None:
        """Turn the closed-building watch on or off (group it by zone for a lockdown)."""
        self._watch = on
        self.publish({"watch": on, "watched_motion": on and self._motion})

    async def snapshot(self) -> bytes:
        """The camera's current JPEG (through the driver's connection)."""
        return await self._online().snapshot(self._profile)

    def _online(self) -> OnvifClient:
        if self._client is None:
            raise CameraError(f"camera {self.id} is offline")
        return self._client

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, publish identity and profiles, then follow events and the PTZ head."""
        config: CameraConfig = self.config  # type: ignore[assignment]
        password = config.password.get_secret_value()
        async with OnvifClient(
            config.host,
            config.port,
            config.username,
            password,
            timeout=config.timeout,
            snapshot_limit=config.snapshot_max_bytes,
            allow_basic_over_http=config.allow_basic_over_http,
        ) as camera:
            info = await camera.device_information()
            profiles = await camera.profiles()
            if not profiles:
                raise CameraError("the camera has no media profile", reason="device_failure")
            profile = next((p for p in profiles if p.token == config.profile), None)
            if profile is None and config.profile is not None:
                raise CameraError(f"no media profile {config.profile!r}", reason="config_error")
            profile = profile or profiles[0]
            self._profile = profile.token
            ptz = profile.ptz and camera.supports("ptz")
            self._presets = {}
            self._unavailable = {}
            self.publish(
                {
                    "manufacturer": info.manufacturer,
                    "model": info.model,
                    "firmware": info.firmware,
                    "profiles": ", ".join(
                        f"{p.name} {p.width}x{p.height} {p.encoding}" for p in profiles
                    ),
                    "stream_uri": await camera.stream_uri(profile.token),
                    "presets": "",
                    "motion": False,
                    "tamper": False,
                    "watch": self._watch,
                    "watched_motion": False,
                    "unavailable": "",
                }
            )
            if ptz:
                await self._load_presets(camera)
            self._client = camera
            try:
                async with anyio.create_task_group() as tg:
                    if ptz:
                        tg.start_soon(self._follow_head, camera)
                        tg.start_soon(self._retry_presets, camera)
                    await self._follow_events(camera, task_status)
            finally:
                self._client = None

    # -- optional functions: each fails alone ------------------------------------

    def _degrade(self, function: str, error: CameraAnswerError, points: tuple[str, ...]) -> None:
        """One function answered badly: its points go bad, ``unavailable`` says why."""
        if self._unavailable.get(function) != str(error):
            self.log.warning("camera %s: %s unavailable (%s)", self.id, function, error)
        self._unavailable[function] = str(error)
        self.mark(Quality.bad("device_failure"), points)
        self._publish_unavailable()

    def _restore(self, function: str) -> None:
        if self._unavailable.pop(function, None) is not None:
            self.log.info("camera %s: %s available again", self.id, function)
            self._publish_unavailable()

    def _publish_unavailable(self) -> None:
        text = "; ".join(f"{name}: {why}" for name, why in sorted(self._unavailable.items()))
        self.publish({"unavailable": text})

    async def _load_presets(self, camera: OnvifClient) -> None:
        try:
            presets = await camera.presets(self._profile)
        except CameraAnswerError as error:
            self._degrade("ptz_presets", error, ("presets", "preset"))
            return
        self._presets = {p.name: p for p in presets}
        self.publish({"presets": ", ".join(self._presets)})
        self._restore("ptz_presets")
        self._moved.set()  # read where the head stands now, against the presets just read

    async def _retry_presets(self, camera: OnvifClient) -> None:
        retry: float = self.config.capability_retry  # type: ignore[attr-defined]
        while True:
            await anyio.sleep(retry)
            if "ptz_presets" in self._unavailable:
                await self._load_presets(camera)

    async def _follow_events(self, camera: OnvifClient, task_status: TaskStatus[None]) -> None:
        """Follow the camera's events; a subscription that answers badly is retried later."""
        retry: float = self.config.capability_retry  # type: ignore[attr-defined]
        started = False
        while True:
            if camera.supports("events"):
                try:
                    async with camera.events() as events:
                        self._restore("events")
                        if not started:
                            task_status.started()
                            started = True
                        async for event in events:
                            self._on_event(event)
                except Exception as exc:
                    error = _answer_error(exc)
                    if error is None:
                        raise  # the camera itself failed: the supervisor restarts the driver
                    self._degrade("events", error, ("motion", "tamper", "watched_motion"))
            if not started:
                task_status.started()
                started = True
            # Nothing to long-poll (or not now): ask now and then, to notice the camera leaving.
            with anyio.move_on_after(retry if camera.supports("events") else math.inf):
                while True:
                    await anyio.sleep(min(15.0, retry))
                    await camera.device_information()
                    self.answered()

    def _on_event(self, event: CameraEvent) -> None:
        if event.kind == "motion":
            self._motion = event.active
            self.publish({"motion": event.active, "watched_motion": event.active and self._watch})
        elif event.kind == "tamper":
            self.publish({"tamper": event.active})

    async def _follow_head(self, camera: OnvifClient) -> None:
        """Publish the preset the head stands at: quickly after an order, slowly otherwise."""
        while True:
            with anyio.move_on_after(30):  # someone may move it by hand or by joystick
                await self._moved.wait()
            self._moved = anyio.Event()
            for _ in range(120):  # at most 30 s of travel
                try:
                    status = await camera.ptz_status(self._profile)
                except CameraAnswerError as error:
                    self._degrade("ptz_status", error, ("preset",))
                    await anyio.sleep(self.config.capability_retry)  # type: ignore[attr-defined]
                    self._moved.set()  # then try again
                    break
                self._restore("ptz_status")
                self.answered()  # the head is followed every 30 s: the camera answers
                if "ptz_presets" in self._unavailable:
                    break  # where the head stands means nothing without the presets
                at = next((p.name for p in self._presets.values() if p.matches(status)), "")
                self.publish({"preset": at})
                if not status.moving:
                    break
                await anyio.sleep(0.25)


def _answer_error(error: BaseException) -> CameraAnswerError | None:
    """The :class:`CameraAnswerError` that ``error`` is, or is alone in a group of; else None."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error if isinstance(error, CameraAnswerError) else None


def _not_running() -> CameraServices:
    raise CameraError("the cameras service is not running", reason="not_connected")


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The cameras plugin's device type."""
    return [Camera]


@hookimpl
def cityvisor_startup(hub: Any) -> Any:
    """The service that stores alarm snapshots (evidence), if the city has cameras."""
    if not any(device.family == "cameras" for device in hub.devices.values()):
        return None
    return CameraServices.of(hub).evidence.run


@hookimpl
def cityvisor_alarm_transition(alarm: Any, transition: Any, hub: Any) -> None:
    """A raised alarm asks for the snapshots of the cameras that watch its device (no I/O)."""
    CameraServices.of(hub).evidence.on_transition(alarm, transition)


@hookimpl
def cityvisor_web_routes(hub: Any) -> list[Any]:
    """``GET /api/v1/cameras/{id}/snapshot`` and the evidence routes."""
    from .routes import routes

    return routes(CameraServices.of(hub))
