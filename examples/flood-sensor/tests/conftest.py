"""Test settings: cityvisor's fixtures come with it (its pytest plugin); run on asyncio."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The Modbus HAL needs asyncio."""
    return "asyncio"
