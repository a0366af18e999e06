"""The OSDP HAL: frames, cards, and libosdp over a socat line against the simulated readers."""

from __future__ import annotations

import sys

import anyio
import pytest

from cityvisor.hal.osdp import (
    CardRead,
    InputStatus,
    KeyPress,
    LineFilter,
    LocalStatus,
    OsdpBus,
    OsdpConfigError,
    OsdpError,
    Reader,
    ReaderEvent,
    crc16,
    wiegand26,
)
from cityvisor.hal.sim.osdp_reader import ReaderLine, SimulatedReader
from tests.hal import osdp_fixtures
from tests.hal.osdp_fixtures import KEY, OsdpLine

osdp_line = osdp_fixtures.osdp_line
no_osdp_threads = osdp_fixtures.no_osdp_threads

pytestmark = pytest.mark.anyio

# Frames libosdp 3.2.9 exchanged on a real run: a CP's POLL and a PD's PDID reply.
POLL = bytes.fromhex("530109000461006023")
PDID = bytes.fromhex("538114000445bebafe0101afbeaddeaddead89fa")


def frame(address: int, payload: bytes, *, good: bool = True) -> bytes:
    """A reply frame (CRC mode) from ``address`` carrying ``payload`` after the control byte."""
    body = (
        bytes([0x53, 0x80 | address]) + (7 + len(payload)).to_bytes(2, "little") + b"\x04" + payload
    )
    crc = crc16(body) ^ (0 if good else 0x5A5A)
    return body + crc.to_bytes(2, "little")


async def next_event(reader: Reader, kind: type[ReaderEvent], timeout: float = 5.0) -> ReaderEvent:
    """The next event of ``kind`` from the reader (others are skipped)."""
    with anyio.fail_after(timeout):
        async for event in reader.events:
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


