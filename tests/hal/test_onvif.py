"""The ONVIF HAL against the camera simulator, over HTTP on loopback, with the real client.

onvif-zeep-async does the talking (WS-Security digest, zeep parsing of
every reply), so these tests also check that the simulator's replies
conform to the WSDLs the library ships.
"""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from aiohttp import web

from cityvisor.hal.onvif import (
    SOAP_BODY_LIMIT,
    CameraAuthError,
    CameraError,
    CameraFaultError,
    CameraReplyError,
    OnvifClient,
    strip_credentials,
)
from cityvisor.hal.sim.camera import SimulatedCamera, envelope
from tests.hal.http_peers import (
    GENERIC_FAULT,
    TRUNCATED_PRESETS,
    endless_server,
    endless_soap,
    soap_reply,
)

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-Pa55"


@pytest.fixture
async def camera() -> AsyncIterator[SimulatedCamera]:
    """A camera whose clock is two hours ahead and whose stream URI carries credentials."""
    async with SimulatedCamera(
        "Pont Battant",
        username="cityvisor",
        password=PASSWORD,
        clock_offset=7200,
        uri_credentials=True,
        ptz_travel_time=0.3,
    ) as sim:
        yield sim


def client(camera: SimulatedCamera, password: str = PASSWORD) -> OnvifClient:
    return OnvifClient(camera.host, camera.port, "cityvisor", password, timeout=5)


async def test_connect_signs_in_the_cameras_time_and_reads_its_identity(
    camera: SimulatedCamera,
) -> None:
    async with client(camera) as onvif:
        # The simulator refuses tokens more than five minutes off its clock:
        # getting here proves the offset correction.
        assert 7190 < onvif.clock_offset < 7210
        info = await onvif.device_information()
        assert (info.manufacturer, info.model, info.firmware) == (
            "Cityvisor",
            "SimCam PTZ-2",
            "4.3.1",
        )
        assert info.serial == camera.serial
        assert onvif.supports("ptz") and onvif.supports("events")
    assert camera.requests["GetSystemDateAndTime"] == 1


async def test_profiles_and_uris_come_without_credentials(camera: SimulatedCamera) -> None:
    async with client(camera) as onvif:
        profiles = await onvif.profiles()
        assert [(p.token, p.name, p.width, p.height, p.ptz) for p in profiles] == [
            ("Profile_1", "mainStream", 1920, 1080, True),
            ("Profile_2", "subStream", 640, 360, True),
        ]
        stream = await onvif.stream_uri("Profile_1")
        assert stream == f"rtsp://{camera.host}:554/Streaming/Profile_1"
        assert PASSWORD not in stream and "@" not in stream
        assert (await onvif.snapshot_uri("Profile_2")).endswith("/onvif/snapshot?profile=Profile_2")


async def test_snapshot_is_a_jpeg_of_the_camera_fetched_with_http_digest(
    camera: SimulatedCamera,
) -> None:
    from PIL import Image

    async with client(camera) as onvif:
        first = await onvif.snapshot("Profile_1")
        second = await onvif.snapshot("Profile_1")
    for jpeg in (first, second):
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        with Image.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG" and image.size == camera.image_size
    assert camera.requests["snapshot"] == 2
    # One challenge, then the digest middleware authenticates pre-emptively.
    assert camera.requests["snapshot_challenge"] == 1


async def test_snapshot_refuses_a_client_without_the_digest(camera: SimulatedCamera) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{camera.url}/onvif/snapshot?profile=Profile_1") as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Digest ")
    assert camera.requests["snapshot"] == 0


async def test_goto_preset_moves_the_head_until_it_stands_at_the_preset(
    camera: SimulatedCamera,
) -> None:
    async with client(camera) as onvif:
        presets = {p.name: p for p in await onvif.presets("Profile_1")}
        assert set(presets) == {"Home", "Entrance", "Street"}
        street = presets["Street"]
        assert (street.pan, street.tilt, street.zoom) == (-0.6, 0.1, 0.8)
        await onvif.goto_preset("Profile_1", street.token)
        status = await onvif.ptz_status("Profile_1")
        assert status.moving and not street.matches(status)
        for _ in range(50):  # a camera has no "arrived" event: one polls its status
            status = await onvif.ptz_status("Profile_1")
            if street.matches(status):
                break
            await anyio.sleep(0.1)
        assert not status.moving
        with pytest.raises(CameraFaultError) as error:
            await onvif.goto_preset("Profile_1", "no-such-preset")
        assert error.value.reason == "device_failure"


