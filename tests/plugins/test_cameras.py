"""The cameras plugin on a real hub, talking ONVIF to the camera simulator over loopback."""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from cityvisor.core.commands import CommandOutcome, CommandRequest
from cityvisor.core.hub import Hub
from cityvisor.core.users import Role, User
from cityvisor.hal.onvif import CameraAuthError
from cityvisor.hal.sim.camera import SimulatedCamera
from cityvisor.plugins import cameras, demo
from cityvisor.plugins.cameras.evidence import CameraServices
from cityvisor.plugins.cameras.snapshots import SnapshotCache
from cityvisor.testing import running_hub, wait_for_alarm, wait_for_point
from tests.hal.http_peers import GENERIC_FAULT, TRUNCATED_PRESETS, soap_reply

pytestmark = pytest.mark.anyio

PASSWORD = "Cam-pa55word"
OPERATOR = User("olivia", Role.OPERATOR)
CAM = "centre/cameras/cam-1"


def config(
    port: int, *, password: str = "${CITYVISOR_TEST_CAMERA_PASSWORD}", extra: str = ""
) -> str:
    return f"""
[site]
name = "Testville"

[store]
path = "t.sqlite"

[[zones]]
id = "centre"
name = "Centre"

[[zones]]
id = "nord"
name = "Nord"

[[devices]]
id = "cam-1"
type = "cameras.camera"
zone = "centre"
config = {{ host = "127.0.0.1", port = {port}, username = "cityvisor", password = "{password}", timeout = 3{extra} }}

[[devices]]
id = "tank-1"
type = "demo.tank"
zone = "centre"
watched_by = ["cam-1"]
config = {{ period = 0.05, fill_rate = 200, initial_level = 50 }}
"""


@pytest.fixture
async def camera(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimulatedCamera]:
    """A simulated camera (clock 10 min off, credentials in its stream URI)."""
    monkeypatch.setenv("CITYVISOR_TEST_CAMERA_PASSWORD", PASSWORD)
    async with SimulatedCamera(
        "Place du Marché",
        username="cityvisor",
        password=PASSWORD,
        clock_offset=-600,
        uri_credentials=True,
        ptz_travel_time=0.3,
    ) as sim:
        yield sim


@pytest.fixture
async def hub(camera: SimulatedCamera, tmp_path: Path) -> AsyncIterator[Hub]:
    """A hub running the camera and a tank it watches; the camera online."""
    async with running_hub(config(camera.port), tmp_path, plugins=[cameras, demo]) as hub:
        await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is True)
        yield hub


async def execute(hub: Hub, device: str, name: str, **arguments: Any) -> Any:
    return await hub.commands.execute(CommandRequest(device, name, arguments, None, OPERATOR))


async def test_identity_profiles_and_stream_appear_as_points(
    hub: Hub, camera: SimulatedCamera
) -> None:
    values = {n: hub.points.value(f"{CAM}/{n}") for n in ("manufacturer", "model", "firmware")}
    assert {n: v.value for n, v in values.items()} == {
        "manufacturer": "Cityvisor",
        "model": "SimCam PTZ-2",
        "firmware": "4.3.1",
    }
    assert all(v.quality.is_good for v in values.values())
    assert hub.points.value(f"{CAM}/profiles").value == (
        "mainStream 1920x1080 H264, subStream 640x360 H264"
    )
    stream = hub.points.value(f"{CAM}/stream_uri").value
    assert stream == "rtsp://127.0.0.1:554/Streaming/Profile_1"  # no user:password@
    assert hub.points.value(f"{CAM}/presets").value == "Home, Entrance, Street"
    assert not [p.id for p in hub.points.points() if PASSWORD in str(p.current.value)]


async def test_goto_preset_succeeds_when_the_head_stands_at_the_preset(
    hub: Hub, camera: SimulatedCamera
) -> None:
    result = await execute(hub, "cam-1", "goto_preset", preset="Street")
    assert result.outcome is CommandOutcome.SUCCEEDED, result.detail
    assert result.feedback == "Street"
    assert camera.position == (-0.6, 0.1, 0.8) and not camera.moving
    refused = await execute(hub, "cam-1", "goto_preset", preset="Nowhere")
    assert refused.outcome is CommandOutcome.FAILED
    assert "no preset 'Nowhere'" in refused.detail


