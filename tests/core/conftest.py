"""The core runs on both anyio backends: every async core test runs on asyncio and on trio.

The store tests also run on both store backends (``backend``): SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .backends import Backend, make_backend


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Parametrise the core's async tests over both backends."""
    return request.param


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Parametrise a store test over both store backends (a fresh database each)."""
    with make_backend(request.param, tmp_path) as made:
        yield made
