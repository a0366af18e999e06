"""The web application: middlewares, the application builder, and the server service.

:func:`build_app` makes the aiohttp application for a hub: the core API
(:mod:`cityvisor.web.api`), the WebSocket (:mod:`cityvisor.web.ws`), the
plugins' routes (hook ``cityvisor_web_routes``), all behind the same
middlewares:

1. **errors**: a client's mistake becomes ``{"error": code, "message": ...}``
   with a 4xx status; anything unexpected is logged with its traceback and
   answered with a bare 500 (no traceback ever reaches a client);
2. **authentication**: the session cookie is looked up; every route but the
   public ones (login, the login page and static assets) answers 401
   without a session; state-changing requests must come from our own origin
   and carry the session's CSRF token in ``X-CSRF-Token``.

Every response gets the security headers (CSP, no framing, no sniffing, no
referrer). :class:`WebServer` runs the application as a hub service.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import warnings
from typing import TYPE_CHECKING, Any

import anyio
import yarl
from aiohttp import hdrs, web
from anyio.abc import TaskStatus

from ..core.alarms import AlarmActionError, AlarmPermissionError, UnknownAlarmError
from ..core.commands import CommandError
from ..core.points import UnknownPointError
from . import api
from .auth import same_secret
from .guard import ConnectionGuard
from .routing import METRICS, PUBLIC, ApiError
from .state import API, HUB, STATE, UpdateRate, WebState, content_security_policy, tile_source

if TYPE_CHECKING:
    from ..core.hub import Hub


__all__ = [
    "HUB",
    "STATE",
    "UpdateRate",
    "WebServer",
    "WebState",
    "build_app",
    "content_security_policy",
    "tile_source",
]

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY = 256 * 1024
"""Largest request body accepted: commands, acks and logins are small."""


# --------------------------------------------------------------------------- middlewares


def error_response(status: int, body: dict[str, Any], headers: Any = None) -> web.Response:
    """A JSON error answer."""
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every exception into a JSON answer; a 4xx for a client's mistake, 500 for a bug."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.as_json(), error.headers)
    except CommandError as error:
        body = error.as_json()
        if error.result is not None:
            body["result"] = error.result.as_json()
        return error_response(error.status, body)
    except UnknownAlarmError as error:
        return error_response(404, {"error": "unknown_alarm", "message": str(error)})
    except AlarmPermissionError as error:
        return error_response(403, {"error": "not_permitted", "message": str(error)})
    except AlarmActionError as error:
        return error_response(409, {"error": "alarm_action", "message": str(error)})
    except UnknownPointError as error:
        return error_response(404, {"error": "unknown_point", "message": str(error)})
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        headers = {k: v for k, v in error.headers.items() if k in (hdrs.ALLOW, hdrs.RETRY_AFTER)}
        return error_response(error.status, {"error": code, "message": error.reason}, headers)
    except ConnectionResetError:
        raise  # the client went away: nothing to answer, nothing to log
    except Exception:
        request.app[STATE].counters["http_500"] += 1
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(
            500,
            {"error": "internal_error", "message": "internal error; the server log has details"},
        )


def _authority(host: str | None, port: int | None, scheme: str) -> tuple[str, int] | None:
    if not host:
        return None
    default = 443 if scheme in ("https", "wss") else 80
    return host.lower().rstrip("."), port or default


def same_origin(request: web.Request) -> bool:
    """True unless the request says (Origin, else Referer) it comes from another site.

    Browsers send ``Origin`` with every cross-site and every state-changing
    request; programs (curl, Prometheus) send neither and cannot be tricked
    into acting for a user, so a request without both is let through (the
    CSRF token still guards state changes). Host and port are compared, not
    the scheme, so that a TLS-terminating reverse proxy that keeps the
    ``Host`` header works.
    """
    origin = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    if origin is None:
        return True
    if origin == "null":
        return False
    try:
        claimed = yarl.URL(origin)
        served = yarl.URL(f"{request.scheme}://{request.host}")
    except ValueError:
        return False
    mine = _authority(served.host, served.explicit_port, claimed.scheme)
    theirs = _authority(claimed.host, claimed.explicit_port, claimed.scheme)
    return mine is not None and mine == theirs


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Find the session; refuse what needs one without it; check origin and CSRF token."""
    state = request.app[STATE]
    route = request.match_info.route
    auth = getattr(route.handler, "__cityvisor_auth__", None)
    session = await state.sessions.find(request.cookies.get(state.cookie_name))
    if session is not None:
        # Plain string keys: the plugin contract (hookspecs) promises ``request["user"]``.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request["session"] = session
            request["user"] = session.user
    changes_state = request.method not in SAFE_METHODS
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if (changes_state or upgrade) and not same_origin(request):
        raise ApiError(403, "bad_origin", "the request comes from another site")
    if auth == PUBLIC:
        return await handler(request)
    if session is None:
        if auth == METRICS and _bearer_ok(request, state.settings.metrics_token):
            return await handler(request)
        raise ApiError(401, "unauthenticated", "log in first (POST /api/v1/session)")
    if changes_state and not same_secret(request.headers.get(CSRF_HEADER), session.csrf):
        raise ApiError(
            403,
            "csrf",
            f"missing or wrong {CSRF_HEADER} header (the token comes with the session)",
        )
    return await handler(request)


