"""The published files: each dataset in each format, and the DCAT-AP catalogue.

One renderer serves both the web routes (``GET /opendata/<dataset>/<file>``)
and ``cityvisor export`` (the same names, written in a directory), so the
two cannot disagree about what a file holds.

=====================  ==========================================================
``entities.jsonld``    NGSI-LD entities, normalized (``?options=keyValues``: simplified)
``features.geojson``   GeoJSON FeatureCollection, one feature per entity
``entities.csv``       one row per attribute of each entity
``history.csv``        min/max/mean/last per bucket of each published point
``aggregates.csv``     the private points' aggregates: complete buckets, large groups
=====================  ==========================================================
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cityvisor.core.config import LICENCES
from cityvisor.core.points import now_ms

from .entities import CSV_COLUMNS, iso, with_context
from .publish import Dataset, Publication
from .values import Values

__all__ = ["CATALOGUE", "FILES", "Rendered", "catalogue", "render"]

CATALOGUE = "catalog.jsonld"

FILES: dict[str, tuple[str, str]] = {
    "entities.jsonld": ("application/ld+json", "NGSI-LD"),
    "features.geojson": ("application/geo+json", "GeoJSON"),
    "entities.csv": ("text/csv; charset=utf-8", "CSV"),
    "history.csv": ("text/csv; charset=utf-8", "CSV"),
    "aggregates.csv": ("text/csv; charset=utf-8", "CSV"),
}
"""File name -> (media type, format name)."""

HISTORY_COLUMNS = ("entity_id", "attribute", "start", "count", "minimum", "maximum", "mean", "last")
AGGREGATE_COLUMNS = ("group", "attribute", "statistic", "start", "end", "value", "devices")

FREQUENCY_CODES = {
    "continuous": "CONT",
    "hourly": "HOURLY",
    "daily": "DAILY",
    "weekly": "WEEKLY",
    "monthly": "MONTHLY",
    "irregular": "IRREG",
}
"""Update frequencies -> the EU Publications Office frequency vocabulary."""

SCHEMAS = {
    "StreetLight": "https://smart-data-models.github.io/dataModel.Streetlighting/StreetLight/schema.json",
    "StreetlightControlCabinet": "https://smart-data-models.github.io/dataModel.Streetlighting/StreetlightControlCabinet/schema.json",
    "WaterObserved": "https://smart-data-models.github.io/dataModel.Environment/WaterObserved/schema.json",
    "Device": "https://smart-data-models.github.io/dataModel.Device/Device/schema.json",
    "DeviceMeasurement": "https://smart-data-models.github.io/dataModel.Device/DeviceMeasurement/schema.json",
}

DCAT_CONTEXT: dict[str, Any] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "locn": "http://www.w3.org/ns/locn#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "gsp": "http://www.opengis.net/ont/geosparql#",
}
"""The catalogue's JSON-LD context, embedded: reading it never fetches anything."""


@dataclass(frozen=True)
class Rendered:
    """A file's bytes, its media type and when its newest value was observed."""

    body: bytes
    media_type: str
    modified: int
    """Epoch milliseconds (the render time when nothing in it is dated)."""
    shape: Any
    """What it publishes without its values (entity ids and attributes): journaled."""