async def test_motion_arrives_within_a_second_and_alarms_only_under_watch(
    hub: Hub, camera: SimulatedCamera
) -> None:
    camera.set_motion(True)
    await wait_for_point(hub, f"{CAM}/motion", lambda v: v.value is True, timeout=1)
    assert hub.points.value(f"{CAM}/watched_motion").value is False
    assert not hub.alarms.get("cam-1:motion_while_watched").active
    camera.set_motion(False)
    await wait_for_point(hub, f"{CAM}/motion", lambda v: v.value is False, timeout=1)

    result = await execute(hub, "cam-1", "set_watch", on=True)
    assert result.ok, result.detail
    camera.set_motion(True)
    await wait_for_point(hub, f"{CAM}/watched_motion", lambda v: v.value is True, timeout=1)
    await wait_for_alarm(hub, "cam-1:motion_while_watched", lambda a: a.active)

    camera.set_tamper(True)
    await wait_for_alarm(hub, "cam-1:tampering", lambda a: a.active)


async def test_a_wrong_password_is_a_config_error_with_an_alarm_and_no_retry_storm(
    camera: SimulatedCamera, tmp_path: Path
) -> None:
    async with running_hub(
        config(camera.port, password="not-the-password"), tmp_path, plugins=[cameras, demo]
    ) as hub:
        await wait_for_point(
            hub, f"{CAM}/model", lambda v: str(v.quality) == "bad(config_error)", timeout=10
        )
        await wait_for_alarm(hub, "cam-1:communication_lost", lambda a: a.active)
        refused = camera.requests["unauthorized"]
        assert refused >= 1
        # Backoff alone would have retried several times in 3 s; a refused
        # password waits for minutes instead.
        await anyio.sleep(3)
        assert camera.requests["unauthorized"] == refused
        assert hub.supervisor.drivers["cam-1"].next_attempt_in >= 60
        assert "not-the-password" not in hub.supervisor.drivers["cam-1"].last_error


@pytest.mark.parametrize(
    ("operation", "function", "points"),
    [
        ("GetPresets", "ptz_presets", ("presets", "preset")),
        ("GetStatus", "ptz_status", ("preset",)),
        ("CreatePullPointSubscription", "events", ("motion", "tamper")),
        ("PullMessages", "events", ("motion", "tamper")),
    ],
)
async def test_an_optional_function_that_answers_badly_fails_alone_and_is_retried(
    camera: SimulatedCamera, tmp_path: Path, operation: str, function: str, points: tuple[str, ...]
) -> None:
    camera.misbehave(operation, soap_reply(TRUNCATED_PRESETS))
    deployment = config(camera.port, extra=", capability_retry = 0.5")
    async with running_hub(deployment, tmp_path, plugins=[cameras, demo]) as hub:
        await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is True)
        unavailable = await wait_for_point(hub, f"{CAM}/unavailable", lambda v: bool(v.value))
        assert str(unavailable.value).startswith(f"{function}: {operation} on 127.0.0.1:")
        assert "the camera's reply could not be read (XMLSyntaxError" in str(unavailable.value)
        for name in points:
            await wait_for_point(
                hub, f"{CAM}/{name}", lambda v: str(v.quality) == "bad(device_failure)"
            )
        # The rest of the camera works: identity, stream, snapshots.
        assert hub.points.value(f"{CAM}/model").quality.is_good
        assert hub.points.value(f"{CAM}/stream_uri").quality.is_good
        assert (await CameraServices.of(hub).snapshots.get("cam-1")).jpeg[:2] == b"\xff\xd8"
        if function == "ptz_presets":
            refused = await execute(hub, "cam-1", "goto_preset", preset="Street")
            assert "the presets are unavailable: GetPresets on" in refused.detail

        camera.misbehave(operation, None)  # the camera answers properly again
        await wait_for_point(hub, f"{CAM}/unavailable", lambda v: v.value == "", timeout=10)
        for name in points:
            await wait_for_point(hub, f"{CAM}/{name}", lambda v: v.quality.is_good, timeout=10)
        assert hub.points.value(f"{CAM}/presets").value == "Home, Entrance, Street"
        assert hub.supervisor.drivers["cam-1"].restarts == 0
        assert not hub.alarms.get("cam-1:communication_lost").active


