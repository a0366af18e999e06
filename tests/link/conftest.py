"""Deployment files for edge and central hubs on the local Mosquitto (127.0.0.1:1883).

Every test takes a group id of its own (:func:`group_id`), so that tests
running side by side on one broker never see each other's nodes.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.publish as paho_publish
import pytest

BROKER = ("127.0.0.1", 1883)


_GROUPS: list[str] = []


def group_id() -> str:
    """A Sparkplug group id no other test uses (its hosts are ``<group>-room``, ``-a``, ``-b``)."""
    group = f"test-{uuid.uuid4().hex[:10]}"
    _GROUPS.append(group)
    return group


@pytest.fixture(autouse=True)
def _forget_retained_states() -> Iterator[None]:
    """After each test, clear the retained STATE messages its centrals left on the broker."""
    yield
    groups, _GROUPS[:] = list(_GROUPS), []
    topics = [f"spBv1.0/STATE/{g}-{host}" for g in groups for host in ("room", "a", "b")]
    if not topics:
        return
    with contextlib.suppress(OSError):  # no broker: the test itself said so
        paho_publish.multiple(
            [{"topic": topic, "payload": b"", "retain": True, "qos": 1} for topic in topics],
            hostname=BROKER[0],
            port=BROKER[1],
        )


def broker_is_listening(port: int = BROKER[1]) -> None:
    """Fail (never skip) with what to do when the local Mosquitto is not running."""
    try:
        socket.create_connection((BROKER[0], port), timeout=2).close()
    except OSError:
        pytest.fail(
            f"no MQTT broker on 127.0.0.1:{port}: install the Debian package mosquitto and "
            "start it (mosquitto -d -c /etc/mosquitto/mosquitto.conf), as .ci/run does"
        )


def _table(values: dict[str, Any]) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        elif isinstance(value, list):
            text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        else:
            text = f'"{value}"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def tank(device_id: str, zone: str = "nord", **config: Any) -> str:
    """A simulated water tank (``demo.tank``) sampled every 0.1 s."""
    settings = {"period": 0.1, "fill_rate": 50.0, **config}
    inline = ", ".join(f"{k} = {v!r}" for k, v in settings.items())
    return (
        f'[[devices]]\nid = "{device_id}"\ntype = "demo.tank"\nzone = "{zone}"\n'
        f"config = {{ {inline} }}\n"
    )


def deployment(link: dict[str, Any], *devices: str, web: bool = False) -> str:
    """A deployment file: two zones, the given devices, ``[plugins.link]``."""
    return (
        '[site]\nname = "Dijon"\ntimezone = "Europe/Paris"\n\n'
        '[store]\npath = "hub.sqlite"\nflush_interval = 0.05\n\n'
        + ('[web]\nhost = "127.0.0.1"\nport = 0\n\n' if web else "")
        + '[[zones]]\nid = "nord"\nname = "Nord"\n\n'
        '[[zones]]\nid = "sud"\nname = "Sud"\n\n'
        + "\n".join(devices)
        + "\n[plugins.link]\n"
        + _table(link)
        + "\n"
    )


def edge(group: str, node: str, *devices: str, port: int = BROKER[1], **link: Any) -> str:
    """An edge hub's deployment file."""
    settings = {"role": "edge", "port": port, "group": group, "node": node, "keepalive": 2}
    return deployment(settings | link, *devices)


def central(
    group: str, host_id: str, *, port: int = BROKER[1], web: bool = False, **link: Any
) -> str:
    """A central hub's deployment file (with the web server on a free port if ``web``)."""
    settings = {"role": "central", "port": port, "groups": [group], "host_id": host_id}
    return deployment(settings | {"keepalive": 2, "command_timeout": 10.0} | link, web=web)