async def test_events_give_the_initial_state_then_motion_and_tamper_at_once(
    camera: SimulatedCamera,
) -> None:
    async with client(camera) as onvif, onvif.events(pull_timeout=5) as events:
        initial = [await events.receive() for _ in range(3)]
        assert {(e.kind, e.active, e.initial) for e in initial} == {
            ("motion", False, True),
            ("tamper", False, True),
            ("input", False, True),
        }
        for change, kind in ((camera.set_motion, "motion"), (camera.set_tamper, "tamper")):
            started = anyio.current_time()
            change(True)
            with anyio.fail_after(1):
                event = await events.receive()
            # The long poll returns as soon as the camera has the event.
            assert anyio.current_time() - started < 1
            assert (event.kind, event.active, event.initial) == (kind, True, False)
        camera.set_input("DI_1", True)
        event = await events.receive()
        assert (event.kind, event.source, event.active) == ("input", "DI_1", True)
    assert camera.requests["Unsubscribe"] == 1


async def test_the_subscription_is_renewed_before_it_expires(camera: SimulatedCamera) -> None:
    async with client(camera) as onvif, onvif.events(lifetime=1.5, pull_timeout=0.5) as events:
        for _ in range(3):
            await events.receive()
        await anyio.sleep(2.5)  # longer than the subscription's life: only renewals keep it
        camera.set_motion(True)
        with anyio.fail_after(2):
            event = await events.receive()
        assert event.kind == "motion" and event.active
    assert camera.requests["Renew"] >= 1


async def test_a_wrong_password_is_a_config_error_that_names_no_secret(
    camera: SimulatedCamera,
) -> None:
    onvif = client(camera, password="wrong-password")
    with pytest.raises(CameraAuthError) as error:
        async with onvif:
            pass
    assert error.value.reason == "config_error"
    assert error.value.retry_after is not None and error.value.retry_after >= 60
    assert "wrong-password" not in str(error.value) and "wrong-password" not in repr(onvif)
    assert camera.requests["unauthorized"] >= 1


async def test_a_camera_that_is_gone_is_a_communication_failure(camera: SimulatedCamera) -> None:
    async with client(camera) as onvif:
        await camera.stop()
        with pytest.raises(CameraError) as error:
            await onvif.device_information()
        assert error.value.reason == "comm_failure"
        assert not isinstance(error.value, CameraAuthError)
        await camera.start()  # same port: the client's next request finds it again
        assert (await onvif.device_information()).serial == camera.serial


async def test_the_simulator_answers_an_unsigned_request_with_the_onvif_fault(
    camera: SimulatedCamera,
) -> None:
    request = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><s:Body>'
        "<tds:GetDeviceInformation/></s:Body></s:Envelope>"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{camera.url}/onvif/device_service", data=request) as response,
    ):
        text = await response.text()
    assert response.status == 400
    assert "<s:Value>s:Sender</s:Value>" in text
    assert "<s:Value>ter:NotAuthorized</s:Value>" in text
    assert 'xmlns:ter="http://www.onvif.org/ver10/error"' in text


def test_strip_credentials() -> None:
    assert strip_credentials("rtsp://u:p@10.0.0.1:554/a?b=c") == "rtsp://10.0.0.1:554/a?b=c"
    assert strip_credentials("http://10.0.0.1/x") == "http://10.0.0.1/x"
    assert strip_credentials(None) == ""


# --------------------------------------------------------------------------- cameras off the book

BROKEN_PRESETS = {
    "truncated": TRUNCATED_PRESETS,
    "undeclared prefix": (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
        "<s:Body><tptz:GetPresetsResponse/></s:Body></s:Envelope>"
    ),
    "not soap": "<html><body>Internal error</body></html>",
    "empty": "",
    "invalid tag name": envelope(  # what zeep makes of an xsi:type with a space in it
        '<tptz:GetPresetsResponse><tptz:Preset token="p1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="tt:a b">'
        "<tt:Name>x</tt:Name></tptz:Preset></tptz:GetPresetsResponse>"
    ),
    "odd type": envelope(
        '<tptz:GetPresetsResponse><tptz:Preset token="p1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="tt:">'
        "<tt:Name>x</tt:Name></tptz:Preset></tptz:GetPresetsResponse>"
    ),
}


@pytest.mark.parametrize("broken", BROKEN_PRESETS)
async def test_a_reply_that_cannot_be_read_is_a_reply_error_and_the_camera_still_answers(
    camera: SimulatedCamera, broken: str
) -> None:
    async with client(camera) as onvif:
        camera.misbehave("GetPresets", soap_reply(BROKEN_PRESETS[broken]))
        with pytest.raises(CameraReplyError) as error:
            await onvif.presets("Profile_1")
        assert error.value.reason == "device_failure"
        assert f"GetPresets on {camera.host}:{camera.port}: " in str(error.value)
        assert "could not be read" in str(error.value)
        assert (await onvif.device_information()).serial == camera.serial
        camera.misbehave("GetPresets", None)
        assert [p.name for p in await onvif.presets("Profile_1")]


