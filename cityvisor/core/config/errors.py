"""The configuration error, and the problems it lists: each names its file, key and what was expected."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A deployment file that cannot be used, with every problem found in it.

    ``problems`` holds one line per problem, each naming the file, the key
    path and what was expected; ``str(error)`` joins them with newlines.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


Loc = tuple[str | int, ...]
"""Where a problem is: the key path in the file (``("devices", 3, "config")``)."""
Problem = tuple[Loc, str]
"""One problem: where, and what was expected."""
