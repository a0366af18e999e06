"""The WebSocket's messages as text, each value and message encoded once for every client.

Screens with the same patterns receive the same value objects, the same
batch lists and the same snapshot lists from the point database: what is
encoded for the first is kept, keyed by identity, and reused for the
others. Every cache here is bounded, and the large ones live only as long
as their use (a snapshot's texts while a client sends it).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from typing import Any

from ..core.points import PointValue, Snapshot

__all__ = ["SNAPSHOT_CHUNK", "encode_point"]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


class _PointTexts:
    """Point values as JSON text, each encoded once however many clients receive it.

    Every subscriber of a point gets the *same* immutable value object in its
    batch, so the cache is keyed by identity (no hashing of values): two
    generations, each holding its values so that an id is never reused while
    cached. Subscribers with the same patterns even get equal *batches* at
    each flush: the joined text of a recent batch is reused after a C-speed
    list comparison.

    The screens of one delivery encode its values within milliseconds of
    each other, so a generation lasts :data:`ROTATE_SECONDS` (or
    ``generation_size`` values in a burst): the values are let go a fraction
    of a second after their delivery, before the garbage collector's older
    generations would have to walk them (decision 0022). A screen that is
    behind encodes its own.
    """

    def __init__(
        self, generation_size: int = 50_000, batches: int = 64, rotate: float | None = None
    ) -> None:
        self.generation_size = generation_size
        self.rotate = ROTATE_SECONDS if rotate is None else rotate
        # Values and texts in parallel dicts, not a tuple per entry: a tuple
        # holding a value would be one more object per change for the
        # garbage collector to walk.
        self._new: tuple[dict[int, PointValue], dict[int, str]] = ({}, {})
        self._old: tuple[dict[int, PointValue], dict[int, str]] = ({}, {})
        self._batches: dict[tuple[int, int, int], tuple[list[PointValue], str]] = {}
        self._old_batches: dict[tuple[int, int, int], tuple[list[PointValue], str]] = {}
        self._max_batches = batches
        self._rotated = time.monotonic()

    def clear(self) -> None:
        """Forget every text."""
        self._new, self._old = ({}, {}), ({}, {})
        self._batches, self._old_batches = {}, {}

    def _rotate(self) -> None:
        self._old, self._new = self._new, ({}, {})
        self._old_batches, self._batches = self._batches, {}
        self._rotated = time.monotonic()

    def one(self, value: PointValue) -> str:
        """The JSON text of one value."""
        key = id(value)
        values, texts = self._new
        if values.get(key) is value:
            return texts[key]
        old_values, old_texts = self._old
        text = old_texts[key] if old_values.get(key) is value else _dumps(value.as_json())
        values[key] = value
        texts[key] = text
        if len(values) >= self.generation_size:
            self._rotate()
        return text

    def joined(self, values: list[PointValue]) -> str:
        """The values' texts joined by commas, shared between equal batches."""
        if not values:
            return ""
        if time.monotonic() - self._rotated >= self.rotate:
            self._rotate()
        key = (len(values), id(values[0]), id(values[-1]))
        cached = self._batches.get(key) or self._old_batches.get(key)
        # List equality compares identical items by identity first: a C loop.
        if cached is not None and cached[0] == values:
            return cached[1]
        text = ",".join(map(self.one, values))
        self._batches[key] = (values, text)
        if len(self._batches) > self._max_batches:
            self._rotate()
        return text


ROTATE_SECONDS = 0.1
"""How long the texts of changes are kept for other screens (two generations of it at most)."""


_point_texts = _PointTexts()


def encode_point(value: PointValue) -> str:
    """A point value as JSON text (shared with every other client receiving it)."""
    return _point_texts.one(value)


class _ChangesMessages:
    """``changes`` messages as UTF-8 bytes, built once for every client that sends the same one.

    Screens with the same patterns receive the same batch list at each
    delivery, and nearly all of them the same subscription number: the
    message is joined and encoded by the first and sent as it is by the
    others (each entry holds its list, so its id is not reused meanwhile).
    """

    def __init__(self, maxsize: int = 16) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[int, int], tuple[list[PointValue], bytes]] = OrderedDict()

    def get(self, generation: int, values: list[PointValue]) -> bytes:
        key = (id(values), generation)
        found = self._items.get(key)
        if found is not None and found[0] is values:
            return found[1]
        text = f'{{"type":"changes","sub":{generation},"points":[' + _point_texts.joined(values)
        data = (text + "]}").encode()
        self._items[key] = (values, data)
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return data

    def clear(self) -> None:
        self._items.clear()