async def test_a_soap_reply_that_never_ends_is_given_up_at_its_limit(
    camera: SimulatedCamera,
) -> None:
    async with client(camera) as onvif:
        camera.misbehave("GetStatus", endless_soap)
        with pytest.raises(CameraReplyError, match=f"ran past the limit of {SOAP_BODY_LIMIT}"):
            await onvif.ptz_status("Profile_1")
        assert (await onvif.device_information()).serial == camera.serial


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(GENERIC_FAULT, "application/soap+xml"), ("<html>401 Unauthorized</html>", "text/html")],
)
async def test_a_401_is_a_credentials_problem_whatever_fault_comes_with_it(
    camera: SimulatedCamera, body: str, content_type: str
) -> None:
    camera.misbehave("GetDeviceInformation", soap_reply(body, 401, content_type))
    onvif = OnvifClient(
        camera.host, camera.port, "cityvisor", PASSWORD, timeout=5, auth_retry_after=120
    )
    with pytest.raises(CameraAuthError) as error:
        async with onvif:
            pass
    assert error.value.reason == "config_error" and error.value.retry_after == 120
    assert "refused the credentials" in str(error.value)


async def test_a_silent_camera_is_reported_with_the_real_deadline(
    camera: SimulatedCamera,
) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    camera.misbehave("GetSystemDateAndTime", silent)
    onvif = OnvifClient(camera.host, camera.port, "cityvisor", PASSWORD, timeout=0.2)
    with anyio.fail_after(5), pytest.raises(CameraError) as error:
        async with onvif:
            pass
    assert error.value.reason == "comm_failure"
    assert "no answer within 0.6 s" in str(error.value)  # three requests of 0.2 s each


@pytest.mark.parametrize("auth", ["digest", "digest-sha256"])
async def test_snapshots_follow_the_digest_algorithm_the_camera_asks_for(auth: str) -> None:
    async with (
        SimulatedCamera(username="cityvisor", password=PASSWORD, snapshot_auth=auth) as sim,
        client(sim) as onvif,
    ):
        for _ in range(2):
            assert (await onvif.snapshot("Profile_1"))[:2] == b"\xff\xd8"
        assert onvif.snapshot_auth is not None and onvif.snapshot_auth.scheme == "digest"
    assert sim.requests["snapshot"] == 2 and sim.requests["snapshot_challenge"] == 1


async def test_snapshot_basic_over_plain_http_is_a_config_error_unless_allowed() -> None:
    async with SimulatedCamera(
        username="cityvisor", password=PASSWORD, snapshot_auth="basic"
    ) as sim:
        async with client(sim) as onvif:
            with pytest.raises(CameraAuthError) as error:
                await onvif.snapshot("Profile_1")
            assert error.value.reason == "config_error"
            assert "allow_basic_over_http" in str(error.value) and PASSWORD not in str(error.value)
        assert sim.requests["snapshot"] == 0
        allowed = OnvifClient(
            sim.host, sim.port, "cityvisor", PASSWORD, timeout=5, allow_basic_over_http=True
        )
        async with allowed:
            for _ in range(2):
                assert (await allowed.snapshot("Profile_1"))[:2] == b"\xff\xd8"
        assert sim.requests["snapshot"] == 2


async def test_a_snapshot_that_never_ends_stops_at_the_limit_in_bounded_memory(
    camera: SimulatedCamera,
) -> None:
    limit = 4 * 2**20
    async with endless_server() as url:
        uri = f"<trt:MediaUri><tt:Uri>{url}/snapshot.jpg</tt:Uri></trt:MediaUri>"
        camera.misbehave(
            "GetSnapshotUri",
            soap_reply(envelope(f"<trt:GetSnapshotUriResponse>{uri}</trt:GetSnapshotUriResponse>")),
        )
        onvif = OnvifClient(
            camera.host, camera.port, "cityvisor", PASSWORD, timeout=5, snapshot_limit=limit
        )
        async with onvif:
            await onvif.snapshot_uri("Profile_1")  # the WSDLs and the URI, before measuring
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                with pytest.raises(CameraReplyError, match=f"ran past the limit of {limit}"):
                    await onvif.snapshot("Profile_1")
                peak = tracemalloc.get_traced_memory()[1] - baseline
            finally:
                tracemalloc.stop()
    print(f"endless snapshot, limit {limit} B: peak {peak} B ({peak - limit} B over the limit)")
    assert peak < limit + 768 * 1024
