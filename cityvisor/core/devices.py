"""Devices: the device-type contract plugins implement, and the supervisor that runs them.

A plugin registers *device types*. A device type is a class that declares,
as a datasheet would, its config schema, its points, its commands and its
default alarms, and implements ``run()``: the long-running conversation with
the equipment, through the HAL, that publishes point values. The
:class:`Supervisor` runs one driver task per configured device, restarts it
with capped exponential backoff when it fails, and marks its points bad the
moment it does, so no other device ever notices.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import anyio
import pydantic
from anyio.abc import TaskStatus

from .declarations import (
    COMMUNICATION_ALARM,
    AlarmSpec,
    CommandSpec,
    _PointDeclaration,
    alarm,
    point,
)
from .points import (
    Point,
    PointDB,
    PointSpec,
    Quality,
    now_ms,
)

__all__ = [
    "DeviceConfig",
    "DeviceError",
    "DeviceInfo",
    "DeviceType",
    "Resources",
    "Supervisor",
    "point",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMUNICATION_POINT = "online"


class DeviceConfig(pydantic.BaseModel):
    """Base of every device type's config schema (a pydantic model).

    Unknown keys are refused so that a typo in the deployment file is an
    error that names the key, not a silently ignored setting.
    """

    # Attribute docstrings become field descriptions: `cityvisor plugins` and the
    # config reference show them to whoever writes the deployment file.
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DeviceError(Exception):
    """A driver's way to say why the equipment cannot be used.

    ``reason`` becomes the quality reason of the device's points
    (``comm_failure``, ``config_error``, ``device_failure``...). With
    ``retry_after`` the supervisor waits that long before trying again,
    instead of backing off from its minimum: a wrong password must not turn
    into a retry storm.
    """

    def __init__(
        self, message: str, *, reason: str = "comm_failure", retry_after: float | None = None
    ):
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class Resources:
    """Objects shared by the devices of one hub: HAL connection pools, trap receivers.

    A driver asks for a resource by key with a factory; the first caller
    creates it, every later caller gets the same object, and the hub closes
    them all (``close()``, awaited if it is a coroutine) when it stops. So
    two cabinets behind one Modbus gateway share its pool without a global,
    and every test gets fresh ones::

        pool = self.resources.get("modbus", ModbusPool)
    """

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], T]) -> T:
        """The resource named ``key``, created by ``factory()`` the first time."""
        try:
            return self._objects[key]  # type: ignore[no-any-return]
        except KeyError:
            resource = self._objects[key] = factory()
            return resource

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    async def aclose(self) -> None:
        """Close every resource, newest first; one failing to close does not stop the others."""
        while self._objects:
            key, resource = self._objects.popitem()
            close = getattr(resource, "aclose", None) or getattr(resource, "close", None)
            if close is None:
                continue
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("closing shared resource %s failed", key)


@dataclass(frozen=True)
class DeviceInfo:
    """A configured device's identity: who it is, where it is, what it is tagged with."""

    id: str
    type: str
    zone: str
    name: str = ""
    tags: frozenset[str] = frozenset()
    location: tuple[float, float] | None = None
    watched_by: tuple[str, ...] = ()
    """Ids of the cameras that watch this device (evidence for its alarms)."""
    require_approval: frozenset[str] = frozenset()
    """Commands that need a second person's approval on this device, beyond the type's own."""


_MEMBER = re.compile(r"^[A-Za-z0-9_.-]+$")


