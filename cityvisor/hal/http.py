"""HTTP for the HAL: bodies read with a limit, and authentication that follows the challenge.

Equipment that speaks HTTP (ONVIF cameras: SOAP and snapshots) is a small
embedded web server that may answer anything: a 50 MB "picture", a body that
never ends, a challenge for a scheme nobody asked for. Every HTTP body the HAL
reads goes through :func:`read_body`, which streams it and stops at a limit,
so a hostile or broken device costs at most that limit in memory; and
:class:`ChallengeAuth` answers a ``401`` with what the server's
``WWW-Authenticate`` asks for (Digest with MD5 or SHA-256, RFC 7616, or
Basic), never sending a password before it is asked for, and never in clear
over plain HTTP unless the deployment allows it.
"""

from __future__ import annotations

import re

import aiohttp
from aiohttp import hdrs
from yarl import URL

__all__ = [
    "ChallengeAuth",
    "InsecureChallengeError",
    "ResponseTooLargeError",
    "read_body",
]

CHUNK = 64 * 1024
"""Bytes asked of the connection at a time while a body is read."""


class ResponseTooLargeError(Exception):
    """A body ran past its limit (or announced it would); the connection was dropped."""

    def __init__(self, url: str, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        self.declared = declared
        if declared is not None:
            message = f"the answer announces {declared} bytes, over the limit of {limit}"
        else:
            message = f"the answer ran past the limit of {limit} bytes"
        super().__init__(message)
        self.url = url


class InsecureChallengeError(Exception):
    """The server asks for HTTP Basic over plain HTTP, which would send the password in clear."""


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response's body, streamed, at most ``limit`` bytes; else :class:`ResponseTooLargeError`.

    A ``Content-Length`` over the limit is refused before a byte of the body
    is read; a body without one (chunked, or until the connection closes) is
    read piece by piece and dropped the moment it passes the limit. Either
    way the connection is closed, not drained: an endless body is not read
    to its end. Memory while reading: what was read (at most ``limit``)
    plus one chunk and the connection's buffer; the pieces are then joined
    once, which for an instant holds the body twice.
    """
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise ResponseTooLargeError(str(response.url), limit, declared)
    chunks: list[bytes] = []  # a list, not a growing buffer: no over-allocation
    size = 0
    try:
        while chunk := await response.content.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ResponseTooLargeError(str(response.url), limit)
            chunks.append(chunk)
    except BaseException:
        chunks.clear()
        response.close()
        raise
    response.release()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# --------------------------------------------------------------------------- authentication

_SCHEME = re.compile(r"(?:^|,)\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?=\s+[^\s=,]|\s*(?:,|$))")


def challenge_schemes(headers: list[str]) -> list[str]:
    """The auth schemes a server offers, lower case, in its order (``["digest", "basic"]``).

    One ``WWW-Authenticate`` header may carry several challenges, and a
    server may send several headers (RFC 7235 section 4.1).
    """
    schemes: list[str] = []
    for header in headers:
        # A scheme is a token followed by its parameters or by the end of
        # the challenge; ``realm="a, b"`` and ``key=value`` are parameters.
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', header)
        for match in _SCHEME.finditer(unquoted):
            scheme = match.group(1).lower()
            if scheme not in schemes:
                schemes.append(scheme)
    return schemes


class ChallengeAuth:
    """An aiohttp client middleware that authenticates the way the server's challenge asks.

    ::

        session = aiohttp.ClientSession(middlewares=(ChallengeAuth(user, password),))

    The first request goes out without credentials. A ``401`` is answered
    with Digest when the server offers it (MD5, SHA-256 and their ``-sess``
    variants, through aiohttp's :class:`~aiohttp.DigestAuthMiddleware`, which
    then authenticates later requests pre-emptively), else with Basic if it
    asks for Basic: over HTTPS, or over plain HTTP only with
    ``allow_basic_over_http`` (otherwise :class:`InsecureChallengeError`,
    raised before the password leaves). Once a scheme worked for the origin
    it is used from the first request on. Credentials go to the origin of
    the first request only.
    """

    def __init__(
        self, username: str, password: str, *, allow_basic_over_http: bool = False
    ) -> None:
        self._digest = aiohttp.DigestAuthMiddleware(username, password)
        self._basic = aiohttp.encode_basic_auth(username, password)
        self.allow_basic_over_http = allow_basic_over_http
        self.scheme: str | None = None
        """``"digest"`` or ``"basic"`` once the server asked for one."""
        self._origin: URL | None = None

    def __repr__(self) -> str:
        return f"<ChallengeAuth scheme={self.scheme}>"

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send the request, answering the server's challenge if it sends one."""
        origin = request.url.origin()
        if self._origin is None:
            self._origin = origin
        elif origin != self._origin:
            return await handler(request)  # never our credentials to another server
        if self.scheme == "digest":
            return await self._digest(request, handler)
        if self.scheme == "basic":
            request.headers[hdrs.AUTHORIZATION] = self._basic
            return await handler(request)
        response = await handler(request)
        if response.status != 401:
            return response
        schemes = challenge_schemes(response.headers.getall(hdrs.WWW_AUTHENTICATE, []))
        if "digest" in schemes:
            self.scheme = "digest"
            response.release()  # its headers stay readable
            return await self._digest(request, _replay(response, handler))
        if "basic" in schemes:
            if request.url.scheme != "https" and not self.allow_basic_over_http:
                response.release()
                raise InsecureChallengeError(
                    "the camera asks for HTTP Basic over plain HTTP, which would send "
                    "the password in clear: use HTTPS, or set allow_basic_over_http = true"
                )
            response.release()
            request.headers[hdrs.AUTHORIZATION] = self._basic
            response = await handler(request)
            if response.status != 401:
                self.scheme = "basic"
            return response
        return response  # a scheme we do not speak: the caller sees the 401


def _replay(
    response: aiohttp.ClientResponse, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientHandlerType:
    """A handler that answers with ``response`` once, then sends for real.

    The Digest middleware reads its challenge from the answer to a request
    it sent; handing it the 401 already received saves the camera a round
    trip (the first picture costs two requests, not three).
    """
    pending: list[aiohttp.ClientResponse] = [response]

    async def send(request: aiohttp.ClientRequest) -> aiohttp.ClientResponse:
        if pending:
            return pending.pop()
        return await handler(request)

    return send
