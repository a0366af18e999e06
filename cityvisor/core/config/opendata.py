"""The deployment file's ``[opendata]`` section: what the city publishes, and what it never may."""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic import Field

from .messages import _show
from .sections import Section
from .values import Slug, Text

SENSITIVE_FAMILIES = ("cameras", "access", "switches")
"""Families never published as open data: images of people, badges and access
events, the network's topology. ``[opendata.families]`` may not name them."""

FREQUENCIES = ("continuous", "hourly", "daily", "weekly", "monthly", "irregular")
"""Update frequencies a dataset may declare (the EU frequency vocabulary's names)."""


class OpenDataAggregate(Section):
    """`[opendata.families.<family>.aggregate.<point>]`: a point published only aggregated.

    A value that could identify a person (a vehicle on a loop, a presence)
    is published as a statistic per time bucket and per group of devices,
    never device by device: a group with fewer devices than ``minimum_group``
    is left out of the dataset.
    """

    bucket: float = Field(default=3600.0, gt=0)
    """Seconds per bucket; at least ``[opendata] minimum_bucket``."""
    by: str = "zone"
    """Group of devices: ``zone``, ``site`` (all of them) or ``tag:<prefix>`` (the device's
    tag that starts with the prefix, ``tag:street:`` for one group per street)."""
    statistic: Literal["count", "sum", "mean", "max"] = "count"
    """``count``: changes to true (bool points) or changes; ``sum``, ``mean``, ``max`` of
    the good values, per bucket and group."""
    minimum_group: int = Field(default=3, ge=1)
    """Devices a group needs to be published; at least ``[opendata] minimum_group``."""

    @pydantic.field_validator("by")
    @classmethod
    def _known_grouping(cls, value: str) -> str:
        if value not in ("zone", "site") and not (value.startswith("tag:") and len(value) > 4):
            raise ValueError(f'expected "zone", "site" or "tag:<prefix>", got {_show(value)}')
        return value


class OpenDataFamily(Section):
    """`[opendata.families.<family>]`: what one family publishes."""

    publish: bool = True
    """``false`` publishes nothing of this family."""
    points: list[str] | None = None
    """Names of the points published as they are (``["level", "on"]``); absent: the
    points the family's open data model maps. String points are never published."""
    aggregate: dict[str, OpenDataAggregate] = {}
    """Points published only aggregated in time and space, by point name."""
    update_frequency: Literal["continuous", "hourly", "daily", "weekly", "monthly", "irregular"] = (
        "continuous"
    )
    """How often the dataset changes, for the catalogue (``continuous``, ``hourly``,
    ``daily``, ``weekly``, ``monthly``, ``irregular``)."""
    title: Text = {}
    """The dataset's title in the catalogue (fr/en); absent: the family's name."""


class OpenDataBroker(Section):
    """`[opendata.broker]`: push the published entities to an NGSI-LD context broker."""

    url: str = Field(min_length=1)
    """The broker's base URL (``http://broker:1026``); entities go to
    ``/ngsi-ld/v1/entityOperations/upsert`` under it."""
    tenant: str = ""
    """``NGSILD-Tenant`` header to send; empty: the broker's default tenant."""
    interval: float = Field(default=60.0, ge=1)
    """Seconds between two pushes."""
    retries: int = Field(default=3, ge=0, le=10)
    """Retries of a failed push (connection error, 429, 5xx) before waiting for the next."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one request may take."""
    token: str = ""
    """Bearer token the broker wants (``"${CITYVISOR_BROKER_TOKEN}"``); empty: none."""

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {_show(value)}")
        return value.rstrip("/")


class OpenDataSection(Section):
    """`[opendata]`: the data the city publishes (off unless ``enabled = true``).

    Datasets are served without a session under ``/opendata/`` and written by
    ``cityvisor export``. Cameras, badge readers and network switches are never
    published; device hosts, credentials and names of people never leave.
    """

    enabled: bool = False
    """Publish open data: ``/opendata/`` answers, ``cityvisor export`` works."""
    publisher: str = ""
    """Who publishes (the catalogue's ``dct:publisher``); empty: the site's name."""
    contact: str = ""
    """E-mail address for questions about the data (the catalogue's contact point)."""
    licence: str = "etalab-2.0"
    """Licence of every dataset: ``etalab-2.0`` (Licence Ouverte 2.0), ``odbl-1.0``,
    ``cc-by-4.0``, ``cc0-1.0`` or the licence's URL."""
    base_url: str = ""
    """Public URL the datasets are reached at (``https://data.example.org``), for the
    catalogue's links; empty: links relative to the server that answers."""
    families: dict[Slug, OpenDataFamily] = {}
    """What each family publishes; absent: every family with an open data model, its
    mapped points."""
    minimum_bucket: float = Field(default=3600.0, gt=0)
    """Seconds: the shortest time bucket an aggregate may declare."""
    minimum_group: int = Field(default=3, ge=1)
    """The fewest devices an aggregate's group may hold to be published."""
    rate_limit: int = Field(default=60, ge=1, le=100_000)
    """Requests per minute one client address may make to ``/opendata/``."""
    cache_seconds: int = Field(default=60, ge=0, le=86_400)
    """``Cache-Control: max-age`` of the answers; the server renders a dataset at most
    this often."""
    history_days: float = Field(default=31.0, gt=0)
    """The longest history range one request may ask for, in days."""
    broker: OpenDataBroker | None = None
    """Push to an NGSI-LD context broker (``[opendata.broker]``); absent: no push."""

    @pydantic.field_validator("families")
    @classmethod
    def _nothing_sensitive(cls, value: dict[str, OpenDataFamily]) -> dict[str, OpenDataFamily]:
        for family in value:
            if family in SENSITIVE_FAMILIES:
                raise ValueError(
                    f"{family}: this family is personal or security-sensitive and is never "
                    "published (cameras, access, switches)"
                )
        return value

    @pydantic.field_validator("licence")
    @classmethod
    def _known_licence(cls, value: str) -> str:
        if value not in LICENCES and not re.match(r"^https?://\S+$", value):
            known = ", ".join(LICENCES)
            raise ValueError(f"expected one of {known} or a licence URL, got {_show(value)}")
        return value

    @pydantic.model_validator(mode="after")
    def _private_floor(self) -> OpenDataSection:
        for family, entry in self.families.items():
            for point, aggregate in entry.aggregate.items():
                if aggregate.bucket < self.minimum_bucket:
                    raise ValueError(
                        f"families.{family}.aggregate.{point}.bucket: {aggregate.bucket:g} s is "
                        f"below minimum_bucket ({self.minimum_bucket:g} s)"
                    )
                if aggregate.minimum_group < self.minimum_group:
                    raise ValueError(
                        f"families.{family}.aggregate.{point}.minimum_group: "
                        f"{aggregate.minimum_group} is below minimum_group ({self.minimum_group})"
                    )
        return self


LICENCES = {
    "etalab-2.0": (
        "Licence Ouverte 2.0",
        "https://www.etalab.gouv.fr/licence-ouverte-open-licence",
    ),
    "odbl-1.0": ("Open Database License 1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
    "cc-by-4.0": ("Creative Commons BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc0-1.0": ("Creative Commons Zero 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
}
"""Licences known by short name: (title, URL)."""
