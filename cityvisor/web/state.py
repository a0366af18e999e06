"""The state the web handlers share, and the application keys they read it from.

:func:`cityvisor.web.app.build_app` builds one :class:`WebState` and stores
it, with the hub, under :data:`STATE` and :data:`HUB`; the handlers (the API's
resource modules, the WebSocket, the metrics page) receive what they need
from ``request.app``, so none of them imports the application that mounts
them.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import Accounts, Sessions
from .fanout import Fanout
from .guard import ConnectionGuard
from .logins import LoginRateLimiter
from .routing import Routes

if TYPE_CHECKING:
    from ..core.hub import Hub
    from .ws import Client

__all__ = [
    "API",
    "HUB",
    "STATE",
    "UpdateRate",
    "WebState",
    "content_security_policy",
    "tile_source",
]


class WebState:
    """What the handlers share: the hub, accounts, sessions, limits, WebSocket clients, counters."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = hub.config.web
        self.accounts = Accounts(hub.store, hub.config.user_list())
        self.sessions = Sessions(hub.store, self.accounts, self.settings.session_lifetime)
        self.limiter = LoginRateLimiter()
        self.clients: set[Client] = set()
        """Connected WebSocket clients."""
        self.max_clients = 500
        self.max_clients_per_session = 16
        self.ws_buffer = 16
        """Undelivered point batches a WebSocket client may have before it is re-synced."""
        self.send_timeout = self.settings.ws_send_timeout
        """Seconds one WebSocket send may wait for a client before the client is dropped."""
        self.heartbeat = self.settings.ws_heartbeat
        """Seconds between WebSocket pings; no pong within half of it drops the client."""
        self.close_grace = 2.0
        """Seconds a dropped WebSocket client's close frame gets before the connection is cut."""
        self.counters: Counter[str] = Counter()
        """Events for metrics: logins, failures, WebSocket resyncs and drops, errors."""
        self.fanout = Fanout(self.counters)
        """The WebSocket senders shared by screens of one watch (run by the server)."""
        self.rate = UpdateRate()
        self.cookie_name = (
            "__Host-cityvisor_session" if self.settings.secure_cookies else "cityvisor_session"
        )
        self.csp = content_security_policy(self.settings.tile_url)
        self.guard: ConnectionGuard | None = None
        """The server's connection guard, once it listens (connections per address)."""


class UpdateRate:
    """Point changes per second over the last minute, sampled every few seconds."""

    def __init__(self, samples: int = 13) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=samples)

    def sample(self, changes: int, now: float | None = None) -> None:
        """Record the point database's change counter."""
        self._samples.append((time.monotonic() if now is None else now, changes))

    @property
    def per_second(self) -> float:
        """Changes per second between the oldest and newest sample (0 before two samples)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


HUB = web.AppKey("hub", object)
"""The :class:`~cityvisor.core.hub.Hub` (``request.app[HUB]``)."""


STATE = web.AppKey("state", WebState)
"""The :class:`WebState` (``request.app[STATE]``)."""
API = web.AppKey("api", Routes)
"""The core API's route table (``request.app[API]``), which the OpenAPI document describes."""


def tile_source(tile_url: str) -> str | None:
    """The CSP source of a map tile URL template: its origin, or None for our own.

    ``https://tiles.example.org/{z}/{x}/{y}.png`` gives ``https://tiles.example.org``;
    a template that spreads tiles over subdomains (``https://{s}.tile.example.org/...``,
    Leaflet's ``{s}``) gives ``https://*.tile.example.org``. A relative URL
    (``/tiles/{z}/{x}/{y}.png``) is our own origin: nothing to add.
    """
    match = re.match(r"^(https?)://([^/?#]+)", tile_url or "")
    if not match:
        return None
    scheme, host = match.groups()
    if host.startswith("{s}."):
        host = "*." + host[4:]
    if "{" in host or "}" in host or not re.fullmatch(r"[A-Za-z0-9.*:\[\]-]+", host):
        return None
    return f"{scheme}://{host}"


def content_security_policy(tile_url: str) -> str:
    """The CSP: everything from our origin only, map tiles from the tile server's origin."""
    images = "'self' data: blob:"
    source = tile_source(tile_url)
    if source:
        images += f" {source}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