def _csv(columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def render(
    publication: Publication,
    dataset: Dataset,
    name: str,
    values: Values,
    *,
    key_values: bool = False,
    start: int | None = None,
    end: int | None = None,
    bucket_ms: int = 3_600_000,
) -> Rendered:
    """Render one file of a dataset (``name`` is a key of :data:`FILES`)."""
    media_type = FILES[name][0]
    now = now_ms()
    if name in ("history.csv", "aggregates.csv"):
        end = end if end is not None else now
        start = start if start is not None else end - 86_400_000
        if name == "history.csv":
            rows = await publication.history(dataset, values, start, end, bucket_ms)
            series = sorted({(r["entity_id"], r["attribute"]) for r in rows})
            body = _csv(HISTORY_COLUMNS, rows)
        else:
            rows = await publication.aggregate(dataset, values, start, end)
            series = sorted({(r["group"], r["attribute"]) for r in rows})
            body = _csv(AGGREGATE_COLUMNS, rows)
        return Rendered(body, media_type, now, {"file": name, "series": series})
    entities = await dataset.entities(values)
    modified = max((e.observed for e in entities), default=0) or now
    shape = {
        "file": name,
        "entities": [[e.id, sorted(e.attributes)] for e in entities],
    }
    if name == "entities.jsonld":
        body = _json(
            [with_context(e.key_values() if key_values else e.normalized()) for e in entities]
        )
    elif name == "features.geojson":
        body = _json({"type": "FeatureCollection", "features": [e.feature() for e in entities]})
    else:
        body = _csv(CSV_COLUMNS, [row for e in entities for row in e.rows()])
    return Rendered(body, media_type, modified, shape)


def catalogue(publication: Publication, root: str) -> dict[str, Any]:
    """The DCAT-AP catalogue (JSON-LD, context embedded) of every published dataset.

    ``root`` is where the catalogue and the datasets' directories are
    (``https://data.example.org/opendata``; ``.`` for an export's directory):
    the files are ``<root>/<dataset>/<file>``.
    """
    settings = publication.settings
    site = publication.config.site
    root = root.rstrip("/")
    publisher = settings.publisher or site.name
    title, licence_url = LICENCES.get(settings.licence, (settings.licence, settings.licence))
    language = "fr" if site.language == "fr" else "en"
    licence = {"@id": licence_url, "@type": "dct:LicenseDocument", "dct:title": title}
    agent = {"@id": f"{root}/{CATALOGUE}#publisher", "@type": "foaf:Agent", "foaf:name": publisher}
    datasets = []
    for name, dataset in publication.datasets.items():
        types = sorted(dataset.entity_types())
        entry: dict[str, Any] = {
            "@id": f"{root}/{name}/",
            "@type": "dcat:Dataset",
            "dct:identifier": name,
            "dct:title": [
                {"@value": text, "@language": lang} for lang, text in dataset.title.items()
            ],
            "dct:description": [
                {
                    "@value": f"État des équipements de la famille {name} ({', '.join(types)}).",
                    "@language": "fr",
                },
                {
                    "@value": f"State of the {name} family's equipment ({', '.join(types)}).",
                    "@language": "en",
                },
            ],
            "dct:publisher": {"@id": agent["@id"]},
            "dct:license": {"@id": licence_url},
            "dct:accrualPeriodicity": {
                "@id": "http://publications.europa.eu/resource/authority/frequency/"
                + FREQUENCY_CODES[dataset.settings.update_frequency]
            },
            "dct:conformsTo": [{"@id": SCHEMAS[t]} for t in types if t in SCHEMAS],
            "dcat:keyword": [name, *types],
            "dcat:distribution": [
                {
                    "@id": f"{root}/{name}/{file}",
                    "@type": "dcat:Distribution",
                    "dcat:accessURL": {"@id": f"{root}/{name}/{file}"},
                    "dcat:downloadURL": {"@id": f"{root}/{name}/{file}"},
                    "dcat:mediaType": {
                        "@id": "https://www.iana.org/assignments/media-types/"
                        + FILES[file][0].split(";")[0]
                    },
                    "dct:format": FILES[file][1],
                    "dct:title": file,
                    "dct:license": {"@id": licence_url},
                }
                for file in FILES
                if file != "aggregates.csv" or dataset.aggregates
            ],
        }
        spatial = _bbox(dataset.locations())
        if spatial:
            entry["dct:spatial"] = {
                "@type": "dct:Location",
                "dcat:bbox": {"@value": spatial, "@type": "gsp:wktLiteral"},
            }
        if settings.contact:
            entry["dcat:contactPoint"] = {
                "@type": "vcard:Kind",
                "vcard:fn": publisher,
                "vcard:hasEmail": {"@id": f"mailto:{settings.contact}"},
            }
        datasets.append(entry)
    return {
        "@context": DCAT_CONTEXT,
        "@id": f"{root}/{CATALOGUE}",
        "@type": "dcat:Catalog",
        "dct:title": {"@value": f"Données ouvertes : {site.name}", "@language": language},
        "dct:description": {
            "@value": "Données publiques des équipements urbains supervisés.",
            "@language": "fr",
        },
        "dct:publisher": agent,
        "dct:license": licence,
        "dct:language": {
            "@id": "http://publications.europa.eu/resource/authority/language/"
            + ("FRA" if language == "fr" else "ENG")
        },
        "dct:modified": {"@value": iso(publication.created), "@type": "xsd:dateTime"},
        "dcat:dataset": datasets,
    }


def _bbox(locations: list[tuple[float, float]]) -> str:
    """The WKT polygon around the locations (empty if none)."""
    if not locations:
        return ""
    latitudes = [lat for lat, _ in locations]
    longitudes = [lon for _, lon in locations]
    south, north, west, east = min(latitudes), max(latitudes), min(longitudes), max(longitudes)
    return (
        f"POLYGON(({west} {south}, {east} {south}, {east} {north}, {west} {north}, {west} {south}))"
    )
