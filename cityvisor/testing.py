"""Test helpers for plugin authors, registered as a pytest plugin (``-p cityvisor.testing``).

Installing cityvisor makes these available in every test suite (through the
``pytest11`` entry point); nothing to import but the helpers you call::

    import pytest
    from cityvisor.testing import running_hub, wait_for_point, wait_for_alarm

    pytestmark = pytest.mark.anyio

    async def test_high_water_raises_an_alarm(tmp_path):
        async with running_hub(CONFIG, tmp_path, plugins=[my_plugin]) as hub:
            await wait_for_point(hub, "centre/flood/gauge-1/height", lambda v: v.value > 3.5)
            await wait_for_alarm(hub, "gauge-1:high_water", lambda a: a.active)

The hub runs with only the plugins you give (plus none of the installed
ones), on a temporary SQLite store, and stops cleanly when the block ends.

:func:`check_device_type` is the conformance check of a device type against
its simulator, in one call (declaration, readiness, bad quality when the
equipment goes, recovery when it comes back)::

    async def test_gauge_conforms():
        port = free_tcp_port()
        await check_device_type(
            Gauge, {"host": "127.0.0.1", "port": port}, lambda: GaugeSimulator(port=port)
        )
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest
from anyio.abc import TaskStatus

from .core.alarms import Alarm
from .core.commands import CommandOutcome, CommandRequest, CommandResult, CommandSpec
from .core.config import load_config, parse_config
from .core.devices import DeviceType
from .core.hookspecs import hookimpl
from .core.hub import Hub
from .core.plugins import make_plugin_manager
from .core.points import DataType, PointValue
from .core.store import SqliteStore
from .core.users import Role, User

__all__ = [
    "ApiClient",
    "ConformanceError",
    "ConformanceReport",
    "api_client",
    "check_device_type",
    "cityvisor_store",
    "declaration_problems",
    "free_tcp_port",
    "running_hub",
    "send_command",
    "wait_for_alarm",
    "wait_for_point",
]


@asynccontextmanager
async def running_hub(
    config: str | Path,
    directory: Path,
    *,
    plugins: Iterable[Any] = (),
    builtins: bool = False,
) -> AsyncIterator[Hub]:
    """Run a hub for the length of an ``async with`` block.

    ``config`` is the text of a deployment TOML file (or the path of one);
    relative store paths land in ``directory``. Only ``plugins`` are loaded,
    plus the built-in families when ``builtins`` is true.
    """
    if isinstance(config, Path):
        path = config
    else:
        path = directory / "cityvisor-test.toml"
        path.write_text(config, encoding="utf-8")
    manager = make_plugin_manager(
        entry_points=False,
        plugins=plugins,
        **({} if builtins else {"builtins": ()}),
    )
    hub = Hub(load_config(path), manager)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        try:
            yield hub
        finally:
            tg.cancel_scope.cancel()


async def wait_for_point(
    hub: Hub,
    point_id: str,
    predicate: Callable[[PointValue], bool],
    timeout: float = 5.0,
) -> PointValue:
    """Wait until a point's value satisfies ``predicate``; fail the test with its last value."""
    value = await hub.points.wait_for(point_id, predicate, timeout)
    if value is None:
        pytest.fail(
            f"{point_id} did not reach the expected value in {timeout:g} s; "
            f"it is {hub.points.value(point_id)}"
        )
    return value


async def wait_for_alarm(
    hub: Hub,
    alarm_id: str,
    predicate: Callable[[Alarm], bool],
    timeout: float = 5.0,
) -> Alarm:
    """Wait until an alarm satisfies ``predicate`` (checked after each journaled event)."""
    alarm = hub.alarms.get(alarm_id)
    with anyio.move_on_after(timeout):
        async with hub.alarms.subscribe() as feed:
            async for _message in feed:
                if predicate(alarm):
                    return alarm
    pytest.fail(
        f"alarm {alarm_id} did not reach the expected state in {timeout:g} s: {alarm.as_json()}"
    )


async def send_command(
    hub: Hub,
    device_id: str,
    command: str,
    member: str | None = None,
    *,
    user: User | None = None,
    **arguments: Any,
) -> CommandResult:
    """Send a command through the hub's command bus as an operator would, and return its result.

    The command goes through every gate a real one does (validation,
    permissions, interlocks, feedback, journal); a selection that needs
    confirmation is confirmed, and a two-person command is approved by a
    second test user, so the test gets the final outcome. ``user`` defaults
    to an administrator of every zone. A refusal raises the
    :class:`~cityvisor.core.commands.CommandError` the bus raises::

        result = await send_command(hub, "gauge-1", "set_output", on=True)
        assert result.ok
    """
    user = user or User("tester", Role.ADMIN, frozenset({"*"}))
    request = CommandRequest(device_id, command, arguments, member, user, origin="test")
    result = await hub.commands.execute(request)
    if result.outcome is CommandOutcome.PENDING_CONFIRMATION and result.token is not None:
        confirmed = await hub.commands.confirm(result.token, user)
        assert isinstance(confirmed, CommandResult)
        result = confirmed
    if result.outcome is CommandOutcome.PENDING_APPROVAL and result.approval_id is not None:
        second = User(user.name + "-second", Role.ADMIN, frozenset({"*"}))
        approved = await hub.commands.approve(result.approval_id, second, "approved by the test")
        assert isinstance(approved, CommandResult)
        result = approved
    return result


