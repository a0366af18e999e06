"""The condition parser: what it builds, and the position it names when it cannot."""

from __future__ import annotations

import pytest

from cityvisor.automation.grammar import (
    AlarmIs,
    AllOf,
    AnyOf,
    Compare,
    ConditionError,
    CrisisOpen,
    Held,
    Not,
    Schedule,
    Truthy,
    parse,
)


def test_precedence_and_binds_tighter_than_or() -> None:
    node = parse("a/x > 1 or b/y and not c/z")
    assert isinstance(node, AnyOf)
    left, right = node.parts
    assert left == Compare(0, "a/x", ">", 1)
    assert isinstance(right, AllOf)
    assert right.parts[0] == Truthy(11, "b/y")
    assert right.parts[1] == Not(19, Truthy(23, "c/z"))
    assert node.points() == {"a/x", "b/y", "c/z"}


def test_durations_alarms_schedules_crisis_and_literals() -> None:
    node = parse(
        '(centre/lighting/cab-1/power_w >= 12.5 for 2 min) and alarm "hub:x" unacked'
        ' and schedule 22:00-06:30 and crisis open and p/s == "draining" and p/b != false'
    )
    assert isinstance(node, AllOf)
    held, alarm, window, crisis, label, boolean = node.parts
    assert isinstance(held, Held) and held.seconds == 120
    assert held.inner == Compare(1, "centre/lighting/cab-1/power_w", ">=", 12.5)
    assert alarm == AlarmIs(54, "hub:x", "unacked")
    assert isinstance(window, Schedule) and (window.start, window.end) == (1320, 390)
    assert isinstance(crisis, CrisisOpen)
    assert isinstance(label, Compare) and label.literal == "draining"
    assert isinstance(boolean, Compare) and boolean.literal is False
    assert node.alarms() == {"hub:x"}


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("a/x >", 5, "expected a number"),
        ("a/x > 3 for 10", 14, "expected a unit"),
        ("a/x > 3 for ten s", 12, "expected a duration"),
        ("(a/x > 3", 8, "expected ')'"),
        ("a/x > 3 b/y", 8, "expected 'and', 'or' or the end"),
        ("alarm hub:x active", 6, "alarm id in double quotes"),
        ('alarm "hub:x" burning', 14, "an alarm state"),
        ("schedule 25:00-06:00", 9, "hours go 0-23"),
        ("a/x > 3 and", 11, "expected a point id"),
        ("a/x ~ 3", 4, "unexpected character '~'"),
        ("crisis", 6, "expected 'open'"),
    ],
)
def test_errors_name_the_position(text: str, position: int, expected: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse(text)
    assert caught.value.position == position
    assert expected in str(caught.value)