class DeviceType:
    """Base class of every device type. Subclass it, declare, implement ``run``.

    Class attributes to set:

    - ``family``: the equipment family (``"lighting"``); part of point ids.
    - ``type_name``: the name deployments use (``"lighting.cabinet"``);
      defaults to ``family + "." + the class name in snake_case``.
    - ``Config``: a :class:`DeviceConfig` subclass, the device's config schema.
    - points with :func:`point`, alarms with :func:`cityvisor.alarm`,
      commands with :func:`cityvisor.command` on async methods.
    - ``pages``: screens of the plugin's own about one device, as
      ``{url: {"fr": label, "en": label}}`` where ``{id}`` in the url stands for
      the device's id (``{"/plugins/signals/ring?device={id}": {...}}``); the
      equipment screen links them. The plugin serves them through
      ``cityvisor_web_routes``.

    At run time one instance exists per configured device; ``run`` is its
    driver, started and restarted by the supervisor.
    """

    family: ClassVar[str] = ""
    type_name: ClassVar[str] = ""
    label: ClassVar[Mapping[str, str]] = {}
    pages: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    Config: ClassVar[type[DeviceConfig]] = DeviceConfig

    point_specs: ClassVar[dict[str, PointSpec]]
    alarm_specs: ClassVar[dict[str, AlarmSpec]]
    command_specs: ClassVar[dict[str, CommandSpec]]

    online = point(bool, history="default", doc={"fr": "Communication", "en": "Communication"})
    communication_lost = alarm(
        "online",
        equals=False,
        priority="high",
        message={"fr": "Perte de communication", "en": "Communication lost"},
        procedure="COMM-01",
        name=COMMUNICATION_ALARM,
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        points: dict[str, PointSpec] = {}
        alarms: dict[str, AlarmSpec] = {}
        commands: dict[str, CommandSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, _PointDeclaration):
                    assert value.spec is not None
                    points[attr] = value.spec
                elif isinstance(value, AlarmSpec):
                    spec = value if value.name else _renamed(value, attr)
                    alarms[spec.name] = spec
                elif callable(value) and hasattr(value, "__cityvisor_command__"):
                    command_spec: CommandSpec = value.__cityvisor_command__
                    commands[command_spec.name] = command_spec
        if COMMUNICATION_ALARM in alarms:
            alarms[COMMUNICATION_ALARM] = _unsuppressible(alarms[COMMUNICATION_ALARM])
        for name, spec in alarms.items():
            if spec.point not in points:
                raise TypeError(
                    f"{cls.__name__}: alarm {name!r} is on unknown point {spec.point!r}"
                )
        for name, command_spec in commands.items():
            for lock in command_spec.interlocks:
                if lock.point not in points:
                    raise TypeError(
                        f"{cls.__name__}: command {name!r} interlock is on unknown point {lock.point!r}"
                    )
            if command_spec.feedback is not None and command_spec.feedback.point not in points:
                raise TypeError(
                    f"{cls.__name__}: command {name!r} feedback is on unknown point "
                    f"{command_spec.feedback.point!r}"
                )
        cls.point_specs = points
        cls.alarm_specs = alarms
        cls.command_specs = commands
        if cls.family and not cls.__dict__.get("type_name"):
            cls.type_name = f"{cls.family}.{_snake(cls.__name__)}"

    # -- instance ----------------------------------------------------------

    def __init__(
        self,
        info: DeviceInfo,
        config: DeviceConfig,
        points: PointDB,
        resources: Resources | None = None,
    ) -> None:
        self.info = info
        self.id = info.id
        self.zone = info.zone
        self.config = config
        self.points = points
        self.resources = resources if resources is not None else Resources()
        """Objects shared with the hub's other devices (see :class:`Resources`)."""
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"cityvisor.device.{self.family or 'device'}"),
            {"device": info.id},
        )
        self._points: dict[str, Point] = {}
        self.answered_ms = 0
        """When the equipment last answered (epoch ms; 0: never): see :meth:`answered`."""

    def answered(self, ts: int | None = None) -> None:
        """Say that the equipment answered now (or at ``ts``), even with nothing new.

        :meth:`publish` says it by itself. A driver that publishes only what
        changed calls this after every exchange, so that the HMI can tell a
        steady value (the device answers, the value stays) from a frozen one.
        """
        self.answered_ms = ts if ts is not None else now_ms()

    def members(self, per: str) -> list[str]:
        """The members of kind ``per`` (``"circuit"`` -> ``["c1", "c2", ...]``).

        The default reads the config attribute named ``per + "s"``: an integer
        ``n`` gives ``per1 .. perN``; a list of names gives those names.
        Override it when the members are named otherwise or discovered.
        """
        value = getattr(self.config, per + "s", None)
        if value is None:
            raise TypeError(
                f"{type(self).__name__} declares points per {per!r} but its config has no "
                f"{per}s and members() is not overridden"
            )
        if isinstance(value, int):
            return [f"{per}{i}" for i in range(1, value + 1)]
        names = [str(v) for v in value]
        for name in names:
            if not _MEMBER.match(name):
                raise ValueError(
                    f"member name {name!r} may hold only letters, digits, '-', '_', '.'"
                )
        return names

    @property
    def base_id(self) -> str:
        """The prefix of this device's point ids: ``zone/family/device``."""
        return f"{self.zone}/{self.family}/{self.id}"

    def point_id(self, name: str, member: str | None = None) -> str:
        """The full id of one of this device's points."""
        if member is None:
            return f"{self.base_id}/{name}"
        return f"{self.base_id}/{member}/{name}"

    def declare_points(self) -> list[Point]:
        """Register every point of this device in the database (called once by the hub)."""
        created = []
        for name, spec in self.point_specs.items():
            for member in self.members(spec.per) if spec.per else [None]:
                relative = f"{member}/{name}" if member else name
                entry = self.points.register(
                    self.point_id(name, member),
                    spec,
                    device_id=self.id,
                    zone=self.zone,
                    family=self.family,
                    member=member,
                )
                self._points[relative] = entry
                created.append(entry)
        return created

    def point(self, relative: str) -> Point:
        """One of this device's points by relative id (``"door_open"``, ``"c1/level"``)."""
        try:
            return self._points[relative]
        except KeyError:
            raise KeyError(f"device {self.id} has no point {relative!r}") from None

    def publish(
        self,
        values: Mapping[str, Any],
        *,
        quality: Quality = Quality.GOOD,
        source_ts: int | None = None,
    ) -> None:
        """Publish values by relative id: ``{"door_open": False, "c1/level": 40.0}``."""
        now = now_ms()
        ts = source_ts if source_ts is not None else now
        self.answered_ms = now
        db = self.points
        for relative, value in values.items():
            db.update_point(self.point(relative), value, quality, ts)

    def publish_raw(self, relative: str, raw: float, *, source_ts: int | None = None) -> None:
        """Publish a raw equipment value, converted by the point's declared scaling."""
        entry = self.point(relative)
        scaling = entry.spec.scaling
        value = scaling.to_engineering(raw) if scaling is not None else raw
        self.answered_ms = now_ms()
        self.points.update_point(entry, value, Quality.GOOD, source_ts)

    def mark(self, quality: Quality, relatives: Iterable[str] | None = None) -> None:
        """Set the quality of some (default: all but ``online``) of this device's points."""
        if relatives is None:
            entries = [p for r, p in self._points.items() if r != COMMUNICATION_POINT]
        else:
            entries = [self.point(r) for r in relatives]
        self.points.set_quality(entries, quality)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The driver: talk to the equipment and publish point values, forever.

        Call ``task_status.started()`` once the equipment answered: the
        device is then online. Raise (preferably :class:`DeviceError` with a
        reason) when the equipment is lost: the supervisor marks the points
        bad, raises the communication alarm and restarts ``run`` with backoff.
        Never swallow cancellation.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"


