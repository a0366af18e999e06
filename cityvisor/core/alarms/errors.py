"""Alarm errors: what an operator action or a lookup can be refused with."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


# =========================================================================== errors


class AlarmError(Exception):
    """Base of the errors an alarm operation can raise (each has a message for the operator)."""


class UnknownAlarmError(AlarmError, KeyError):
    """No alarm (or maintenance window) has this id."""

    def __str__(self) -> str:
        return f"unknown alarm {self.args[0]!r}"


class AlarmActionError(AlarmError):
    """The action is not possible in the alarm's current state, or its arguments are wrong."""


class AlarmPermissionError(AlarmError):
    """The user's role or zones do not allow this action on this alarm."""
