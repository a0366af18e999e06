"""Points: the live values of the city's equipment, and the database that holds them.

A *point* is one live value of one piece of equipment (a lamp's dimming level,
a port's link state). Its identity and meaning are declared once in a
:class:`PointSpec` by the device type; at run time the :class:`PointDB` keeps
its current :class:`PointValue` (value, :class:`Quality`, source and received
timestamps) and tells subscribers what changed.

Data flows one way through here: drivers call :meth:`PointDB.update`;
synchronous *listeners* (the alarm manager, the history recorder) see every
accepted change in the same call, and *subscribers* (browsers, rules) receive
batches through bounded queues (awaited as anyio events).  A subscriber that falls
behind is never allowed to block a driver or to grow memory: it is marked as
having lost updates and, as soon as it has room again, receives a
:class:`Resync` carrying a fresh snapshot of everything it watches.

Timestamps are UTC epoch milliseconds (``int``) everywhere.

Where each part lives: ``values.py`` (:class:`PointValue`, :func:`now_ms`),
``quality.py`` (:class:`Quality`), ``specs.py`` (:class:`PointSpec`, data
types, scaling, deadbands), ``subscriptions.py`` (:class:`Subscription`, :class:`Subscribing`, and the
:class:`Watch` that subscriptions to the same patterns share), ``index.py``
(the trie over id levels that patterns are matched against) and ``database.py`` (:class:`Point`, :class:`PointDB`).
"""

from __future__ import annotations

from .database import Listener, Point, PointDB, UnknownPointError
from .quality import Quality, QualityStatus
from .specs import DataType, Deadband, PointSpec, Scaling
from .subscriptions import Batch, Resync, Snapshot, Subscribing, Subscription, Watch
from .values import PointValue, now_ms

__all__ = [
    "Batch",
    "DataType",
    "Deadband",
    "Listener",
    "Point",
    "PointDB",
    "PointSpec",
    "PointValue",
    "Quality",
    "QualityStatus",
    "Resync",
    "Scaling",
    "Snapshot",
    "Subscribing",
    "Subscription",
    "UnknownPointError",
    "Watch",
    "now_ms",
]
