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
from typing import Any, Generic, Protocol, TypeVar

from ..patterns import Pattern, compile_pattern, is_pattern

__all__ = ["PointIndex"]


class Indexed(Protocol):
    """What the index holds: anything with an ``id`` (the database's points)."""

    @property
    def id(self) -> str: ...


Point = TypeVar("Point", bound=Indexed)

_ANY_LEVELS = "**"

Node = dict[str | None, Any]


class PointIndex(Generic[Point]):
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
        return list(self.iterate(pattern))

    def iterate(self, pattern: Pattern, after: str | None = None) -> Iterator[Point]:
        """The points of ``pattern`` one at a time, in :meth:`match`'s order.

        The walk may pause between points while others are added or removed:
        a point added meanwhile may or may not be given, one removed
        meanwhile may still be (the caller checks, as the database does).

        With ``after`` (the id of a point returned before), only the points
        that come after it: how a listing resumes at its cursor without
        going through what it already returned. Should that point have been
        removed meanwhile, its branch is given again from its start (a page
        may then repeat points, it never skips one).
        """
        if pattern.exact is not None:
            point = self.get(pattern.exact)
            if point is not None and after is None:
                yield point
            return
        path = after.split("/") if after is not None else None
        levels: list[str] = []
        for level in pattern.text.split("/"):
            # Runs of "**" levels mean the same as one (as in the patterns module).
            if not (level == _ANY_LEVELS and levels and levels[-1] == _ANY_LEVELS):
                levels.append(level)
        yield from self._iterate(self._root, _Plan(levels, pattern), 0, path)

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

    def _iterate(self, node: Node, plan: _Plan, i: int, path: list[str] | None) -> Iterator[Point]:
        """The points below ``node`` (at depth ``i``) that match the plan's levels from ``i``.

        ``path`` is the cursor's levels while ``node`` is on the cursor's
        branch (what comes before it is left out), None once past it.
        """
        levels = plan.levels
        if path is None and plan.literal_from[i]:
            # Only literal levels left: one lookup each, no walk.
            found: Any = node
            for level in levels[i:]:
                found = found.get(level) if isinstance(found, dict) else None
                if found is None:
                    return
            if isinstance(found, dict):
                found = found.get(None)
            if found is not None:
                yield found
            return
        level = levels[i]
        if level == _ANY_LEVELS:
            matches = None if i == plan.last else plan.pattern.matches
            for point in _everything(node, path, i):
                if matches is None or matches(point.id):
                    yield point
            return
        one_level = plan.matchers[i]
        if one_level is None:
            child = node.get(level)
            if child is None:
                return
            if path is not None and i < len(path) and path[i] != level:
                if _comes_before(node, level, path[i]):
                    return  # the whole branch was returned before the cursor
                path = None
            children: Iterator[tuple[str, Any, list[str] | None]] = iter(((level, child, path),))
        elif path is None:
            # A copy of the children: the walk may pause between them.
            matches_level = one_level.matches
            children = (
                (key, child, None)
                for key, child in list(node.items())
                if key is not None and matches_level(key)
            )
        else:
            children = (
                (key, child, on_path)
                for key, child, on_path in _children(node, path, i)
                if one_level.matches(key)
            )
        takes_here = plan.takes_here[i + 1]
        has_rest = i < plan.last
        only_any_after = has_rest and plan.only_any[i + 1]
        for _key, child, on_path in children:
            if isinstance(child, dict):
                here = child.get(None)
                if takes_here and here is not None and on_path is None:
                    yield here
                if only_any_after:
                    # "a/**": "a" itself is given above, then everything under it.
                    yield from _everything(child, on_path, i + 1, skip_here=True)
                elif has_rest:
                    yield from self._iterate(child, plan, i + 1, on_path)
            elif takes_here and on_path is None:
                yield child


class _Plan:
    """A pattern's levels, and what the walk asks of each, worked out once per walk."""

    __slots__ = ("last", "levels", "literal_from", "matchers", "only_any", "pattern", "takes_here")

    def __init__(self, levels: list[str], pattern: Pattern) -> None:
        self.levels = levels
        self.pattern = pattern
        self.last = len(levels) - 1
        self.matchers = [
            compile_pattern(level) if level != _ANY_LEVELS and is_pattern(level) else None
            for level in levels
        ]
        # takes_here[j]: every level from j on is "**" (or there is none left), so a
        # point reached at depth j matches; only_any[j]: level j is the last and is "**".
        self.takes_here = [
            all(level == _ANY_LEVELS for level in levels[j:]) for j in range(len(levels) + 1)
        ]
        # literal_from[j]: no wildcard in level j or after it (a lookup per level).
        self.literal_from = [
            all(
                level != _ANY_LEVELS and matcher is None
                for level, matcher in zip(levels[j:], self.matchers[j:], strict=True)
            )
            for j in range(len(levels))
        ]
        self.only_any = [
            j == self.last and levels[j] == _ANY_LEVELS for j in range(len(levels))
        ] + [False]


def _comes_before(node: Node, key: str, cursor_key: str) -> bool:
    """True if child ``key`` of ``node`` comes before ``cursor_key`` (False if that is gone)."""
    if cursor_key not in node:
        return False
    for k in node:
        if k == cursor_key:
            return False
        if k == key:
            return True
    return False


def _children(
    node: Node, path: list[str] | None, depth: int
) -> Iterator[tuple[str, Any, list[str] | None]]:
    """The children of ``node`` in order, with the cursor's path for the one on it.

    On the cursor's branch, the children before the cursor's are left out;
    the cursor's own child keeps the path (it is partly before the cursor),
    the ones after it are wholly after.
    """
    # A copy of the children: the walk may pause between them (a listing, a
    # watch built in slices) while points are registered or removed.
    items = list(node.items())
    if path is None or depth >= len(path) or path[depth] not in node:
        for key, child in items:
            if key is not None:
                yield key, child, None
        return
    cursor_key = path[depth]
    reached = False
    for key, child in items:
        if key is None:
            continue
        if reached:
            yield key, child, None
        elif key == cursor_key:
            reached = True
            yield key, child, path


def _everything(
    node: Node, path: list[str] | None = None, depth: int = 0, *, skip_here: bool = False
) -> Iterator[Any]:
    """Every point at and below ``node`` (at ``depth``), depth first in the order added.

    ``path``: the cursor's levels while on its branch (see :meth:`PointIndex.iterate`).
    """
    if path is None:
        # Past the cursor (or none): a plain depth-first walk, no generator per
        # branch; each node's children are copied before they are gone through
        # (the walk may pause while points are registered or removed).
        here = node.get(None)
        if here is not None and not skip_here:
            yield here
        stack = [iter(list(node.items()))]
        while stack:
            for key, child in stack[-1]:
                if child.__class__ is dict:
                    here = child.get(None)
                    if here is not None:
                        yield here
                    stack.append(iter(list(child.items())))
                    break
                if key is not None:
                    yield child
            else:
                stack.pop()
        return
    for _key, child, on_path in _children(node, path, depth):
        if isinstance(child, dict):
            yield from _everything(child, on_path, depth + 1)
        elif on_path is None:
            yield child
