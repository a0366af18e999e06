"""Fixtures for the HAL tests: real peers started per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hal.modbus_fixtures import *  # noqa: F403  (the Modbus simulators' fixtures)
from tests.hal.snmpd import Snmpd


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A net-snmp snmpd on a free port of 127.0.0.1, with its own config (see tests/hal/snmpd.py)."""
    agent = Snmpd(tmp_path_factory.mktemp("snmpd"))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
