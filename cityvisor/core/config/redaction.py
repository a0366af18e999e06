"""Secrets in the configuration: which keys hold them, and the configuration with them redacted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECRET_WORDS = ("password", "passwd", "secret", "key", "community", "token")
"""A key whose name contains one of these holds a secret: it is redacted in dumps.

Matching by substring over-redacts (``keyboard``) rather than leaks (``auth_key``).
"""


REDACTED = "***"


# --------------------------------------------------------------------------- secrets

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True if a key's name says it holds a secret (``password``, ``auth_key``, ``community``)."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of JSON-like data with secrets masked (see :meth:`Config.redacted`)."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", value)
    return value
