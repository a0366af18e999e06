"""The point index: a trie over id levels, so a pattern visits only the branches it can match.

Point ids are hierarchical (``zone/family/device/member/name``). The index
keeps one dict per level: a literal level of a pattern is one dict lookup,
a level with a wildcard (``cab-*``) tries only the children of the branch
reached so far, and a ``**`` level takes the whole branch below it (checked
against the compiled pattern only when more levels follow the ``**``). A
subscription to ``centre/**`` among 250,000 points therefore costs what it
returns, not a scan of the city.

A node is a dict from level text to child; a leaf that is only a point is
stored as the :class:`~cityvisor.core.points.Point` itself (most of the
nodes), and a point whose id is also a prefix of others sits under the
key ``None`` of its node.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..patterns import Pattern, compile_pattern, is_pattern

if TYPE_CHECKING:  # the database's entries: only needed for hints
    from .database import Point

__all__ = ["PointIndex"]

_ANY_LEVELS = "**"

Node = dict[str | None, Any]


class PointIndex:
    """Points by their id's levels; :meth:`match` finds the points of a pattern."""

    def __init__(self) -> None:
        self._root: Node = {}

    def add(self, point: Point) -> None:
        """Index ``point`` under its id (the id must not be indexed already)."""
        *parents, last = point.id.split("/")
        node = self._root
        for level in parents:
            child = node.get(level)
            if child is None:
                child = node[level] = {}
            elif not isinstance(child, dict):
                child = node[level] = {None: child}
            node = child
        existing = node.get(last)
        if existing is None:
            node[last] = point
        elif isinstance(existing, dict):
            existing[None] = point
        else:
            raise ValueError(f"point {point.id!r} is already indexed")

    def remove(self, point_id: str) -> None:
        """Forget the point of ``point_id`` (nothing happens if it is not indexed)."""
        *parents, last = point_id.split("/")
        path: list[tuple[Node, str]] = []
        node = self._root
        for level in parents:
            child = node.get(level)
            if not isinstance(child, dict):
                return
            path.append((node, level))
            node = child
        found = node.get(last)
        if isinstance(found, dict):
            found.pop(None, None)
            if found:
                return
        elif found is None:
            return
        del node[last]
        # Prune the branches left empty, so a city that shrinks gives memory back.
        for parent, level in reversed(path):
            if parent[level]:
                break
            del parent[level]

    def match(self, pattern: Pattern) -> list[Point]:
        """The points whose id matches ``pattern``, branch by branch in the order added."""
        out: list[Point] = []
        if pattern.exact is not None:
            point = self.get(pattern.exact)
            if point is not None:
                out.append(point)
            return out
        self._walk(self._root, pattern.text.split("/"), 0, pattern, out)
        return out

    def get(self, point_id: str) -> Point | None:
        """The point of ``point_id``, or None."""
        node: Any = self._root
        for level in point_id.split("/"):
            if not isinstance(node, dict):
                return None
            node = node.get(level)
            if node is None:
                return None
        if isinstance(node, dict):
            return node.get(None)
        return node  # type: ignore[no-any-return]

    def _walk(
        self, node: Node, levels: list[str], i: int, pattern: Pattern, out: list[Point]
    ) -> None:
        last = len(levels) - 1
        while True:
            level = levels[i]
            if level == _ANY_LEVELS:
                if i == last:
                    out.extend(_everything(node))
                else:
                    # More levels after "**": the compiled pattern decides (linear time).
                    matches = pattern.matches
                    out.extend(p for p in _everything(node) if matches(p.id))
                return
            if is_pattern(level):
                one_level = compile_pattern(level)
                for key, child in node.items():
                    if key is not None and one_level.matches(key):
                        self._descend(child, levels, i, pattern, out)
                return
            child = node.get(level)
            if child is None:
                return
            if i == last or not isinstance(child, dict):
                self._descend(child, levels, i, pattern, out)
                return
            node = child
            i += 1

    def _descend(
        self, child: Any, levels: list[str], i: int, pattern: Pattern, out: list[Point]
    ) -> None:
        """Go on below ``child``, reached by matching level ``i``."""
        rest = len(levels) - 1 - i
        if isinstance(child, dict):
            if rest == 0:
                point = child.get(None)
                if point is not None:
                    out.append(point)
            else:
                if rest == 1 and levels[-1] == _ANY_LEVELS:
                    # "a/**" matches "a" itself too.
                    point = child.get(None)
                    if point is not None:
                        out.append(point)
                    out.extend(p for p in _everything(child) if p is not point)
                    return
                self._walk(child, levels, i + 1, pattern, out)
        elif (
            rest == 0
            or (rest == 1 and levels[-1] == _ANY_LEVELS)
            or all(level == _ANY_LEVELS for level in levels[i + 1 :])
        ):
            out.append(child)


def _everything(node: Node) -> Iterator[Point]:
    """Every point at and below ``node``, depth first in the order added."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            yield item
            continue
        here = item.get(None)
        if here is not None:
            yield here
        children = [child for key, child in item.items() if key is not None]
        children.reverse()
        stack.extend(children)