class ApiClient:
    """An HTTP client of a running hub's API, logged in: it keeps the session cookie and
    sends the CSRF token and the origin on every change, as the HMI does.

    Each call returns ``(status, body)``, the body decoded from JSON when it is JSON.
    """

    def __init__(self, base_url: str, session: Any) -> None:
        self.base_url = base_url
        self.session = session
        self.csrf: str | None = None

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        """Send ``method path`` (``/api/v1/...``) with an optional JSON body."""
        headers = {"Origin": self.base_url}
        if self.csrf and method not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = self.csrf
        async with self.session.request(
            method, self.base_url + path, json=json, headers=headers
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def get(self, path: str) -> tuple[int, Any]:
        """``GET path``."""
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None) -> tuple[int, Any]:
        """``POST path`` with a JSON body."""
        return await self.request("POST", path, json)

    async def delete(self, path: str) -> tuple[int, Any]:
        """``DELETE path``."""
        return await self.request("DELETE", path)


@asynccontextmanager
async def api_client(
    hub: Hub,
    name: str = "tester",
    *,
    role: str = "admin",
    zones: Iterable[str] = ("*",),
) -> AsyncIterator[ApiClient]:
    """A client of the hub's HTTP API, logged in as a new user ``name`` with ``role`` in ``zones``.

    The hub must run the web server on a free port: load the built-in
    ``web`` plugin and set ``[web] port = 0``::

        from cityvisor.plugins import web

        async with running_hub(CONFIG, tmp_path, plugins=[my_plugin, web]) as hub:
            async with api_client(hub, role="operator") as client:
                status, body = await client.get("/api/v1/devices")

    The password is hashed with cheap argon2 settings: tests log in often.
    """
    import secrets

    import aiohttp
    import argon2

    from .web import find_server
    from .web.auth import Accounts

    server = find_server(hub)
    if server is None:
        pytest.fail("the hub runs no web server: load cityvisor.plugins.web, with [web] port = 0")
    with anyio.fail_after(10):
        await server.ready.wait()
    accounts = Accounts(hub.store, hub.config.user_list())
    await accounts.setup()
    password = secrets.token_urlsafe(16)
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    if await accounts.get(name) is None:
        await accounts.add(name, password, Role.parse(role), list(zones), hasher=cheap)
    else:
        await accounts.set_password(name, password, hasher=cheap)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        client = ApiClient(server.url, session)
        status, body = await client.post(
            "/api/v1/session", {"username": name, "password": password}
        )
        if status != 200:
            pytest.fail(f"could not log in as {name}: {status} {body}")
        client.csrf = body["csrf_token"]
        yield client