def _bearer_ok(request: web.Request, token: str) -> bool:
    if not token:
        return False
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return scheme.lower() == "bearer" and same_secret(given.strip(), token)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[STATE]
    headers = response.headers
    headers.setdefault("Content-Security-Policy", state.csp)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    headers[hdrs.SERVER] = "cityvisor"
    if state.settings.secure_cookies:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    if not request.path.startswith("/static/"):
        # Live data and per-user answers: never from a cache, never stored on disk.
        headers.setdefault(hdrs.CACHE_CONTROL, "no-store")


# --------------------------------------------------------------------------- the application


def build_app(hub: Hub) -> web.Application:
    """The aiohttp application serving ``hub``: core API, WebSocket, plugins' routes.

    The users and sessions tables are created when the application starts.
    """
    state = WebState(hub)
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[HUB] = hub
    app[STATE] = state
    app[API] = api.ROUTES
    for route in api.ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    for plugin_name, routes in hub.plugins.call_each("cityvisor_web_routes", hub=hub):
        try:
            app.router.add_routes(list(routes or ()))
        except Exception:  # a plugin's broken route must not take the HMI down
            log.exception("plugin %s: its web routes could not be added", plugin_name)
    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_close_clients)
    return app


async def _startup(app: web.Application) -> None:
    await app[STATE].accounts.setup()


async def _close_clients(app: web.Application) -> None:
    """At shutdown, tell WebSocket clients the server is going away."""
    for client in list(app[STATE].clients):
        await client.close_going_away()


# --------------------------------------------------------------------------- the server


class WebServer:
    """The HMI and API server, run by the hub as the ``web`` plugin's service.

    Calling the object runs it (that is what the hub's service runner does):
    it listens on ``[web] host`` and ``port``, restarts with backoff if the
    port cannot be bound (without a traceback: it is an operator's problem,
    not a bug), and stops within seconds when cancelled. ``addresses`` holds
    the bound ``(host, port)`` pairs once ``ready`` is set (with ``port =
    0`` the system picks a free port); ``url`` is the first as a URL.
    """

    def __init__(self, hub: Hub, *, host: str | None = None, port: int | None = None) -> None:
        self.hub = hub
        self.host = host if host is not None else hub.config.web.host
        self.port = port if port is not None else hub.config.web.port
        self.ready = anyio.Event()
        self.addresses: list[Any] = []
        self.app: web.Application | None = None
        self.guard: ConnectionGuard | None = None

    @property
    def state(self) -> WebState:
        """The running application's shared state."""
        assert self.app is not None, "the server has not started"
        return self.app[STATE]

    @property
    def url(self) -> str:
        """``http://host:port`` of the first bound address."""
        if not self.addresses:
            raise RuntimeError("the web server is not listening")
        host, port = self.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    async def __call__(self) -> None:
        """The service: serve until cancelled, retrying when the port cannot be bound."""
        attempt = 0
        while True:
            try:
                await self.run()
            except OSError as error:
                delay = min(60.0, 1.0 * math.pow(2, attempt)) * random.uniform(0.8, 1.0)
                attempt += 1
                log.error(
                    "the HMI cannot listen on %s:%s (%s); retrying in %.0f s",
                    self.host,
                    self.port,
                    error.strerror or error,
                    delay,
                )
                await anyio.sleep(delay)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Build the application, listen, and serve until cancelled."""
        self.app = build_app(self.hub)
        settings = self.hub.config.web
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            # How long a kept-alive connection may wait for its next request.
            keepalive_timeout=settings.read_timeout,
        )
        await runner.setup()
        listening: asyncio.Server | None = None
        try:
            assert runner.server is not None
            self.guard = ConnectionGuard(
                runner.server,
                read_timeout=settings.read_timeout,
                max_per_address=settings.max_connections_per_address,
                counters=self.state.counters,
            )
            self.state.guard = self.guard
            listening = await asyncio.get_running_loop().create_server(
                self.guard, self.host, self.port, reuse_address=True
            )
            self.addresses = [sock.getsockname() for sock in listening.sockets]
            log.info("HMI and API on %s", self.url)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._housekeeping, name="web housekeeping")
                await tg.start(self.state.fanout.run, name="WebSocket senders")
                self.ready.set()
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self.addresses = []
            if listening is not None:
                listening.close()  # stop accepting; the runner closes what is open
            with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
                await runner.cleanup()

    async def _housekeeping(self) -> None:
        """Sample the update rate every 5 s; forget idle sessions every 10 minutes."""
        state = self.state
        points = self.hub.points
        next_prune = 0.0
        while True:
            state.rate.sample(points.changes)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 600.0
                try:
                    pruned = await state.sessions.prune()
                except Exception:  # a busy or failing store: try again later
                    log.exception("could not prune expired sessions")
                else:
                    if pruned:
                        log.info("%d expired session(s) forgotten", pruned)
            await anyio.sleep(5.0)