async def wait_sim(reader: SimulatedReader, predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait (in a worker thread) until the simulated reader's state satisfies ``predicate``."""
    assert await anyio.to_thread.run_sync(reader.wait_until, predicate, timeout)


# --------------------------------------------------------------------------- frames and cards


def test_crc16_is_the_one_libosdp_puts_on_its_frames() -> None:
    for sent in (POLL, PDID):
        assert crc16(sent[:-2]) == int.from_bytes(sent[-2:], "little")


def test_a_26_bit_card_round_trips_with_its_parity_and_others_read_as_numbers() -> None:
    data, bits = wiegand26(12, 3456)
    assert CardRead(1, 0, "wiegand", data, bits).number == "12:3456"
    broken = bytes([data[0] ^ 0x80]) + data[1:]  # a flipped parity bit: not an H10301 card
    assert CardRead(1, 0, "wiegand", broken, bits).number.isdigit()
    assert CardRead(1, 0, "raw", b"\x12\x34", 16).number == str(0x1234)
    assert CardRead(1, 0, "ascii", b"A1B2", 4).number == "A1B2"
    with pytest.raises(ValueError, match="facility"):
        wiegand26(256, 1)


def test_the_line_filter_passes_good_replies_and_counts_what_it_drops() -> None:
    line = LineFilter(frozenset({1}), baudrate=9600)
    good = frame(1, b"\x40")
    assert line.feed(b"\xff" + good, 0.0) == good  # a mark before SOM is not noise
    assert line.feed(b"line noise" + frame(1, b"\x40", good=False) + good, 1.0) == good
    assert line.counters.bad_crc == 1 and line.counters.noise_bytes >= len(b"line noise")
    assert line.feed(POLL + frame(9, b"\x40"), 2.0) == b""  # a command, an unknown reader
    assert line.counters.unexpected == 2
    assert line.feed(b"\x53\x81\xff\x7f", 3.0) == b""  # an impossible length
    assert line.counters.malformed == 1
    assert line.feed(good[:6], 4.0) == b""  # the rest never comes...
    assert line.feed(b"", 4.05) == b"" and line.counters.truncated == 0
    assert line.feed(good, 5.0) == good  # ...and the next frame is still found
    assert line.counters.truncated == 1
    assert line.counters.frames == 3 and line.counters.errors == 5


def test_a_frame_announcing_more_than_comes_is_given_up_when_a_whole_reply_follows() -> None:
    line = LineFilter(frozenset({1}), baudrate=9600)
    truncated = b"\x53\x81\x28\x00\x04\x40\x00"  # announces 40 bytes; 3 follow the header
    good = frame(1, b"\x40")
    # The reply right behind it is passed at once, not at the 40-byte frame's deadline.
    assert line.feed(truncated + good, 0.0) == good
    assert line.counters.truncated == 1 and not line.pending
    # A reply arriving in pieces behind it is passed as soon as its last byte is in.
    assert line.feed(truncated + good[:5], 1.0) == b""
    assert line.feed(good[5:], 1.001) == good
    assert line.counters.truncated == 2 and line.counters.frames == 2
    # A SOM and a plausible header inside a long frame's payload do not cut it short.
    payload = b"\x40" + b"\x53\x81\x09\x00\x04\x60" + bytes(30)
    long = frame(1, payload)
    assert line.feed(long[:20], 2.0) == b""
    assert line.feed(long[20:], 2.01) == long
    assert line.counters.truncated == 2 and line.counters.frames == 3


# --------------------------------------------------------------------------- over a serial line


async def test_two_readers_share_a_line_with_the_secure_channel(osdp_line: OsdpLine) -> None:
    bus = OsdpBus(osdp_line.panel)
    with ReaderLine(osdp_line.readers) as line:
        entrance, garage = line.add_reader(1, scbk=KEY), line.add_reader(2, scbk=KEY)
        async with anyio.create_task_group() as tg:
            # Doors start together: they share one control panel build.
            readers: dict[int, Reader] = {}

            async def attach(address: int, *, task_status: anyio.abc.TaskStatus[None]) -> None:
                async with bus.reader(address, scbk=KEY) as reader:
                    readers[address] = reader
                    task_status.started()
                    await anyio.sleep_forever()

            await tg.start(attach, 1)
            await tg.start(attach, 2)
            assert await readers[1].wait_online(5) and await readers[2].wait_online(5)
            assert readers[1].secure and readers[2].secure

            garage.set_door(True)
            garage.set_tamper(True)
            garage.press_keys("1234#")
            garage.present_card("12:3456")
            seen: list[ReaderEvent] = []
            with anyio.fail_after(5):
                async for event in readers[2].events:
                    seen.append(event)
                    if isinstance(event, CardRead):
                        break
            assert InputStatus(2, (True,)) in seen and LocalStatus(2, True, False) in seen
            assert KeyPress(2, 0, "1234#") in seen
            card = seen[-1]
            assert isinstance(card, CardRead) and (card.number, card.bits) == ("12:3456", 26)

            await readers[1].output(0, pulse=0.5)
            await readers[1].led("green", seconds=1)
            await readers[1].buzzer(repeat=2)
            await wait_sim(entrance, lambda r: r.relay_pulses == 1 and r.leds == ["green"])
            await wait_sim(entrance, lambda r: not r.relay and r.led == "off" and r.beeps == 1)
            assert garage.relay_pulses == 0 and garage.leds == []
            tg.cancel_scope.cancel()
    assert bus.counters.errors == 0 and bus.counters.frames > 10


async def test_a_reader_with_another_key_is_refused(osdp_line: OsdpLine) -> None:
    bus = OsdpBus(osdp_line.panel)
    with ReaderLine(osdp_line.readers) as line:
        line.add_reader(1, scbk=bytes(16))
        async with bus.reader(1, scbk=KEY) as reader:
            with pytest.raises(OsdpConfigError, match="secure channel"):
                await reader.wait_online(5)
            assert not reader.online


async def test_garbage_on_the_line_is_dropped_and_counted_and_polling_goes_on(
    osdp_line: OsdpLine,
) -> None:
    bus = OsdpBus(osdp_line.panel, baudrate=115200, event_buffer=8)
    with ReaderLine(osdp_line.readers) as line:
        door = line.add_reader(3, scbk=KEY)
        async with bus.reader(3, scbk=KEY) as reader:
            assert await reader.wait_online(5)
            osdp_line.noise(b"\x00\x13garbage\xfe")
            osdp_line.noise(frame(3, b"\x40", good=False))  # a corrupt reply from our own reader
            osdp_line.noise(frame(3, b"\x40")[:5])  # and the start of one that never ends
            with anyio.fail_after(5):
                # Cut short by the next reply, a frame is a bad CRC; on a quiet line, truncated.
                while bus.counters.bad_crc + bus.counters.truncated < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # (a counter has no event to wait on)
            assert bus.counters.noise_bytes >= len(b"\x00\x13garbage\xfe")
            door.present_card("7:77")
            assert (await next_event(reader, CardRead)).number == "7:77"  # type: ignore[union-attr]
            assert reader.online

            # A driver that stops reading loses events, counted; the line is not held up.
            for card in range(12):
                door.present_card(f"7:{card}")
            with anyio.fail_after(5):
                while reader.dropped == 0:  # noqa: ASYNC110  (a counter has no event)
                    await anyio.sleep(0.05)
            assert bus.counters.events_dropped == reader.dropped and reader.online


async def test_an_unplugged_reader_goes_offline_and_is_retried_at_once_when_reattached(
    osdp_line: OsdpLine,
) -> None:
    bus = OsdpBus(osdp_line.panel)
    with ReaderLine(osdp_line.readers) as line:
        door = line.add_reader(1)
        async with bus.reader(1) as reader:
            assert await reader.wait_online(5) and not reader.secure
            door.unplug()
            with anyio.fail_after(15):  # libosdp gives up after 8 unanswered probes
                while reader.online:
                    await reader._changed.wait()
            door.plug()
            with pytest.raises(OsdpError, match="offline"):
                await reader.led("red")
        # libosdp would wait 5 minutes before its next try: attaching again retries now.
        async with bus.reader(1) as reader:
            assert await reader.wait_online(5)


async def test_a_cut_line_fails_every_reader_and_a_missing_port_does_not_open(
    osdp_line: OsdpLine,
) -> None:
    bus = OsdpBus(osdp_line.panel)
    with ReaderLine(osdp_line.readers) as line:
        line.add_reader(1)
        async with bus.reader(1) as reader:
            assert await reader.wait_online(5)
            await osdp_line.cut()
            with anyio.fail_after(5):
                while not reader.failure:
                    await reader._changed.wait()
            assert not reader.online and "failed" in reader.failure
    with pytest.raises(OsdpError, match="cannot open"):
        async with OsdpBus(osdp_line.panel + "-missing").reader(1):
            pass


async def test_cityvisor_sim_osdp_serves_readers_on_a_pty_it_prints() -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "cityvisor", "sim", "osdp", "--address", "4", "--key", KEY.hex()]
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):  # the cityvisor command imports every family's CLI first
            printed = (await process.stdout.receive()).decode()
        assert printed.startswith("OSDP readers [4] on /dev/pts/"), printed
        bus = OsdpBus(printed.split(" on ")[1].strip())
        async with bus.reader(4, scbk=KEY) as reader:
            assert await reader.wait_online(5) and reader.secure
    finally:
        process.terminate()
        with anyio.move_on_after(5, shield=True):
            assert await process.wait() == 0
        await process.aclose()
