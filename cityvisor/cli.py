"""The ``cityvisor`` command: run a deployment, check its config, list the installed plugins.

::

    cityvisor run -c config/demo.toml          run until Ctrl-C / SIGTERM
    cityvisor check-config config/demo.toml    validate, print "OK: ..." or every problem
    cityvisor plugins [--json] [-c FILE]       plugins, device types, points, commands, alarms
    cityvisor config-reference [-o FILE]       the config reference (docs/configuration.md)

A mistake a user can make (a bad config, a missing file, a wrong argument)
ends in one clear message per problem on stderr and exit status 2, never in
a traceback; status 1 is kept for failures that are bugs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import __version__
from .core.config import (
    Config,
    ConfigError,
    PluginsSection,
    check_config,
    check_file,
    load_config,
    reference,
)
from .core.plugins import PluginManager, make_plugin_manager
from .core.store import StoreUnavailableError

if TYPE_CHECKING:
    from .core.devices import DeviceType
    from .core.hub import Hub

__all__ = ["main"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
"""A service the hub needs at start (its PostgreSQL) does not answer (sysexits' EX_UNAVAILABLE)."""
"""A user's mistake: bad arguments, a config with problems, a file that cannot be read."""

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


SUBCOMMAND_MODULES: tuple[str, ...] = (
    "cityvisor.demo",
    "cityvisor.docs",
    "cityvisor.hal.sim.cli",
    "cityvisor.journal",
    "cityvisor.opendata.cli",
    "cityvisor.plugins.access.cli",
    "cityvisor.scaffold",
    "cityvisor.web.cli",
)
"""Modules that add subcommands: each has ``register(commands, log_level_parent)``
which calls ``commands.add_parser(...)`` and ``set_defaults(handler=...,
default_log_level=...)``; a handler returns the exit status and raises
:class:`UsageError` for a user's mistake."""


class UsageError(Exception):
    """A mistake in how the command was called; its message is shown as is."""


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cityvisor`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage message already
        return int(exit_.code or 0)
    restore_logging = _setup_logging(args.log_level or args.default_log_level)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(f"cityvisor {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`cityvisor plugins | head`): not an error worth a
        # traceback; point stdout at devnull so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BUG
    finally:
        restore_logging()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityvisor",
        description="A plugin-based, SCADA-style hypervisor for a city's control room.",
    )
    parser.add_argument("--version", action="version", version=f"cityvisor {__version__}")
    # Defined on each subcommand too so that it can be given before or after it.
    log_level = argparse.ArgumentParser(add_help=False)
    log_level.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default=argparse.SUPPRESS,
        help="logging threshold (default: info for run, silent for the other commands)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, default=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", parents=[log_level], help="run a deployment until interrupted (SIGINT/SIGTERM)"
    )
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="deployment file")
    run.set_defaults(handler=_run, default_log_level="info")

    check = commands.add_parser(
        "check-config",
        parents=[log_level],
        help="validate a deployment file against the schema and the installed plugins",
    )
    check.add_argument("file", metavar="FILE", help="deployment file")
    check.set_defaults(handler=_check_config, default_log_level="critical")

    plugins = commands.add_parser(
        "plugins",
        parents=[log_level],
        help="list the plugins with their device types, points, commands and alarms",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    plugins.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="apply this deployment's [plugins] section (disabled plugins, entry points)",
    )
    plugins.set_defaults(handler=_plugins, default_log_level="critical")

    config_reference = commands.add_parser(
        "config-reference",
        parents=[log_level],
        help="print the configuration reference (Markdown) generated from the schema",
    )
    config_reference.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output"
    )
    config_reference.set_defaults(handler=_config_reference, default_log_level="critical")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(commands, log_level)
    return parser


LIBRARIES = ("pymodbus", "pysnmp", "pyasn1", "zeep", "onvif", "httpx", "aiohttp.client")
"""Loggers of the protocol libraries under the HAL (and their children). What they say
is about a device its driver already reports on, with the device's id: their records
are shown at ``debug`` only, however loud they are. (asyncio's and aiohttp's server
loggers are not among them: what they report is ours to fix.)"""


class ConsoleFormatter(logging.Formatter):
    """``2026-12-02T15:16:00.123+01:00 WARNING cityvisor.device.lighting: message``.

    The time is ISO 8601 with its offset, in the site's time zone once a command
    knows it (:func:`log_in_site_time`), the machine's until then.
    """

    zone: dt.tzinfo | None = None

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The record's time, ISO 8601 with milliseconds and the offset."""
        moment = dt.datetime.fromtimestamp(record.created).astimezone(ConsoleFormatter.zone)
        return moment.isoformat(timespec="milliseconds")


def log_in_site_time(zone: str) -> None:
    """Write the console's times in ``zone`` (the site's, an IANA name) from now on."""
    try:
        ConsoleFormatter.zone = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r: the log keeps the machine's", zone)


class _LibraryNoise(logging.Filter):
    """Demote the HAL's libraries' records to ``debug``; drop them under ``threshold``."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a library's record when debug is not shown; else keep it (demoted)."""
        name = record.name
        library = any(name == lib or name.startswith(lib + ".") for lib in LIBRARIES)
        if library and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def _setup_logging(level: str) -> Callable[[], None]:
    """Log to stderr at ``level``; return what puts the root logger back as it was.

    main() may run inside another program (the tests): it must leave the
    logging configuration as it found it.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(_LibraryNoise(logging.getLevelName(level.upper())))
    saved_level, saved_handlers = root.level, root.handlers[:]
    saved_zone = ConsoleFormatter.zone
    for existing in saved_handlers:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())

    def restore() -> None:
        root.removeHandler(handler)
        for existing in saved_handlers:
            root.addHandler(existing)
        root.setLevel(saved_level)
        ConsoleFormatter.zone = saved_zone

    return restore


def _plugin_manager(config: Config | PluginsSection | None) -> PluginManager:
    if config is None:
        return make_plugin_manager()
    section = config.plugins if isinstance(config, Config) else config
    return make_plugin_manager(entry_points=section.entry_points, disabled=section.disabled)


def _plugins_section(path: str) -> PluginsSection | None:
    """The ``[plugins]`` table of a file that does not load as a whole (None if unusable)."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return PluginsSection.model_validate(data.get("plugins", {}))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError):
        return None


# --------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plugins = _plugin_manager(config)
    problems = check_config(config, plugins)
    if problems:
        raise ConfigError(problems)
    # Imported here: the hub pulls in the whole runtime, which the other
    # commands do not need.
    from .core.hub import Hub

    hub = Hub(config, plugins)
    log_in_site_time(config.site.timezone)
    log.info("starting %s from %s", config.site.name, config.source)
    try:
        import anyio

        anyio.run(_serve, hub, backend="asyncio")
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop now
        log.warning("interrupted while stopping")
        return 128 + signal.SIGINT
    except Exception as error:
        unavailable = _store_unavailable(error)
        if unavailable is not None:
            # Not a bug: the database is down or unreachable. One line, naming the
            # server without its secrets; the service manager restarts the hub.
            log.critical("%s: [store] %s", config.source, unavailable)
            return EXIT_UNAVAILABLE
        # Parts of the hub restart themselves; an error reaching here is a bug:
        # its traceback belongs in the log, for the bug report.
        log.critical("the hub stopped on an unexpected error", exc_info=True)
        return EXIT_BUG
    log.info("stopped")
    return EXIT_OK


def _store_unavailable(error: BaseException) -> StoreUnavailableError | None:
    """The store's "cannot connect" inside ``error`` (the task groups wrap it), if that is what it is."""
    if isinstance(error, StoreUnavailableError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _store_unavailable(error.exceptions[0])
    return None


async def _serve(hub: Hub) -> None:
    """Run the hub until SIGINT or SIGTERM, then cancel it and let it stop in order."""
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            log.info("running; stop with Ctrl-C or SIGTERM")
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break


# --------------------------------------------------------------------------- check-config


def _check_config(args: argparse.Namespace) -> int:
    # The plugins the file asks for, if its [plugins] table can be read at all:
    # the devices are checked against their types even when the rest has problems.
    try:
        plugins = _plugin_manager(load_config(args.file))
    except ConfigError:
        plugins = _plugin_manager(_plugins_section(args.file))
    config, problems = check_file(args.file, plugins)
    for failure in plugins.failures:
        print(f"warning: {failure}", file=sys.stderr)
    if problems or config is None:
        raise ConfigError(problems)
    print(
        f"OK: {len(config.zones)} zones, {len(config.devices)} devices, {len(config.alarms)} alarms"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- config-reference


def _config_reference(args: argparse.Namespace) -> int:
    text = reference() + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {args.output}: {error.strerror or error}") from None
    return EXIT_OK


# --------------------------------------------------------------------------- plugins


def _plugins(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    plugins = _plugin_manager(config)
    report = describe_plugins(plugins)
    if args.json:
        json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_tree(report, sys.stdout)
    return EXIT_OK


def describe_plugins(plugins: PluginManager) -> dict[str, Any]:
    """Everything ``cityvisor plugins --json`` prints: plugins, their device types, failures."""
    declared = dict(plugins.call_each("cityvisor_device_types"))
    listed = []
    for name in plugins.plugin_names():
        if plugins.get_plugin(name) is None:  # blocked: disabled by the deployment
            continue
        types = declared.get(name) or ()
        listed.append({"name": name, "device_types": [describe_device_type(t) for t in types]})
    return {
        "plugins": listed,
        "failures": [
            {"name": f.name, "source": f.source, "error": f.error} for f in plugins.failures
        ],
    }


def describe_device_type(device_type: type[DeviceType]) -> dict[str, Any]:
    """A device type's declaration as JSON-ready data (config schema, points, commands, alarms)."""
    return {
        "type": device_type.type_name,
        "family": device_type.family,
        "label": dict(device_type.label),
        "doc": _first_paragraph(device_type.__doc__),
        "config": device_type.Config.model_json_schema(),
        "points": [
            {
                "name": name,
                "type": spec.dtype.value,
                "labels": {str(k): v for k, v in spec.labels.items()} if spec.labels else None,
                "unit": spec.unit,
                "per": spec.per,
                "writable": spec.writable,
                "minimum": spec.minimum,
                "maximum": spec.maximum,
                "history": spec.history,
                "doc": dict(spec.doc),
            }
            for name, spec in device_type.point_specs.items()
        ],
        "commands": [
            {
                "name": name,
                "params": spec.json_schema(),
                "per": spec.per,
                "role": str(spec.role),
                "confirm": spec.confirm,
                "two_person": spec.two_person,
                "approver_role": str(spec.approver_role_needed),
                "interlocks": [
                    {
                        "point": lock.point,
                        "equals": lock.equals,
                        "not_equals": lock.not_equals,
                        "reason": dict(lock.reason),
                    }
                    for lock in spec.interlocks
                ],
                "feedback": None
                if spec.feedback is None
                else {
                    "point": spec.feedback.point,
                    "value": spec.feedback.value,
                    "param": spec.feedback.param,
                    "tolerance": spec.feedback.tolerance,
                    "within": spec.feedback.within,
                },
                "doc": dict(spec.doc),
                "label": dict(spec.label),
            }
            for name, spec in device_type.command_specs.items()
        ],
        "alarms": [
            {
                "name": name,
                "point": spec.point,
                "condition": spec.condition.describe(),
                "priority": str(spec.priority),
                "procedure": spec.procedure,
                "message": dict(spec.message),
            }
            for name, spec in device_type.alarm_specs.items()
        ],
    }


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())


def _english(text: Mapping[str, str] | None) -> str:
    """The English text of a ``{fr, en}`` mapping, else any (the CLI speaks English)."""
    if not text:
        return ""
    return text.get("en") or next(iter(text.values()))


def _print_tree(report: Mapping[str, Any], out: TextIO) -> None:
    def line(depth: int, text: str) -> None:
        out.write("  " * depth + text + "\n")

    if not report["plugins"]:
        line(0, "no plugin loaded")
    for plugin in report["plugins"]:
        count = len(plugin["device_types"])
        line(0, f"{plugin['name']}  ({count} device type{'s' if count != 1 else ''})")
        for device_type in plugin["device_types"]:
            label = _english(device_type["label"])
            title = f"{device_type['type']}" + (f" — {label}" if label else "")
            line(1, title + (f": {device_type['doc']}" if device_type["doc"] else ""))
            properties = device_type["config"].get("properties", {})
            if properties:
                line(2, "config:")
                for key, prop in properties.items():
                    default = f" = {json.dumps(prop['default'])}" if "default" in prop else ""
                    description = f"  {prop['description']}" if "description" in prop else ""
                    line(3, f"{key}{default}{description}")
            line(2, "points:")
            for point in device_type["points"]:
                kind = point["type"]
                if point["labels"]:
                    kind += " {" + ", ".join(f"{k}: {v}" for k, v in point["labels"].items()) + "}"
                details = [kind]
                if point["unit"]:
                    details.append(point["unit"])
                if point["per"]:
                    details.append(f"per {point['per']}")
                if point["writable"]:
                    details.append("writable")
                doc = _english(point["doc"])
                line(3, f"{point['name']}: {', '.join(details)}" + (f" — {doc}" if doc else ""))
            if device_type["commands"]:
                line(2, "commands:")
            for command in device_type["commands"]:
                params = ", ".join(
                    f"{name}: {_param(schema)}"
                    for name, schema in command["params"]["properties"].items()
                )
                details = [f"role {command['role']}"]
                if command["per"]:
                    details.append(f"per {command['per']}")
                if command["confirm"]:
                    details.append("confirm")
                if command["two_person"]:
                    details.append(f"two-person (approver: {command['approver_role']})")
                for lock in command["interlocks"]:
                    if lock["equals"] is not None:
                        details.append(f"interlock {lock['point']} == {lock['equals']!r}")
                    else:
                        details.append(f"interlock {lock['point']} != {lock['not_equals']!r}")
                feedback = command["feedback"]
                if feedback:
                    target = (
                        f"param {feedback['param']}"
                        if feedback["param"]
                        else repr(feedback["value"])
                    )
                    details.append(
                        f"feedback {feedback['point']} reaches {target} within {feedback['within']} s"
                    )
                line(3, f"{command['name']}({params}): {'; '.join(details)}")
            line(2, "alarms:")
            for alarm in device_type["alarms"]:
                procedure = f", procedure {alarm['procedure']}" if alarm["procedure"] else ""
                line(
                    3,
                    f"{alarm['name']}: {alarm['point']} {alarm['condition']}, "
                    f"{alarm['priority']}{procedure}",
                )
    if report["failures"]:
        line(0, "failed to load:")
        for failure in report["failures"]:
            line(1, f"{failure['name']} ({failure['source']}): {failure['error']}")


def _param(schema: Mapping[str, Any]) -> str:
    text = schema.get("type", "any")
    if "enum" in schema:
        text = " | ".join(json.dumps(v) for v in schema["enum"])
    elif "minimum" in schema or "maximum" in schema:
        text += f" {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    if schema.get("x-unit"):
        text += f" {schema['x-unit']}"
    return text