async def test_a_401_with_a_generic_fault_is_a_config_error_with_the_slow_retry(
    camera: SimulatedCamera, tmp_path: Path
) -> None:
    camera.misbehave("GetDeviceInformation", soap_reply(GENERIC_FAULT, status=401))
    async with running_hub(config(camera.port), tmp_path, plugins=[cameras, demo]) as hub:
        await wait_for_point(
            hub, f"{CAM}/model", lambda v: str(v.quality) == "bad(config_error)", timeout=10
        )
        driver = hub.supervisor.drivers["cam-1"]
        assert driver.next_attempt_in >= 60 and "refused the credentials" in driver.last_error


@pytest.mark.parametrize("allowed", [False, True])
async def test_a_camera_asking_for_basic_over_http_gets_it_only_if_the_config_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: bool
) -> None:
    monkeypatch.setenv("CITYVISOR_TEST_CAMERA_PASSWORD", PASSWORD)
    extra = ", allow_basic_over_http = true" if allowed else ""
    async with (
        SimulatedCamera(username="cityvisor", password=PASSWORD, snapshot_auth="basic") as sim,
        running_hub(config(sim.port, extra=extra), tmp_path, plugins=[cameras, demo]) as hub,
    ):
        await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is True)
        snapshots = CameraServices.of(hub).snapshots
        if allowed:
            assert (await snapshots.get("cam-1")).jpeg[:2] == b"\xff\xd8"
        else:
            with pytest.raises(CameraAuthError, match="set allow_basic_over_http = true"):
                await snapshots.get("cam-1")
            assert sim.requests["snapshot"] == 0
        # Either way the camera itself is fine.
        assert hub.points.value(f"{CAM}/model").quality.is_good


async def test_a_camera_that_goes_away_raises_its_alarm_and_recovers_alone(
    hub: Hub, camera: SimulatedCamera
) -> None:
    await camera.stop()
    await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is False)
    await wait_for_alarm(hub, "cam-1:communication_lost", lambda a: a.active)
    assert str(hub.points.value(f"{CAM}/model").quality) == "bad(comm_failure)"
    await camera.start()
    await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is True, timeout=15)
    await wait_for_point(hub, f"{CAM}/model", lambda v: v.quality.is_good)
    await wait_for_alarm(hub, "cam-1:communication_lost", lambda a: not a.active)


async def test_an_alarm_of_a_watched_device_stores_the_cameras_snapshot(
    hub: Hub, camera: SimulatedCamera
) -> None:
    from PIL import Image

    services = CameraServices.of(hub)
    before = camera.requests["snapshot"]
    result = await execute(hub, "tank-1", "set_level", setpoint=99)
    assert result.ok, result.detail
    await wait_for_alarm(hub, "tank-1:high_water", lambda a: a.active)
    for _ in range(100):  # the capture runs in the evidence service, after the alarm
        if rows := await services.evidence.list(alarm_id="tank-1:high_water"):
            break
        await anyio.sleep(0.05)
    (row,) = rows
    assert row["camera"] == "cam-1" and row["error"] == "" and row["size"] > 1000
    image, details = await services.evidence.image(row["id"])
    assert details["alarm"] == "tank-1:high_water"
    with Image.open(io.BytesIO(image)) as picture:
        assert picture.format == "JPEG"
    assert camera.requests["snapshot"] == before + 1
    journal = await hub.store.query_journal(kinds=["evidence"], alarm="tank-1:high_water")
    assert journal and journal[0].device == "cam-1"
    assert services.evidence.dropped == 0
    for _ in range(500):  # the capture hands back its slot, and nothing fails doing so
        if not services.evidence._limiter.borrowed_tokens:
            break
        await anyio.sleep(0.01)
    assert services.evidence._limiter.borrowed_tokens == 0
    assert hub.service_failures["cameras"] == 0


async def test_take_snapshot_stores_the_picture_with_the_cameras_evidence(hub: Hub) -> None:
    result = await execute(hub, "cam-1", "take_snapshot")
    assert result.ok, result.detail
    rows = await CameraServices.of(hub).evidence.list(camera_id="cam-1")
    assert [(r["reason"], r["alarm"], r["error"]) for r in rows] == [("command", None, "")]


# --------------------------------------------------------------------------- the web route


def app_for(hub: Hub, users: dict[str, User]) -> web.Application:
    """The plugin's routes behind a stand-in for the web server's session check."""

    @web.middleware
    async def session(request: web.Request, handler: Any) -> web.StreamResponse:
        user = users.get(request.headers.get("X-Test-User", ""))
        if user is None:
            return web.json_response({"error": "unauthenticated"}, status=401)
        # The hook contract names the key "user", a plain string as the web server sets
        # it; aiohttp 3.14 warns once per string key that it prefers web.RequestKey.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request["user"] = user
        return await handler(request)

    app = web.Application(middlewares=[session])
    for _, routes in hub.plugins.call_each("cityvisor_web_routes", hub=hub):
        app.router.add_routes(routes)
    return app