_changes_messages = _ChangesMessages()

SNAPSHOT_CHUNK = 1000
"""Point values in one snapshot or resync message, at most (a few ms to encode)."""


class _SnapshotTexts:
    """The chunks of a shared snapshot as JSON text, each encoded once for every client.

    Screens with the same patterns receive the *same* snapshot list from the
    point database; its chunks are encoded by the first client that sends
    them and reused by the others. The texts are kept only while a client is
    sending that snapshot (each entry holds its list, so its id is not
    reused meanwhile): a city-wide snapshot is tens of megabytes of text,
    which must not outlive the screens that needed it.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[Sequence[PointValue], list[str | None], list[int]]] = {}

    def acquire(self, snapshot: Sequence[PointValue]) -> None:
        """A client starts sending ``snapshot``."""
        entry = self._items.get(id(snapshot))
        if entry is None or entry[0] is not snapshot:
            count = max(1, -(-len(snapshot) // SNAPSHOT_CHUNK))
            self._items[id(snapshot)] = (snapshot, [None] * count, [1])
        else:
            entry[2][0] += 1

    def release(self, snapshot: Sequence[PointValue]) -> None:
        """A client is done with ``snapshot``: its texts go with the last one."""
        entry = self._items.get(id(snapshot))
        if entry is not None and entry[0] is snapshot:
            entry[2][0] -= 1
            if entry[2][0] <= 0:
                del self._items[id(snapshot)]

    def __len__(self) -> int:
        return len(self._items)

    def chunk(self, snapshot: Sequence[PointValue], n: int) -> str:
        """The values of chunk ``n`` of ``snapshot``, joined by commas."""
        entry = self._items.get(id(snapshot))
        if entry is None or entry[0] is not snapshot:
            # Not acquired (a benchmark, a test): encode without keeping it.
            return _dumps(_part(snapshot, n))[1:-1]
        texts = entry[1]
        text = texts[n]
        if text is None:
            text = texts[n] = _dumps(_part(snapshot, n))[1:-1]
        return text


_snapshot_texts = _SnapshotTexts()


def _part(snapshot: Sequence[PointValue], n: int) -> list[dict[str, Any]]:
    """Chunk ``n`` of ``snapshot`` as JSON-ready dicts (from the database's states when it can)."""
    start, stop = n * SNAPSHOT_CHUNK, (n + 1) * SNAPSHOT_CHUNK
    if isinstance(snapshot, Snapshot):
        return snapshot.as_json(start, stop)
    return [v.as_json() for v in snapshot[start:stop]]


def _snapshot_messages(
    kind: str, generation: int, snapshot: Sequence[PointValue], lost: int = -1
) -> Generator[str, None, None]:
    """A snapshot (or resync) as messages of at most :data:`SNAPSHOT_CHUNK` values, encoded lazily.

    The first message is the one a client always got (with ``lost`` for a
    resync); when more follow, every message but the last says ``"more":
    true`` and the ones after the first say ``"continued": true``: the
    client replaces its values at the first and shows them after the last.
    """
    count = max(1, -(-len(snapshot) // SNAPSHOT_CHUNK))
    _snapshot_texts.acquire(snapshot)
    try:
        for n in range(count):
            head = f'{{"type":"{kind}","sub":{generation},'
            if lost >= 0 and n == 0:
                head += f'"lost":{lost},'
            if n:
                head += '"continued":true,'
            if n < count - 1:
                head += '"more":true,'
            yield head + '"points":[' + _snapshot_texts.chunk(snapshot, n) + "]}"
    finally:
        _snapshot_texts.release(snapshot)


class _SharedText:
    """Alarm messages encoded once for every client (keyed by the event object)."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[int, tuple[object, str]] = OrderedDict()

    def get(self, key: object, build: Any) -> str:
        found = self._items.get(id(key))
        if found is not None and found[0] is key:
            return found[1]
        text: str = build()
        # Keep the key object alive with its text, so its id is not reused meanwhile.
        self._items[id(key)] = (key, text)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return text


_alarm_texts = _SharedText()
