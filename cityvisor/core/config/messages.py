"""Problems as messages: each pydantic error turned into one line naming the file, key and expectation."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

import pydantic

from .errors import Loc, Problem


def _path(loc: Loc) -> str:
    """``("devices", 2, "config", "port")`` -> ``devices[2].config.port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML terms, kept short."""
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _pydantic_problems(
    error: pydantic.ValidationError, prefix: Loc, model: type[pydantic.BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = "unknown key"
            if allowed:
                message += f" (expected one of: {', '.join(allowed)})"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in ("value_error", "assertion_error"):
            message = str(item.get("ctx", {}).get("error", item["msg"]))
        else:
            message = f"{item['msg']}, got {_show(item['input'])}"
        problems.append(((*prefix, *loc), message))
    return problems


def _allowed_keys(model: type[pydantic.BaseModel], loc: Loc) -> list[str]:
    """The keys a table at ``loc`` accepts, when it is a model (for "unknown key" messages)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            if typing.get_origin(annotation) in (list, tuple) and args:
                annotation = args[0]
                continue
            return []
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return []
            annotation = field.annotation
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X | None, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
