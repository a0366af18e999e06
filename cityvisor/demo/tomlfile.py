"""Write a deployment file: the small subset of TOML that cityvisor's config uses.

The demo generates its city's config as data and writes it out, so that an
integrator can read the file, copy it and ``cityvisor run -c`` it. The
standard library reads TOML but does not write it, and the config needs
only tables, arrays of tables, inline tables, arrays and scalars.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dumps"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(data: Mapping[str, Any], *, header: str = "") -> str:
    """``data`` as TOML text: scalars first, then ``[tables]``, then ``[[arrays of tables]]``.

    Inside a table, a nested mapping is written as an inline table, except
    ``config`` tables of devices, written as ``[devices.config]`` sections
    when they hold a nested table (easier to read). ``header`` is put first
    as ``#`` comment lines.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_array(v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if _is_table(value):
            lines += ["", f"[{_key(key)}]", *_body(value, key)]
    for key, value in data.items():
        if _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]", *_body(item, key)]
    text = "\n".join(lines).lstrip("\n") + "\n"
    while "\n\n\n" in text:  # one blank line between sections, whatever came first
        text = text.replace("\n\n\n", "\n\n")
    return text


def _body(table: Mapping[str, Any], path: str) -> list[str]:
    lines = []
    sections = []
    for key, value in table.items():
        if _is_table(value) and any(_is_table(v) for v in value.values()):
            sections.append((key, value))  # a table holding tables reads better as a section
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in sections:
        lines += ["", f"[{path}.{_key(key)}]", *_body(value, f"{path}.{_key(key)}")]
    return lines


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are valid in TOML's basic strings.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