@pytest.fixture
async def http(hub: Hub) -> AsyncIterator[aiohttp.ClientSession]:
    users = {"olivia": OPERATOR, "nora": User("nora", Role.VIEWER, frozenset({"nord"}))}
    runner = web.AppRunner(app_for(hub, users))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def test_the_snapshot_route_serves_logged_in_users_and_shares_one_fetch(
    hub: Hub, camera: SimulatedCamera, http: aiohttp.ClientSession
) -> None:
    before = camera.requests["snapshot"]

    async def get(results: list[Any]) -> None:
        headers = {"X-Test-User": "olivia"}
        async with http.get("/api/v1/cameras/cam-1/snapshot", headers=headers) as response:
            results.append((response.status, response.content_type, await response.read()))

    results: list[Any] = []
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(get, results)
    assert {(status, kind) for status, kind, _ in results} == {(200, "image/jpeg")}
    assert len({body for _, _, body in results}) == 1
    assert camera.requests["snapshot"] == before + 1  # 20 browsers, one request to the camera
    cache = CameraServices.of(hub).snapshots
    assert cache.fetches == 1 and cache.hits + cache.shared == 19

    async with http.get("/api/v1/cameras/cam-1/snapshot") as response:
        assert response.status == 401  # anonymous
    async with http.get("/api/v1/cameras/cam-1/snapshot", headers={"X-Test-User": "nora"}) as r:
        assert r.status == 403  # logged in, but another zone's camera
    async with http.get("/api/v1/cameras/tank-1/snapshot", headers={"X-Test-User": "olivia"}) as r:
        assert r.status == 404


async def test_the_evidence_routes_list_and_serve_an_alarms_pictures(
    hub: Hub, http: aiohttp.ClientSession
) -> None:
    await execute(hub, "cam-1", "take_snapshot")
    headers = {"X-Test-User": "olivia"}
    async with http.get("/api/v1/cameras/evidence?camera=cam-1", headers=headers) as response:
        assert response.status == 200
        (row,) = (await response.json())["evidence"]
    async with http.get(row["url"], headers=headers) as response:
        assert response.status == 200 and response.content_type == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
    async with http.get(row["url"], headers={"X-Test-User": "nora"}) as response:
        assert response.status == 404


async def test_the_snapshot_cache_is_bounded_in_memory() -> None:
    async def fetch(camera_id: str) -> bytes:
        return camera_id.encode() * 100

    cache = SnapshotCache(fetch, max_bytes=1000)
    for i in range(30):
        await cache.get(f"c{i:02d}")
    assert cache.bytes <= 1000 and cache.evicted > 0
    assert cache.fetches == 30


async def test_a_snapshot_reaches_a_logged_in_browser_session_and_not_an_anonymous_one(
    camera: SimulatedCamera, tmp_path: Path
) -> None:
    """Through the real web server (plugin routes mounted behind its session check)."""
    from cityvisor.plugins import web as web_plugin
    from cityvisor.web import find_server
    from cityvisor.web.auth import Accounts
    from tests.web.conftest import CHEAP, Client

    deployment = config(camera.port) + '\n[web]\nhost = "127.0.0.1"\nport = 0\n'
    async with running_hub(deployment, tmp_path, plugins=[cameras, demo, web_plugin]) as hub:
        await wait_for_point(hub, f"{CAM}/online", lambda v: v.value is True)
        server = find_server(hub)
        assert server is not None
        with anyio.fail_after(10):
            await server.ready.wait()
        accounts = Accounts(hub.store, hub.config.user_list())
        await accounts.setup()
        await accounts.add(
            "olivia", "correct horse battery", Role.OPERATOR, ["centre"], hasher=CHEAP
        )
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
            aiohttp.ClientSession() as anonymous,
        ):
            await Client(server.url, browser).login("olivia", "correct horse battery")
            url = f"{server.url}/api/v1/cameras/cam-1/snapshot"
            async with browser.get(url) as response:
                assert response.status == 200 and response.content_type == "image/jpeg"
                assert (await response.read())[:2] == b"\xff\xd8"
            async with anonymous.get(url) as response:
                assert response.status == 401
