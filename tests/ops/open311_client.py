"""A GeoReport v2 client written from the Open311 specification (wiki.open311.org/GeoReport_v2).

Only what a citizen's app does: list the services, post a request (form
encoded, or multipart with a ``media`` photo), and follow its status with
the token the city gave back.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class GeoReportError(Exception):
    """A GeoReport error answer: ``[{"code": ..., "description": ...}]``."""

    def __init__(self, status: int, errors: Any) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors

    @property
    def description(self) -> str:
        return " ".join(str(e.get("description", "")) for e in self.errors)


class GeoReportClient:
    """An Open311 GeoReport v2 client of one endpoint (``https://city/open311/v2``)."""

    def __init__(self, endpoint: str, http: aiohttp.ClientSession) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.http = http

    async def _answer(self, response: aiohttp.ClientResponse) -> Any:
        body = await response.json(content_type=None)
        if response.status >= 400:
            raise GeoReportError(response.status, body)
        return body

    async def services(self) -> list[dict[str, Any]]:
        """GET services.json."""
        async with self.http.get(f"{self.endpoint}/services.json") as response:
            return await self._answer(response)

    async def post_request(
        self, *, media: bytes | None = None, **fields: str | float
    ) -> dict[str, Any]:
        """POST requests.json; return the first (only) element of the answer."""
        if media is None:
            data: Any = {k: str(v) for k, v in fields.items()}
        else:
            data = aiohttp.FormData()
            for key, value in fields.items():
                data.add_field(key, str(value))
            data.add_field("media", media, filename="photo.jpg", content_type="image/jpeg")
        async with self.http.post(f"{self.endpoint}/requests.json", data=data) as response:
            body = await self._answer(response)
        return body[0]

    async def get_request(self, request_id: str, token: str) -> dict[str, Any]:
        """GET requests/{id}.json with the request's token."""
        url = f"{self.endpoint}/requests/{request_id}.json"
        async with self.http.get(url, params={"token": token}) as response:
            body = await self._answer(response)
        return body[0]
