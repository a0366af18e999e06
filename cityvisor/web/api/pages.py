"""The HMI's pages: the entry page (the login form until the screens are installed) and static files."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from ..routing import (
    PUBLIC,
    ApiError,
    Routes,
)
from .common import _hub

if TYPE_CHECKING:
    pass


ROUTES = Routes()
"""The routes of the pages (mounted, in this order, by :data:`cityvisor.web.api.ROUTES`)."""


STATIC_ROOT = Path(__file__).resolve().parent.parent / "static"
"""The HMI's static files (the screens): served at ``/static/`` without a session."""


# --------------------------------------------------------------------------- pages


_LOGIN_PAGE = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{site} — cityvisor</title>
</head>
<body>
<main>
<h1>{site}</h1>
{status}
<form method="post" action="/api/v1/session">
<p><label>Identifiant / User name <input name="username" autocomplete="username" required></label></p>
<p><label>Mot de passe / Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Se connecter / Log in</button></p>
</form>
</main>
</body>
</html>
"""


@ROUTES.route(
    "GET",
    "/",
    summary="The HMI's page (the login form until the screens are installed)",
    auth=PUBLIC,
    tag="pages",
    responses={200: "HTML page"},
)
async def index(request: web.Request) -> web.StreamResponse:
    """The HMI's entry page. Served without a session: it holds no data, only the login form.

    When the screens (``cityvisor/web/static/index.html``) are installed they
    are served instead of this placeholder, with the site's language and name
    in place of ``%CITYVISOR_LANGUAGE%`` and ``%CITYVISOR_SITE%`` (escaped): the
    login form speaks the city's language before anyone has logged in.
    """
    page = STATIC_ROOT / "index.html"
    if page.is_file():
        config = _hub(request).config
        text = (
            page.read_text(encoding="utf-8")
            .replace("%CITYVISOR_LANGUAGE%", html.escape(config.site.language))
            .replace("%CITYVISOR_SITE%", html.escape(config.site.name))
        )
        return web.Response(text=text, content_type="text/html")
    site = html.escape(_hub(request).config.site.name)
    user = request.get("user")
    failed = request.query.get("login")
    if user is not None:
        status = f"<p>Connecté en tant que / Logged in as <strong>{html.escape(user.name)}</strong> ({user.role}).</p>"
    elif failed == "limited":
        status = (
            "<p>Trop de tentatives, réessayez plus tard. / Too many attempts, try again later.</p>"
        )
    elif failed:
        status = "<p>Identifiant ou mot de passe incorrect. / Wrong user name or password.</p>"
    else:
        status = ""
    return web.Response(text=_LOGIN_PAGE.format(site=site, status=status), content_type="text/html")


@ROUTES.route(
    "GET",
    "/static/{path:.+}",
    summary="The HMI's static files (ES modules, styles, vendored libraries)",
    auth=PUBLIC,
    tag="pages",
    responses={200: "the file", 404: "no such file"},
)
async def static_file(request: web.Request) -> web.StreamResponse:
    """A static file of the HMI. Served without a session: code and styles, never data."""
    relative = request.match_info["path"]
    try:
        root = STATIC_ROOT.resolve()
        path = (root / relative).resolve()
        path.relative_to(root)
        # A name longer than the file system allows is an OSError here, not a False.
        found = path.is_file()
    except (ValueError, OSError):
        found = False
    if not found:
        raise ApiError(404, "not_found", "no such file")
    return web.FileResponse(path, headers={hdrs.CACHE_CONTROL: "no-cache"})
