"""The deployment file: one TOML file -> a validated :class:`Config`.

A deployment (a city, a demo, a test bench) is described by one TOML file
with the sections ``[site]``, ``[store]``, ``[web]``, ``[plugins]`` and the
lists ``[[zones]]``, ``[[devices]]``, ``[[alarms]]``, ``[[procedures]]`` and
``[[users]]``. :func:`load_config` reads it in two passes:

1. TOML syntax, ``${ENV_VAR}`` substitution, the schema below and the cross
   references the file can check on its own (zones, unique ids, the devices
   an alarm or a camera link names);
2. :meth:`Config.resolve_devices`, once the plugins are loaded: each
   device's ``type`` must be a known device type and its ``config`` table
   must satisfy that type's own ``Config`` model.

Every problem is reported at once, one line each, naming the file, the key
path and what was expected (``demo.toml: devices[2].config.port: Input
should be a valid integer, got "abc"``), in a :class:`ConfigError`: a user's
mistake is a message, never a traceback.

The models' field docstrings are the configuration reference:
``cityvisor config-reference`` renders them into ``docs/configuration.md``.

Where each part lives: ``model.py`` (:class:`Config`), ``sections.py``
(its sections and entries), ``values.py`` (identifiers, names, text),
``loading.py`` (:func:`load_config`, :func:`parse_config`,
:func:`check_config` and the cross-checks), ``messages.py`` (problems as
lines that name file and key), ``opendata.py`` (``[opendata]``), ``report.py`` (check-config's
report: every problem with its line), ``redaction.py`` (secrets), ``reference.py``
(the generated reference) and ``errors.py`` (:class:`ConfigError`).
"""

from __future__ import annotations

from .errors import ConfigError
from .loading import Loc, Problem, check_config, load_config, parse_config, resolve_devices
from .model import CAMERA_FAMILY, Config, ResolvedDevice
from .opendata import (
    LICENCES,
    SENSITIVE_FAMILIES,
    OpenDataAggregate,
    OpenDataBroker,
    OpenDataFamily,
    OpenDataSection,
)
from .redaction import REDACTED, SECRET_WORDS, is_secret_key, redact
from .reference import reference
from .report import check_file
from .sections import (
    AlarmEntry,
    DeviceEntry,
    JournalSection,
    PluginsSection,
    ProcedureEntry,
    Section,
    SecuritySection,
    SiteSection,
    StoreSection,
    UserEntry,
    WebSection,
    ZoneEntry,
)
from .values import Language, Name, Scalar, Slug, Text

__all__ = [
    "CAMERA_FAMILY",
    "LICENCES",
    "REDACTED",
    "SECRET_WORDS",
    "SENSITIVE_FAMILIES",
    "AlarmEntry",
    "Config",
    "ConfigError",
    "DeviceEntry",
    "JournalSection",
    "Language",
    "Loc",
    "Name",
    "OpenDataAggregate",
    "OpenDataBroker",
    "OpenDataFamily",
    "OpenDataSection",
    "PluginsSection",
    "Problem",
    "ProcedureEntry",
    "ResolvedDevice",
    "Scalar",
    "Section",
    "SecuritySection",
    "SiteSection",
    "Slug",
    "StoreSection",
    "Text",
    "UserEntry",
    "WebSection",
    "ZoneEntry",
    "check_config",
    "check_file",
    "is_secret_key",
    "load_config",
    "parse_config",
    "redact",
    "reference",
    "resolve_devices",
]
