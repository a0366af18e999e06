"""The ONVIF client's limits: retry delay after refused credentials, reply and snapshot sizes, handshakes at once."""

from __future__ import annotations

AUTH_RETRY_AFTER = 300.0
"""Seconds before a camera that refused our credentials is tried again."""


SOAP_BODY_LIMIT = 2 * 2**20
"""Bytes a SOAP reply may have (a camera's longest, GetProfiles or PullMessages, is tens of kB)."""


SNAPSHOT_LIMIT = 4 * 2**20
"""Bytes a snapshot may have unless the client is given another limit."""


CONCURRENT_CONNECTS = 4
"""Handshakes in flight at once (per event loop): a hub starting 200 cameras would
otherwise parse the same WSDLs 200 times at once before the library's cache fills."""
