"""An RS-485 line without hardware for the OSDP tests: a socat pty pair, readers on one end.

``osdp_line`` starts socat and keeps a *tap* open on the readers' end: the
test writes noise into the line through it (what a bad cable or a second
talker does), and killing socat cuts the line. ``no_osdp_threads`` fails a
test that leaves a libosdp refresh thread or a simulator thread running.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import pytest

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
"""The secure channel key of the test readers."""


@dataclass
class OsdpLine:
    """The two ends of a simulated line: ``panel`` for the control panel, ``readers`` for the PDs."""

    panel: str
    readers: str
    process: anyio.abc.Process
    tap: int

    def noise(self, data: bytes) -> None:
        """Put raw bytes on the line, as heard by the control panel."""
        os.write(self.tap, data)

    async def cut(self) -> None:
        """Cut the line (socat dies: the control panel's port reports an error)."""
        self.process.terminate()
        await self.process.wait()


@pytest.fixture
async def osdp_line(tmp_path: Path) -> AsyncIterator[OsdpLine]:
    """A socat pty pair wired as one RS-485 line."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run the apt-get line of .ci/run")
    panel, readers = str(tmp_path / "panel"), str(tmp_path / "readers")
    process = await anyio.open_process(
        [socat, *(f"pty,raw,echo=0,link={end}" for end in (panel, readers))]
    )
    tap = -1
    try:
        with anyio.fail_after(5):  # socat creates the links once both ptys are open
            for end in (panel, readers):
                while not await anyio.Path(end).exists():  # noqa: ASYNC110  (no event to wait on)
                    await anyio.sleep(0.02)
        tap = os.open(readers, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        yield OsdpLine(panel, readers, process, tap)
    finally:
        if tap >= 0:
            os.close(tap)
        if process.returncode is None:
            process.terminate()
        with anyio.move_on_after(5, shield=True):
            await process.wait()
        await process.aclose()


def osdp_threads() -> list[str]:
    """Names of the live threads that libosdp's refresh loops and the simulators run in."""
    return [t.name for t in threading.enumerate() if t.name.startswith("osdp")]


@pytest.fixture(autouse=True)
def no_osdp_threads() -> Iterator[None]:
    """Fail the test if it leaves an OSDP thread behind."""
    yield
    assert osdp_threads() == [], "a control panel or simulator thread outlived its test"
