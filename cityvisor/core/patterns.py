"""Point patterns: globs over hierarchical point ids, matched in linear time.

A pattern is read level by level (levels are separated by ``/``), as
``.gitignore`` reads paths:

- ``*`` matches any text within one level (``cab-*``), ``?`` one character
  of a level; everything else is literal;
- ``**`` standing alone as a level matches zero or more whole levels:
  ``dijon/**`` matches ``dijon`` and everything under it, ``**/level`` every
  ``level`` point, ``a/**/b`` matches ``a/b`` and ``a/x/y/b``; ``**`` within
  a level (``cab**``) is the same as ``*``.

Why not :mod:`fnmatch` or a naive translation to a regular expression: both
backtrack, and a short hostile pattern (``*a*a*a*a*a*b`` against a long
level, ``**/**/**/**/x`` against a deep id) takes time exponential in its
number of wildcards; the event loop stalls while it runs. Here a pattern is
compiled to a regular expression that *cannot* backtrack across wildcards:

- each level is an atomic group that must end at the level's end; within
  it the stars before the last one take the *leftmost* place where the next
  literal chunk fits, and never reconsider (for a glob, the leftmost place
  is always right: it leaves the most text to what follows);
- a ``**`` before more levels takes, in the same way, the leftmost run of
  levels after which those levels match, and commits to it;
- only the last star of a level and the last ``**`` of the pattern may
  retry, each over one position at a time and never nested in another retry.

Matching one id therefore costs at most (levels of the id) x (length of the
pattern) steps. :data:`MAX_LENGTH` and :data:`MAX_WILDCARDS` bound that
further; :class:`PatternError` says what is wrong with a refused pattern.

This module is the one matcher of point ids: subscriptions, the points
listing and every filter by pattern use :func:`compile_pattern`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = [
    "MAX_LENGTH",
    "MAX_WILDCARDS",
    "Pattern",
    "PatternError",
    "compile_pattern",
    "is_pattern",
]

MAX_LENGTH = 200
"""Longest pattern accepted, in characters."""
MAX_WILDCARDS = 16
"""Most wildcards (``*``, ``**`` and ``?`` each count one) in one pattern."""

_ANY_LEVELS = "**"
_SKIP_LEVEL = r"[^/]*+/"  # one whole level and its separator, never given back


class PatternError(ValueError):
    """A pattern that is refused: too long, too many wildcards, or not text.

    The message says which limit and what was given; the web API answers it
    with a 422, the WebSocket with an ``invalid_request`` error.
    """


def is_pattern(text: str) -> bool:
    """True if ``text`` has a wildcard (otherwise it names one point exactly)."""
    return "*" in text or "?" in text


class Pattern:
    """A compiled point pattern; build it with :func:`compile_pattern`.

    >>> compile_pattern("dijon/lighting/**").matches("dijon/lighting/cab-07/c1/level")
    True
    >>> compile_pattern("*/lighting/*/c1/level").matches("dijon/lighting/cab-07/c1/level")
    True
    >>> compile_pattern("dijon/**").matches("dijonville/x")
    False
    """

    __slots__ = ("_match", "exact", "text")

    def __init__(self, text: str, regex: re.Pattern[str] | None) -> None:
        self.text = text
        """The pattern as written."""
        self.exact = None if regex is not None else text
        """The one id the pattern names, if it has no wildcard (else None)."""
        self._match = regex.match if regex is not None else None

    def matches(self, point_id: str) -> bool:
        """True if ``point_id`` matches the pattern."""
        if self._match is None:
            return point_id == self.exact
        # Every level, the last one too, is matched with its separator.
        return self._match(point_id + "/") is not None

    def filter(self, point_ids: Iterable[str]) -> list[str]:
        """The ids among ``point_ids`` that match, in their order."""
        if self._match is None:
            return [i for i in point_ids if i == self.exact]
        match = self._match
        return [i for i in point_ids if match(i + "/") is not None]

    def __repr__(self) -> str:
        return f"<Pattern {self.text!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _check(text: object) -> str:
    if not isinstance(text, str):
        raise PatternError(f"a pattern must be text, got {type(text).__name__}")
    if not text:
        raise PatternError("a pattern must not be empty")
    if len(text) > MAX_LENGTH:
        raise PatternError(
            f"pattern {text[:40]!r}... is {len(text)} characters long; at most {MAX_LENGTH}"
        )
    wildcards = len(re.findall(r"\*\*|\*|\?", text))
    if wildcards > MAX_WILDCARDS:
        raise PatternError(
            f"pattern {text[:60]!r} has {wildcards} wildcards; at most {MAX_WILDCARDS}"
        )
    return text


def _chunk(text: str) -> str:
    """A run of literal characters and ``?`` as a regex that never backtracks."""
    return "".join("[^/]" if c == "?" else re.escape(c) for c in text)


def _level(text: str) -> str:
    """One level of a pattern as an atomic group that ends with the level's separator."""
    if _ANY_LEVELS in text:
        text = re.sub(r"\*{2,}", "*", text)  # "**" inside a level is a star
    chunks = text.split("*")
    if len(chunks) == 1:
        return _chunk(text) + "/"
    first, *middle, last = chunks
    parts = [_chunk(first)]
    # Stars before the last: the leftmost fit of the next chunk, committed.
    parts += [f"(?>[^/]*?{_chunk(c)})" for c in middle if c]
    # The last star: as much as leaves room for the last chunk before the separator.
    parts.append(f"[^/]*{_chunk(last)}/")
    return "(?>" + "".join(parts) + ")"


def _translate(text: str) -> str:
    levels = text.split("/")
    # Runs of "**" levels mean the same as one.
    collapsed: list[str] = []
    for level in levels:
        if level == _ANY_LEVELS and collapsed and collapsed[-1] == _ANY_LEVELS:
            continue
        collapsed.append(level)
    # Groups of fixed levels between the "**" levels.
    groups: list[list[str]] = [[]]
    for level in collapsed:
        if level == _ANY_LEVELS:
            groups.append([])
        else:
            groups[-1].append(level)
    first, *rest = groups
    regex = "".join(_level(level) for level in first)
    if not rest:
        return regex + r"\Z"
    *middle, last = rest
    for group in middle:
        if group:
            # The leftmost run of skipped levels after which the group matches.
            regex += f"(?>(?:{_SKIP_LEVEL})*?" + "".join(_level(level) for level in group) + ")"
    if last:
        regex += f"(?:{_SKIP_LEVEL})*" + "".join(_level(level) for level in last)
    else:
        regex += f"(?:{_SKIP_LEVEL})*+"
    return regex + r"\Z"


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> Pattern:
    if not is_pattern(text):
        return Pattern(text, None)
    return Pattern(text, re.compile(_translate(text)))


def compile_pattern(text: str) -> Pattern:
    """Compile ``text`` (cached), or raise :class:`PatternError` saying why it is refused."""
    return _compile(_check(text))
