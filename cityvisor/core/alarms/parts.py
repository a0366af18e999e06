"""What the AlarmManager's parts share: its state, and the methods they call on each other.

:class:`~cityvisor.core.alarms.manager.AlarmManager` is assembled from one
class per responsibility (journaling, operator actions, maintenance windows,
flood detection and KPIs), each in its own module. They all run on one
object, so each may use the manager's state and the methods another part
defines. This base class declares that shared surface for the type checker
only: at run time it is empty, and every method is the one its part defines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .model import Alarm, Transition

if TYPE_CHECKING:
    from ..points import PointDB
    from ..store import Store
    from ..users import Role, User
    from .model import MaintenanceWindow, Procedure
    from .subscriptions import AlarmSubscription


class _Pending:
    """A transition waiting to be journaled, then published."""

    __slots__ = ("alarm", "done", "error", "transition")

    def __init__(self, transition: Transition, alarm: Alarm | None) -> None:
        self.transition = transition
        self.alarm = alarm
        self.done: anyio.Event | None = None
        self.error: BaseException | None = None


class _Flood:
    """Raise rate and flood state of one zone."""

    __slots__ = ("active", "floods", "raises", "since", "total_ms")

    def __init__(self) -> None:
        self.raises: deque[int] = deque()
        self.active = False
        self.since: int | None = None
        self.total_ms = 0
        self.floods = 0


class _AlarmManagerParts:
    """The state and the cross-part methods of the AlarmManager, declared for type checking."""

    if TYPE_CHECKING:
        points: PointDB
        store: Store
        on_transition: Callable[[Alarm, Transition], None] | None
        flood_start: int
        flood_end: int
        flood_window: float
        max_shelve: float
        stale_after: float
        chatter_count: int
        chatter_window: float
        kpi_horizon: float
        procedures: dict[str, Procedure]
        write_errors: int
        _alarms: dict[str, Alarm]
        _by_point: dict[str, list[Alarm]]
        _by_device: dict[str, list[Alarm]]
        _communication: dict[str, Alarm]
        _windows: dict[str, MaintenanceWindow]
        _open_windows: set[str]
        _expired_windows: set[str]
        _pending: list[_Pending]
        _in_flight: list[_Pending]
        _timers: list[tuple[float, int, str, Any, int]]
        _timer_seq: int
        _subscriptions: list[AlarmSubscription]
        _flood: dict[str, _Flood]
        _raise_log: deque[tuple[int, str]]
        _saved: dict[str, dict[str, Any]] | None
        _wake: anyio.Event | None
        _running: bool

        # manager.py
        def get(self, alarm_id: str) -> Alarm: ...
        def counts_by_priority(
            self, zones: Callable[[str], bool] | None = None
        ) -> dict[str, dict[str, int]]: ...
        def _transit(
            self,
            alarm: Alarm,
            event: str,
            *,
            user: str | None = None,
            comment: str = "",
            data: Mapping[str, Any] | None = None,
            ts: int | None = None,
        ) -> list[Transition]: ...
        def _record(self, transition: Transition, alarm: Alarm | None) -> None: ...
        def _wake_up(self) -> None: ...
        def _schedule(self, delay: float, kind: str, target: Any, generation: int) -> None: ...
        def _authorise(self, user: User, alarm_zone: str, role: Role, action: str) -> None: ...
        def _ready(self) -> None: ...

        # journal.py
        async def _flush(self) -> None: ...
        async def _commit(self) -> None: ...
        def _restore_one(self, alarm: Alarm) -> None: ...
        def _reveal_if_unseen(self, alarm: Alarm) -> None: ...
        def _restore_hiding(self, alarm: Alarm) -> None: ...

        # actions.py
        def _unshelve(
            self, alarm: Alarm, user: str | None, comment: str, expired: bool = False
        ) -> None: ...

        # maintenance.py
        def _schedule_window(self, window: MaintenanceWindow) -> bool: ...
        async def _delete_expired_windows(self) -> None: ...
        def _refresh_maintenance(self, window: MaintenanceWindow) -> None: ...

        # kpis.py
        def _count_raise(self, alarm: Alarm, ts: int) -> None: ...
        def _check_floods(self) -> None: ...
