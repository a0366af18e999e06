"""Open data tests run on asyncio: aiohttp serves the routes and pushes to the broker."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp needs asyncio."""
    return "asyncio"
