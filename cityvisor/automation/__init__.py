"""Automation beside the core: rules (conditions -> actions) evaluated inside the hub.

It uses only the core's public API (points and their listeners, the alarm
manager, the command bus, the journal). The built-in plugin
``cityvisor.plugins.automation`` links it to a hub. See docs/automation.md.
"""

from .engine import RuleEngine, failure_alarm_id, failure_point_id
from .grammar import Condition, ConditionError, parse
from .rules import CommandAction, GroupAction, NotifyAction, Rule, RuleError, load_directory
from .settings import AutomationSettings

__all__ = [
    "AutomationSettings",
    "CommandAction",
    "Condition",
    "ConditionError",
    "GroupAction",
    "NotifyAction",
    "Rule",
    "RuleEngine",
    "RuleError",
    "failure_alarm_id",
    "failure_point_id",
    "load_directory",
    "parse",
]
