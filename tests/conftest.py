"""Shared fixtures: anyio backends, a temporary SQLite store on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cityvisor.core.store import SqliteStore


@pytest.fixture
def anyio_backend() -> str:
    """Everything outside core/ runs on asyncio (pymodbus, pysnmp, aiohttp need it)."""
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store in a temporary directory, opened and closed around the test."""
    db = SqliteStore(tmp_path / "cityvisor.sqlite", flush_interval=0.05)
    await db.open()
    try:
        yield db
    finally:
        await db.close()