def _root_cause(error: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups raised by task groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _renamed(spec: AlarmSpec, name: str) -> AlarmSpec:
    from dataclasses import replace

    return replace(spec, name=name)


def _unsuppressible(spec: AlarmSpec) -> AlarmSpec:
    from dataclasses import replace

    return replace(spec, suppressible=False)


# --------------------------------------------------------------------------- supervisor


@dataclass
class DriverState:
    """What the supervisor knows of one device's driver (for the API and metrics)."""

    device: DeviceType
    online: bool = False
    restarts: int = 0
    failures: int = 0
    last_error: str = ""
    last_reason: str = ""
    next_attempt_in: float = 0.0
    history: list[str] = field(default_factory=list)
    failing: int = 0
    """Failed attempts since the driver was last online (0 while it is)."""


class Supervisor:
    """Runs each device's driver in its own task, with restart and capped backoff.

    A driver that raises has its points set ``bad(reason)`` at once (reason
    from :class:`DeviceError`, ``comm_failure`` otherwise), its ``online``
    point set False (which raises its communication alarm), and is started
    again after ``min_backoff * 2**n`` seconds (capped at ``max_backoff``,
    with jitter). A driver that stayed up for ``stable_after`` seconds starts
    over from the minimum backoff.

    A failure that says when to retry (:class:`DeviceError` ``retry_after``,
    the HAL's own backoff, which survives restarts) is retried then, and does
    not count towards this backoff: the two never stack, and an outage of
    refused connections does not leave a long backoff for the next failure.

    One warning when a device goes offline (and when the reason changes),
    one info line when it is back; the retries in between are debug lines.
    """

    def __init__(
        self,
        points: PointDB,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 60.0,
        stable_after: float = 30.0,
        start_timeout: float = 30.0,
    ) -> None:
        self.points = points
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.start_timeout = start_timeout
        self.drivers: dict[str, DriverState] = {}

    def add(self, device: DeviceType) -> DriverState:
        """Take charge of a device (its points must already be declared)."""
        if device.id in self.drivers:
            raise ValueError(f"device {device.id!r} is supervised already")
        state = DriverState(device)
        self.drivers[device.id] = state
        return state

    @property
    def restarts(self) -> int:
        """Driver restarts since start, all devices together (for metrics)."""
        return sum(s.restarts for s in self.drivers.values())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every driver until cancelled."""
        async with anyio.create_task_group() as tg:
            for state in self.drivers.values():
                tg.start_soon(self._supervise, state, name=f"driver {state.device.id}")
            task_status.started()

    async def _supervise(self, state: DriverState) -> None:
        device = state.device
        attempt = 0
        state_key: tuple[str, type] | None = None  # the last failure's reason and kind
        while True:
            started_at = anyio.current_time()
            error: BaseException | None = None
            try:
                async with anyio.create_task_group() as tg:
                    with anyio.move_on_after(self.start_timeout) as start_scope:
                        await tg.start(device.run)
                    if start_scope.cancelled_caught:
                        raise DeviceError(
                            f"no answer within {self.start_timeout:g} s", reason="comm_failure"
                        )
                    if state.failing:
                        device.log.info(
                            "device %s online again after %d failed attempts",
                            device.id,
                            state.failing,
                        )
                        state.failing = 0
                    self._set_online(state, True)
                # run() returned: a driver is expected to run forever.
                error = DeviceError("driver returned", reason="device_failure")
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # a driver's failure must never reach the hub
                error = _root_cause(exc)
            # Cancellation (shutdown) leaves the points as they are: only failures mark them.
            reason = getattr(error, "reason", "comm_failure")
            self._set_online(state, False, reason)
            if anyio.current_time() - started_at >= self.stable_after:
                attempt = 0
            delay = self._backoff(attempt, error)
            if getattr(error, "retry_after", None) is None:
                attempt += 1
            news = not state.failing or (reason, type(error)) != state_key
            state_key = (reason, type(error))
            state.failing += 1
            state.failures += 1
            state.restarts += 1
            state.last_error = f"{type(error).__name__}: {error}"
            state.last_reason = reason
            state.next_attempt_in = delay
            state.history = [*state.history[-9:], state.last_error]
            crash = not isinstance(error, DeviceError | OSError)
            device.log.log(
                logging.WARNING if news or crash else logging.DEBUG,
                "device %s failed (%s); retrying with backoff, next attempt in %.1f s",
                device.id,
                state.last_error,
                delay,
                exc_info=crash,
            )
            await anyio.sleep(delay)

    def _backoff(self, attempt: int, error: BaseException | None) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        base = min(self.max_backoff, self.min_backoff * math.pow(2, attempt))
        return base * random.uniform(0.8, 1.0)

    def _set_online(self, state: DriverState, online: bool, reason: str = "comm_failure") -> None:
        device = state.device
        state.online = online
        if not online:
            device.mark(Quality.bad(reason))
        self.points.update_point(device.point(COMMUNICATION_POINT), online, Quality.GOOD)