@pytest.fixture
async def cityvisor_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store in the test's temporary directory."""
    store = SqliteStore(tmp_path / "cityvisor-test.sqlite", flush_interval=0.05)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# --------------------------------------------------------------------------- conformance


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now: give it to a simulator that must come back on it.

    :func:`check_device_type` stops the simulator and starts a new one: both
    must listen where the device's config points, so pick the port first.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ConformanceError(AssertionError):
    """A device type that does not keep the plugin contract; ``problems`` lists each breach."""

    def __init__(self, device_type: type[DeviceType], problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{device_type.__name__} does not conform:\n{lines}")


@dataclass
class ConformanceReport:
    """What :func:`check_device_type` measured (seconds), for a test to print or compare."""

    device_type: str
    points: int = 0
    """Points of the device under test, members included."""
    online_after: float | None = None
    """From the hub's start to ``run()`` signalling ready."""
    bad_after: float | None = None
    """From the simulator's stop to every point reading bad."""
    recovered_after: float | None = None
    """From the simulator's new start to the device online again."""
    problems: list[str] = field(default_factory=list)


def declaration_problems(device_type: type[DeviceType]) -> list[str]:
    """What is wrong with a device type's declaration alone (no simulator needed).

    Every point, command, parameter, alarm and config key documented (points,
    commands and alarms in French and English: operators read them); enum
    points labelled; commands whose parameter schemas refuse what they must
    (missing, unknown, mistyped and out-of-range arguments). Alarms on
    unknown points cannot even be declared (``DeviceType`` refuses them).
    """
    problems: list[str] = []

    def bilingual(what: str, text: Mapping[str, str]) -> None:
        missing = [lang for lang in ("fr", "en") if not (text or {}).get(lang, "").strip()]
        if missing:
            problems.append(f"{what} has no {' and no '.join(missing)} text")

    if not (device_type.__dict__.get("__doc__") or "").strip():
        problems.append("the class has no docstring (cityvisor plugins shows it)")
    if not device_type.family:
        problems.append("family is not set")
    bilingual("label", device_type.label)
    for key, field_info in device_type.Config.model_fields.items():
        if not (field_info.description or "").strip():
            problems.append(f"config key {key!r} has no docstring (the config reference shows it)")
    for name, spec in device_type.point_specs.items():
        bilingual(f"point {name!r}: doc", spec.doc)
        if spec.dtype is DataType.ENUM and not spec.labels:
            problems.append(f"point {name!r} is an enum without labels")
    for name, command in device_type.command_specs.items():
        bilingual(f"command {name!r}: label", command.label)
        bilingual(f"command {name!r}: doc", command.doc)
        problems += [f"command {name!r}: {p}" for p in _parameter_problems(command)]
    for name, alarm_spec in device_type.alarm_specs.items():
        bilingual(f"alarm {name!r}: message", alarm_spec.message)
    return problems


_WRONG_TYPE = {bool: "yes", int: "three", float: "high", str: 12}


def _parameter_problems(command: CommandSpec) -> list[str]:
    problems: list[str] = []
    try:
        schema = command.json_schema()
        json.dumps(schema)
    except Exception as error:  # a schema the API cannot serve
        return [f"its parameter schema cannot be built: {error}"]
    if command.check({"__no_such_parameter__": 1})[1] == []:
        problems.append("accepts an unknown argument")
    required = [n for n, p in command.params.items() if p.required and p.default is None]
    if required and command.check({})[1] == []:
        problems.append(f"accepts a call without {', '.join(required)}")
    for name, param in command.params.items():
        bilingual = [lang for lang in ("fr", "en") if not param.doc.get(lang, "").strip()]
        if bilingual:
            problems.append(f"parameter {name!r} has no {' and no '.join(bilingual)} doc")
        if "type" not in schema["properties"][name]:
            problems.append(f"parameter {name!r} has no type in its schema")
        wrong = _WRONG_TYPE.get(param.dtype)
        if wrong is not None and _accepts(param, name, wrong):
            problems.append(f"parameter {name!r} accepts {wrong!r}")
        if param.maximum is not None and _accepts(param, name, param.maximum + 1):
            problems.append(f"parameter {name!r} accepts {param.maximum + 1!r}, above its maximum")
        if param.minimum is not None and _accepts(param, name, param.minimum - 1):
            problems.append(f"parameter {name!r} accepts {param.minimum - 1!r}, below its minimum")
    return problems


def _accepts(param: Any, name: str, value: Any) -> bool:
    try:
        param.validate(name, value)
    except ValueError:
        return False
    return True


class _OnePlugin:
    """A plugin that provides only the device type under test."""

    def __init__(self, device_type: type[DeviceType]) -> None:
        self.device_type = device_type

    @hookimpl
    def cityvisor_device_types(self) -> list[type[DeviceType]]:
        """The device type under test."""
        return [self.device_type]


async def check_device_type(
    device_type: type[DeviceType],
    config: Mapping[str, Any],
    simulator_factory: Callable[[], AbstractAsyncContextManager[Any]],
    *,
    timeout: float = 30.0,
    optional_points: Iterable[str] = (),
) -> ConformanceReport:
    """Check a device type against its simulator: one call, every rule of the plugin contract.

    In the spirit of trio's ``check_two_way_stream``: give the class, one
    device's ``config`` table, and a factory of the simulator (an async
    context manager that serves while entered, on the address ``config``
    names: pick the port with :func:`free_tcp_port` so a second simulator can
    take it again). It checks, and reports every breach at once:

    1. the declaration (:func:`declaration_problems`): points typed and
       documented in French and English, commands whose parameter schemas
       refuse bad arguments, alarms with messages, config keys documented;
    2. ``config`` passes the type's ``Config`` model;
    3. with the simulator running, a hub with only this device type starts
       it: ``run()`` signals ready (the device goes online) and every point
       but ``optional_points`` (names, ``"level"`` or ``"c1/level"``) gets a
       good value;
    4. the simulator stopped, every point goes bad and ``online`` false
       (the communication alarm rises);
    5. a new simulator started, the supervisor restarts the driver and the
       device comes back online on its own.

    Each wait lasts at most ``timeout`` seconds and ends as soon as the
    condition holds. Returns a :class:`ConformanceReport` with the times
    measured; raises :class:`ConformanceError` listing the problems::

        async def test_gauge_conforms():
            port = free_tcp_port()
            await check_device_type(
                Gauge, {"host": "127.0.0.1", "port": port, "period": 0.1},
                lambda: GaugeSimulator(port=port),
            )
    """
    report = ConformanceReport(device_type.type_name)
    problems = report.problems
    problems += declaration_problems(device_type)
    try:
        device_type.Config.model_validate(dict(config))
    except pydantic.ValidationError as error:
        refusals = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        problems.append(f"the config given is refused by {device_type.__name__}.Config: {refusals}")
        raise ConformanceError(device_type, problems) from None
    optional = set(optional_points)
    with tempfile.TemporaryDirectory(prefix="cityvisor-conformance-") as directory:
        data = {
            "site": {"name": "Conformance"},
            "store": {"path": "conformance.sqlite", "flush_interval": 0.1},
            "plugins": {"entry_points": False},
            "zones": [{"id": "test", "name": "Test"}],
            "devices": [
                {"id": "dut", "type": device_type.type_name, "zone": "test", "config": dict(config)}
            ],
        }
        hub_config = parse_config(data, source="<conformance>", base_dir=directory)
        manager = make_plugin_manager(
            builtins=(), entry_points=False, plugins=[_OnePlugin(device_type)]
        )
        hub = Hub(hub_config, manager)
        device = hub.devices["dut"]
        ids = [
            point.id
            for point in hub.points.of_device("dut")
            if point.spec.name not in optional
            and point.id.removeprefix(device.base_id + "/") not in optional
        ]
        online_id = device.point_id("online")
        others = [point_id for point_id in ids if point_id != online_id]
        report.points = len(hub.points.of_device("dut"))
        await _run_conformance(hub, simulator_factory, online_id, others, timeout, report)
    if problems:
        raise ConformanceError(device_type, problems)
    return report


async def _run_conformance(
    hub: Hub,
    simulator_factory: Callable[[], AbstractAsyncContextManager[Any]],
    online_id: str,
    others: list[str],
    timeout: float,
    report: ConformanceReport,
) -> None:
    problems = report.problems
    stopped = anyio.Event()
    hub_scope = anyio.CancelScope()

    async def run_hub(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with hub_scope:
                await hub.run(task_status=task_status)
        finally:
            stopped.set()

    async def all_points(predicate: Callable[[PointValue], bool]) -> list[str]:
        """The points that did not satisfy ``predicate`` before the deadline."""
        deadline = anyio.current_time() + timeout
        late = []
        for point_id in others:
            left = max(0.0, deadline - anyio.current_time())
            if await hub.points.wait_for(point_id, predicate, left) is None:
                late.append(point_id)
        return late

    def is_online(value: PointValue) -> bool:
        return value.value is True and value.quality.is_good

    async with anyio.create_task_group() as tg:
        try:
            async with simulator_factory():
                started = anyio.current_time()
                await tg.start(run_hub)
                if await hub.points.wait_for(online_id, is_online, timeout) is None:
                    problems.append(
                        f"run() did not signal ready within {timeout:g} s "
                        f"(the device never went online: {_last_error(hub)})"
                    )
                    return
                report.online_after = anyio.current_time() - started
                late = await all_points(lambda v: v.quality.is_good)
                if late:
                    problems.append(
                        f"never got a good value within {timeout:g} s (publish them, or pass "
                        f"optional_points): {', '.join(late)}"
                    )
            stop_time = anyio.current_time()  # the simulator is gone
            late = await all_points(lambda v: v.quality.is_bad)
            if late:
                problems.append(
                    f"still not bad {timeout:g} s after the simulator stopped: {', '.join(late)}"
                )
            went_offline = await hub.points.wait_for(online_id, lambda v: v.value is False, timeout)
            if went_offline is None:
                problems.append("online stayed true after the simulator stopped")
                return
            report.bad_after = anyio.current_time() - stop_time
            async with simulator_factory():
                restart_time = anyio.current_time()
                if await hub.points.wait_for(online_id, is_online, timeout) is None:
                    problems.append(
                        f"not back online within {timeout:g} s of the simulator's restart "
                        f"({_last_error(hub)})"
                    )
                else:
                    report.recovered_after = anyio.current_time() - restart_time
                # Stop the hub while the simulator still answers: a clean stop.
                hub_scope.cancel()
                await stopped.wait()
        finally:
            hub_scope.cancel()


def _last_error(hub: Hub) -> str:
    state = hub.supervisor.drivers.get("dut")
    if state is None or not state.last_error:
        return "no error recorded"
    return f"last error: {state.last_error}"
