"""Login rate limits: failed attempts per user name and per client address, in sliding windows."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

# --------------------------------------------------------------------------- rate limits


class _Window:
    """Failed attempts of one key within the sliding window."""

    __slots__ = ("failures", "reported")

    def __init__(self) -> None:
        # Attempts are refused once a key reaches its limit, so this never fills up.
        self.failures: deque[float] = deque(maxlen=256)
        self.reported = False


class LoginRateLimiter:
    """Refuses login attempts after too many failures, per user name and per client address.

    At most ``per_user`` failed attempts for one name and ``per_address``
    from one address within ``window`` seconds; past that, attempts are
    refused *before* the password is checked (no hashing cost) until the
    oldest failure leaves the window. A success clears the name's count.
    Memory is bounded: at most ``max_keys`` names and as many addresses are
    tracked, the least recently failing forgotten first.
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 10_000,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.max_keys = max_keys
        self._users: OrderedDict[str, _Window] = OrderedDict()
        self._addresses: OrderedDict[str, _Window] = OrderedDict()
        self.refused = 0
        """Attempts refused by the limiter since start (for metrics)."""

    def _live(self, table: OrderedDict[str, _Window], key: str, now: float) -> _Window | None:
        entry = table.get(key)
        if entry is None:
            return None
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        if not entry.failures:
            del table[key]
            return None
        return entry

    def retry_after(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds until an attempt for ``user`` from ``address`` is allowed (0: allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for table, key, limit in (
            (self._users, user.lower(), self.per_user),
            (self._addresses, address, self.per_address),
        ):
            entry = self._live(table, key, now)
            if entry is not None and len(entry.failures) >= limit:
                wait = max(wait, entry.failures[0] + self.window - now)
        return wait

    def refuse(self, user: str, address: str) -> bool:
        """Count a refused attempt; True the first time in a window (journal it once)."""
        self.refused += 1
        first = False
        for table, key in ((self._users, user.lower()), (self._addresses, address)):
            entry = table.get(key)
            if entry is not None and not entry.reported:
                entry.reported = True
                first = True
        return first

    def failed(self, user: str, address: str, now: float | None = None) -> None:
        """Record a failed attempt."""
        now = time.monotonic() if now is None else now
        for table, key in ((self._users, user.lower()), (self._addresses, address)):
            entry = self._live(table, key, now) or _Window()
            if not entry.failures:
                table[key] = entry
            entry.failures.append(now)
            table.move_to_end(key)
            while len(table) > self.max_keys:
                table.popitem(last=False)

    def succeeded(self, user: str) -> None:
        """Forget the failures of a name that just logged in."""
        self._users.pop(user.lower(), None)
