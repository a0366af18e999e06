"""The rules for text that comes from outside: one validator, used at every edge.

Comments, reasons, user names, passwords, command arguments and query
strings all reach the journal, the logs and other operators' screens. Text
that cannot be stored (a lone UTF-16 surrogate has no UTF-8 encoding), that
hides what it says (control characters, a terminal escape) or that has no
end is refused where it enters, with a message naming the field, instead of
failing later inside the journal writer.

Numbers that enter the system have bounds too: :data:`MAX_INTEGER` is the
largest integer SQLite (and so the journal and the history) can hold.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_INTEGER",
    "MAX_TIME_MS",
    "MIN_INTEGER",
    "integer_problem",
    "safe_text",
    "shown",
    "text_problem",
]

MAX_INTEGER = 2**63 - 1
"""The largest integer a SQLite column (journal, history) holds."""
MIN_INTEGER = -(2**63)
"""The smallest integer a SQLite column holds."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z in epoch milliseconds: the last time the API accepts."""

# C0 controls but tab, newline and carriage return, DEL, C1 controls: nothing an
# operator types.
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(
    name: str,
    value: str,
    *,
    max_length: int,
    multiline: bool = False,
    min_length: int = 0,
) -> str | None:
    """Why ``value`` may not enter the system as field ``name``, or None when it may.

    Refused: a lone surrogate (not Unicode that can be stored), a C0/C1
    control character (tab, newline and carriage return are allowed when ``multiline``, for
    comments written on several lines), more than ``max_length`` characters
    or fewer than ``min_length``. Everything else printable is accepted,
    letters of every script and characters beyond the BMP included.
    """
    if len(value) > max_length:
        return f"{name} must be at most {max_length} characters (got {len(value)})"
    if len(value) < min_length:
        if min_length == 1:
            return f"{name} must not be empty"
        return f"{name} must be at least {min_length} characters"
    surrogate = _SURROGATE.search(value)
    if surrogate is not None:
        return (
            f"{name} is not valid Unicode: a lone surrogate U+{ord(surrogate.group()):04X} "
            f"at character {surrogate.start()}"
        )
    control = (_CONTROL_MULTILINE if multiline else _CONTROL_ONE_LINE).search(value)
    if control is not None:
        return (
            f"{name} must not contain control characters: U+{ord(control.group()):04X} "
            f"at character {control.start()}" + ("" if multiline else " (it is one line)")
        )
    return None


def integer_problem(
    name: str, value: int, *, minimum: int = MIN_INTEGER, maximum: int = MAX_INTEGER
) -> str | None:
    """Why the integer ``value`` is out of ``[minimum, maximum]``, or None when it is in."""
    if value < minimum:
        return f"{name} must be >= {minimum}"
    if value > maximum:
        return f"{name} must be <= {maximum}"
    return None


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message.

    Never fails: an integer too long for Python's int-to-text limit is
    described by its size instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # an object whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    text = safe_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_text(value: str) -> str:
    """``value`` with every lone surrogate written as ``\\udXXX``: always encodable as UTF-8."""
    if _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
