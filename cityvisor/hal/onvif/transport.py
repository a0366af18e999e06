"""The ONVIF library, loaded once, and the HTTP transport that bounds every reply's size."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import aiohttp

from ..http import read_body
from .limits import SOAP_BODY_LIMIT

# --------------------------------------------------------------------------- the library


_library: ModuleType | None = None


def _onvif() -> ModuleType:
    """Import onvif-zeep-async on first use (it takes half a second; most CLI commands never need it)."""
    global _library
    if _library is None:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        import onvif.client

        # onvif.client calls logging.basicConfig(level=INFO) when imported;
        # logging is the application's to configure, so undo it.
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        # Every service the library creates (update_xaddrs makes its own) builds
        # its transport from this module-level name: ours reads bounded bodies.
        onvif.client.AsyncTransportProtocolErrorHandler = _bounded_transport(
            onvif.client.AsyncTransportProtocolErrorHandler
        )
        _library = onvif.client
    return _library


_HTTP_401 = "http:401"
"""The code of the fault the transport raises for an HTTP 401 (whatever the body said)."""


def _bounded_transport(base: type) -> type:
    """The library's SOAP transport, reading every reply through :func:`read_body`.

    A reply with HTTP 200 must be well-formed XML: zeep parses in recovery
    mode, which turns a truncated reply into a silently shorter one (half a
    preset list). An HTTP 401 becomes a fault with code ``http:401`` before
    zeep parses the body: cameras answer a wrong password with a 401 and a
    generic fault (no ``ter:NotAuthorized``) or an HTML page, and it must
    read as a credentials problem either way. A fault (not another
    exception) keeps the library's own fallback working: it retries an
    unauthenticated ``GetSystemDateAndTime`` with credentials when that one
    is refused.
    """
    import lxml.etree
    import zeep.exceptions

    strict = lxml.etree.XMLParser(resolve_entities=False, no_network=True)

    def well_formed(response: aiohttp.ClientResponse, content: bytes) -> bytes:
        if response.status == 200:
            lxml.etree.fromstring(content, strict)  # raises XMLSyntaxError, read as a bad reply
        return content

    class BoundedTransport(base):  # type: ignore[misc, valid-type]
        async def _post_internal(
            self, address: str, message: str | bytes, headers: dict[str, str]
        ) -> tuple[aiohttp.ClientResponse, bytes]:
            headers = dict(headers or {})
            headers.setdefault("Content-Type", 'text/xml; charset="utf-8"')
            data = message.encode("utf-8") if isinstance(message, str) else message
            response = await self._send("POST", address, data=data, headers=headers)
            return response, well_formed(response, await read_body(response, SOAP_BODY_LIMIT))

        async def get(
            self,
            address: str,
            params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
        ) -> Any:
            response = await self._send("GET", address, params=params, headers=headers or {})
            return self._aiohttp_to_requests_response(
                response, await read_body(response, SOAP_BODY_LIMIT)
            )

        async def _send(self, method: str, address: str, **options: Any) -> Any:
            try:
                response = await self.session.request(
                    method, address, proxy=self.proxy, timeout=self._client_timeout, **options
                )
            except RuntimeError as error:  # the session was closed under us: a lost connection
                raise aiohttp.ClientConnectionError(str(error)) from error
            if response.status == 401:
                response.close()
                raise zeep.exceptions.Fault("HTTP 401 Unauthorized", code=_HTTP_401)
            return response

    return BoundedTransport
