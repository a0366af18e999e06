"""What the API's resource modules share: the hub and user of a request, and JSON answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...core.users import User
from ..state import HUB

if TYPE_CHECKING:
    from ...core.hub import Hub


_OBJECT = {"type": "object"}


def _hub(request: web.Request) -> Hub:
    return request.app[HUB]  # type: ignore[return-value]


def _user(request: web.Request) -> User:
    return request["user"]  # type: ignore[no-any-return]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)
