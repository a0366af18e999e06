"""The configuration reference: docs/configuration.md generated from the models, so it cannot drift."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

from .opendata import OpenDataAggregate, OpenDataBroker, OpenDataFamily, OpenDataSection
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
from .values import _SLUG

# --------------------------------------------------------------------------- reference

_SECTIONS: tuple[tuple[str, type[Section], bool], ...] = (
    ("site", SiteSection, False),
    ("store", StoreSection, False),
    ("journal", JournalSection, False),
    ("web", WebSection, False),
    ("security", SecuritySection, False),
    ("plugins", PluginsSection, False),
    ("zones", ZoneEntry, True),
    ("devices", DeviceEntry, True),
    ("alarms", AlarmEntry, True),
    ("procedures", ProcedureEntry, True),
    ("users", UserEntry, True),
    ("opendata", OpenDataSection, False),
    ("opendata.families.<family>", OpenDataFamily, False),
    ("opendata.families.<family>.aggregate.<point>", OpenDataAggregate, False),
    ("opendata.broker", OpenDataBroker, False),
)


def reference() -> str:
    """The configuration reference in Markdown, generated from the models above.

    ``docs/configuration.md`` is this text (a test keeps them equal):
    regenerate it with ``cityvisor config-reference -o docs/configuration.md``.
    """
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from cityvisor/core/config/ by `cityvisor config-reference"
        " -o docs/configuration.md`; do not edit by hand. -->",
        "",
        "A deployment is one TOML file (`cityvisor run -c city.toml`). Check it with",
        "`cityvisor check-config city.toml`: every problem is reported at once, with",
        "the file and line, the entry by its id and the key path (`city.toml:57: device",
        "cab-07: config.port: ...`) and what was expected.",
        "Unknown keys are errors. Durations are in seconds. A *slug* is an identifier",
        "of lower-case letters, digits, `-` and `_` (at most 64 characters).",
        "",
        "Any string value may contain `${NAME}`: it is replaced by the environment variable",
        "`NAME` (an error if it is not set; `$${NAME}` keeps the text as is). Keep device",
        "passwords and keys there. Keys whose name contains password, secret, key,",
        "community or token are shown as `***` whenever the config is displayed.",
        "",
        "Each device's `config` table is checked against its device type's own",
        "schema: `cityvisor plugins` lists the device types installed.",
        "",
    ]
    for name, model, is_list in _SECTIONS:
        header = f"[[{name}]]" if is_list else f"[{name}]"
        doc = (model.__doc__ or "").strip().split("\n", 1)
        summary = doc[0].split(":", 1)[-1].strip()
        lines += [f"## `{header}`", "", summary[0].upper() + summary[1:], ""]
        if len(doc) > 1:
            lines += [_dedent(doc[1]), ""]
        if name == "site":
            lines += ["This section is required.", ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        schema = model.model_json_schema()
        required = set(schema.get("required", ()))
        for key, field in model.model_fields.items():
            prop = schema["properties"][key]
            default = "*required*" if key in required else _default(field)
            description = " ".join((field.description or "").split())
            lines.append(
                f"| `{key}` | {_schema_type(prop, schema)} | {default} | {_cell(description)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _dedent(text_: str) -> str:
    return "\n".join(line.strip() for line in text_.strip().splitlines())


def _cell(text_: str) -> str:
    return text_.replace("|", "\\|").replace("``", "`")


def _default(field: pydantic.fields.FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, Path):
        value = str(value)
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _schema_type(prop: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """A short, readable type from a JSON schema fragment."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return f"`{_toml(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{_toml(v)}`" for v in prop["enum"])
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        shown = " or ".join(_schema_type(o, root) for o in options)
        if len(options) < len(prop["anyOf"]):
            shown += " (optional)"
        return shown
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_schema_type(i, root) for i in prop["prefixItems"]) + "]"
        return f"list of {_schema_type(prop.get('items', {}), root)}"
    if kind == "object":
        values = prop.get("additionalProperties")
        if not isinstance(values, Mapping) or not values:
            patterns = prop.get("patternProperties") or {}
            values = next(iter(patterns.values()), None)
        if isinstance(values, Mapping) and values:
            return f"table of {_schema_type(values, root)}"
        return "table"
    names = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    shown = names.get(kind or "", "any")
    limits = [
        f"{symbol} {_toml(prop[key])}"
        for key, symbol in (
            ("exclusiveMinimum", ">"),
            ("minimum", "≥"),
            ("exclusiveMaximum", "<"),
            ("maximum", "≤"),
        )
        if key in prop
    ]
    if limits:
        shown += " (" + ", ".join(limits) + ")"
    if prop.get("pattern") == _SLUG.pattern:
        shown = "slug"
    elif "pattern" in prop:
        shown += f" matching `{prop['pattern']}`"
    return shown
