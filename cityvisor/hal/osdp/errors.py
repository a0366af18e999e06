"""OSDP errors: a bus that cannot run, and a configuration that cannot work."""

from __future__ import annotations


class OsdpError(Exception):
    """The line or a reader cannot be used (port missing, reader silent, no acknowledgement)."""


class OsdpConfigError(OsdpError):
    """Retrying will not help until the configuration changes: a refused key, an address clash."""
