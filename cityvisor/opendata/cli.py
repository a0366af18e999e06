"""``cityvisor export``: write a deployment's open data files into a directory.

It reads the deployment file (devices, their locations, ``[opendata]``)
and the store the file names (``[store] path``): the latest recorded value
of each published point is its last row of history, so points whose history
class is ``none`` have no value here. Nothing talks to the equipment and the
hub need not run; with a running hub, SQLite's WAL lets both read the file.
The export is journaled in that store (kind ``opendata``).
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

import anyio

__all__ = ["register"]


def register(commands: Any, log_level: argparse.ArgumentParser) -> None:
    """Add the ``export`` subcommand to the ``cityvisor`` command."""
    export = commands.add_parser(
        "export",
        parents=[log_level],
        help="write the open data files (NGSI-LD, GeoJSON, CSV, DCAT-AP) into a directory",
        description="Write what [opendata] publishes, from the deployment file and its store "
        "(the last recorded value of each point, and its history), as the files "
        "GET /opendata/ serves: <dataset>/entities.jsonld, features.geojson, entities.csv, "
        "history.csv, aggregates.csv, and catalog.jsonld. The export is journaled.",
    )
    export.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    export.add_argument(
        "--dataset",
        action="append",
        metavar="NAME",
        help="only this dataset (a family's name; repeat for several; default: all)",
    )
    export.add_argument(
        "--key-values",
        action="store_true",
        help="write entities.jsonld in the simplified (keyValues) form, not normalized",
    )
    export.add_argument(
        "--days",
        type=float,
        default=1.0,
        metavar="N",
        help="history and aggregates over the last N days (default: 1)",
    )
    export.add_argument(
        "--bucket",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="history bucket in seconds (default: 3600)",
    )
    export.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="URL the files will be published at, for the catalogue (default: [opendata] "
        "base_url, else links relative to the directory)",
    )
    export.set_defaults(handler=_export, default_log_level="critical")


def _export(args: argparse.Namespace) -> int:
    from cityvisor.cli import UsageError, _plugin_manager
    from cityvisor.core.config import ConfigError, check_config, load_config

    config = load_config(args.config)
    if not config.opendata.enabled:
        raise UsageError(f"{config.source}: opendata.enabled is false: nothing is published")
    if not 0 < args.days <= config.opendata.history_days:
        raise UsageError(f"--days must be above 0 and at most {config.opendata.history_days:g}")
    if not 60 <= args.bucket <= 31 * 86_400:
        raise UsageError("--bucket must be 60 s to 31 days (in seconds)")
    plugins = _plugin_manager(config)
    problems = check_config(config, plugins)
    if problems:
        raise ConfigError(problems)
    if config.store.backend == "sqlite" and not config.store.path.exists():
        raise UsageError(f"{config.source}: store.path {config.store.path} does not exist")
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {output}: {error.strerror or error}") from None
    written = anyio.run(_write, config, plugins, args, output, backend="asyncio")
    for path in written:
        print(path)
    return 0


async def _write(config: Any, plugins: Any, args: argparse.Namespace, output: Path) -> list[str]:
    from cityvisor.cli import UsageError
    from cityvisor.core.hub import Hub
    from cityvisor.core.points import now_ms
    from cityvisor.plugins.opendata import publication

    from .files import CATALOGUE, FILES, catalogue, render
    from .values import StoreValues

    # The hub is built, never run: it declares the devices' points, nothing more.
    hub = Hub(config, plugins)
    published = publication(hub)
    names = args.dataset or list(published.datasets)
    unknown = [name for name in names if name not in published.datasets]
    if unknown:
        known = ", ".join(published.datasets) or "none"
        raise UsageError(f"no dataset {', '.join(unknown)} (datasets: {known})")
    store = hub.store
    await store.open()
    written: list[str] = []
    summary: dict[str, Any] = {}
    try:
        values = StoreValues(store, lookback_days=config.opendata.history_days)
        end = now_ms()
        start = end - int(args.days * 86_400_000)
        for name in names:
            dataset = published.datasets[name]
            (output / name).mkdir(exist_ok=True)
            summary[name] = {}
            for file in FILES:
                rendered = await render(
                    published,
                    dataset,
                    file,
                    values,
                    key_values=args.key_values,
                    start=start,
                    end=end,
                    bucket_ms=args.bucket * 1000,
                )
                path = output / name / file
                path.write_bytes(rendered.body)
                written.append(str(path))
                summary[name][file] = rendered.shape
        base = args.base_url if args.base_url is not None else config.opendata.base_url
        document = catalogue(published, f"{base.rstrip('/')}/opendata" if base else ".")
        path = output / CATALOGUE
        path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
        written.append(str(path))
        await published.record(
            store,
            f"open data exported to {output}: {', '.join(names)}",
            {"via": "export", "by": _who(), "files": written, "published": summary},
        )
    finally:
        await store.close()
    return written


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment (a container)
        return "unknown"
