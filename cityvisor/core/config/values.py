"""The value types of the deployment file: identifiers, names, operator-facing text, scalars."""

from __future__ import annotations

import re
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from .messages import _show

# --------------------------------------------------------------------------- value types

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"expected a slug (lower-case letters, digits, '-' and '_', at most 64), got {_show(value)}"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"expected a name of letters, digits, '-', '_', '.' and '@', got {_show(value)}"
        )
    return value


Slug = Annotated[
    str,
    AfterValidator(_slug),
    WithJsonSchema({"type": "string", "pattern": _SLUG.pattern}),
]
"""An identifier that goes into point ids and URLs: ``dijon``, ``cab-07``."""


Name = Annotated[
    str,
    AfterValidator(_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern}),
]
"""An identifier that may use capitals and dots: ``DEMO-01``, ``alice.martin``."""


def _text(value: Any) -> Any:
    # A plain string serves every language; a table gives one text per language.
    if isinstance(value, str):
        return {"fr": value, "en": value}
    return value


Language = Annotated[str, pydantic.StringConstraints(pattern=r"^[a-z]{2}$")]


Text = Annotated[
    dict[Language, str],
    BeforeValidator(_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ],
            "description": 'a string, or one text per language: {fr = "...", en = "..."}',
        }
    ),
]
"""Operator-facing text: ``"Niveau haut"`` or ``{fr = "Niveau haut", en = "High water"}``."""


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ValueError(f"expected a number, true/false or a string, got {_show(value)}")
    return value


Scalar = Annotated[
    Any,
    AfterValidator(_scalar),
    WithJsonSchema({"type": ["number", "boolean", "string"]}),
]
