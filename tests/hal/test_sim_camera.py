"""The simulated camera's pictures: the name with its accents, the time in the site's zone."""

from __future__ import annotations

import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from cityvisor.hal.sim.camera import SimulatedCamera, _font, _render, caption

pytestmark = pytest.mark.anyio


def test_the_pictures_font_draws_french_accents():
    font = _font(20)
    # DejaVu Sans has the accented letters: "é" is an "e" with an accent above it,
    # not the "?" or the blank box of a font without them.
    assert font.getbbox("é")[1] < font.getbbox("e")[1]
    assert font.getbbox("é") != font.getbbox("?")
    assert font.getlength("Caméra") == pytest.approx(font.getlength("Camera"), rel=0.05)


def test_the_time_is_written_in_the_cameras_zone_with_its_name():
    moment = dt.datetime(2026, 12, 2, 14, 16, tzinfo=dt.UTC)
    assert caption(moment.astimezone(ZoneInfo("Europe/Paris"))) == "2026-12-02 15:16:00 CET"
    summer = dt.datetime(2026, 7, 14, 10, 0, tzinfo=dt.UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert caption(summer) == "2026-07-14 12:00:00 CEST"


def test_a_picture_is_a_jpeg_of_the_configured_size():
    moment = dt.datetime(2026, 12, 2, 14, 16, tzinfo=ZoneInfo("Europe/Paris"))
    picture = Image.open(io.BytesIO(_render("Caméra Hôtel de ville", moment, (320, 180))))
    assert picture.format == "JPEG" and picture.size == (320, 180)


async def test_a_camera_set_to_the_sites_zone_burns_its_time_into_its_frames():
    async with SimulatedCamera("Caméra", time_zone="Europe/Paris") as camera:
        assert camera.time_zone == ZoneInfo("Europe/Paris")
        first = await camera.frame()
        assert first.startswith(b"\xff\xd8")  # a JPEG, rendered in the camera's zone
    with pytest.raises(Exception, match="No time zone found"):
        SimulatedCamera("Caméra", time_zone="Mars/Olympus")
