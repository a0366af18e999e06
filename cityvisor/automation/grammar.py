"""The condition grammar of rules: a small hand-written parser, and the conditions it builds.

::

    condition  := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | primary ["for" NUMBER ("s" | "min" | "h")]
    primary    := "(" condition ")"
                | POINT OP LITERAL              (centre/demo/tank-a/level > 90)
                | POINT                         (a bool point: true when it is true)
                | "alarm" STRING STATE          (STATE: active, unacked, shelved)
                | "schedule" HH:MM-HH:MM        (local time; the window may span midnight)
                | "crisis" "open"               (with the operations layer enabled)
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="
    LITERAL    := NUMBER | STRING | "true" | "false"

Nothing is evaluated with ``eval``: the parser builds :class:`Condition`
objects, each of which says which points and alarms it reads and evaluates
itself against a :class:`Context`. A :class:`ConditionError` gives the
position (0-based character offset) of what it did not expect.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "AlarmIs",
    "AllOf",
    "AnyOf",
    "Compare",
    "Condition",
    "ConditionError",
    "Context",
    "CrisisOpen",
    "Held",
    "Not",
    "Schedule",
    "Truthy",
    "parse",
]

UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
ALARM_STATES = ("active", "unacked", "shelved")
KEYWORDS = {"and", "or", "not", "for", "alarm", "schedule", "crisis", "open", "true", "false"}

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>-?\d+(?:\.\d+)?(?![\w/.:-]))
    |(?P<string>"[^"\\]*")
    |(?P<op>==|!=|<=|>=|<|>)
    |(?P<paren>[()])
    |(?P<word>[A-Za-z0-9_][\w/.:-]*)
    """,
    re.VERBOSE,
)
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class ConditionError(ValueError):
    """A condition that does not parse: what was expected, at which character."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"position {position}: {message}")
        self.position = position
        self.reason = message


class Context(Protocol):
    """What a condition reads when it is evaluated."""

    now: float
    """anyio's clock (seconds)."""

    def value(self, point_id: str) -> tuple[Any, bool] | None:
        """The point's value and whether its quality is good (None: no such point)."""

    def label(self, point_id: str, value: Any) -> str | None:
        """The label of an enumerated point's value (None when it has none)."""

    def alarm(self, alarm_id: str, state: str) -> bool:
        """True if the alarm is in ``state`` (``active``, ``unacked``, ``shelved``)."""

    def crisis_open(self) -> bool:
        """True while a crisis is open."""

    def local_time(self) -> dt.datetime:
        """The local wall-clock time (schedules)."""

    def seen(self, point_id: str, value: Any) -> None:
        """Note a value the condition read (journaled with a firing)."""

    def wake_at(self, when: float) -> None:
        """Ask to be evaluated again at ``when`` (anyio's clock)."""


@dataclass
class Condition(abc.ABC):
    """A node of a parsed condition (each kind of node is a subclass)."""

    position: int

    @abc.abstractmethod
    def evaluate(self, ctx: Context) -> bool:
        """True if the condition holds now."""

    def children(self) -> tuple[Condition, ...]:
        """The conditions inside this one."""
        return ()

    def walk(self) -> Iterator[Condition]:
        """This condition and every one inside it."""
        yield self
        for child in self.children():
            yield from child.walk()

    def points(self) -> set[str]:
        """Every point id the condition reads."""
        return {n.point for n in self.walk() if isinstance(n, Compare | Truthy)}

    def alarms(self) -> set[str]:
        """Every alarm id the condition reads."""
        return {n.alarm for n in self.walk() if isinstance(n, AlarmIs)}


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass
class Compare(Condition):
    """``POINT OP LITERAL``; false while the point has no good value."""

    point: str
    op: str
    literal: Any

    def evaluate(self, ctx: Context) -> bool:
        """Compare the point's good value (or, for a string literal, its label)."""
        found = ctx.value(self.point)
        if found is None or not found[1] or found[0] is None:
            return False
        value = found[0]
        ctx.seen(self.point, value)
        if isinstance(self.literal, str) and not isinstance(value, str):
            value = ctx.label(self.point, value)
            if value is None:
                return False
        try:
            return bool(_OPS[self.op](value, self.literal))
        except TypeError:
            return False


@dataclass
class Truthy(Condition):
    """A bare point: true while its good value is true."""

    point: str

    def evaluate(self, ctx: Context) -> bool:
        """True when the point's value is good and true."""
        found = ctx.value(self.point)
        if found is None or not found[1]:
            return False
        ctx.seen(self.point, found[0])
        return bool(found[0])


@dataclass
class AlarmIs(Condition):
    """``alarm "id" active|unacked|shelved``."""

    alarm: str
    state: str

    def evaluate(self, ctx: Context) -> bool:
        """Ask the alarm manager."""
        return ctx.alarm(self.alarm, self.state)


@dataclass
class Schedule(Condition):
    """``schedule HH:MM-HH:MM``: true inside the local-time window (end excluded)."""

    start: int
    end: int
    """Minutes after midnight."""

    def evaluate(self, ctx: Context) -> bool:
        """Inside the window now; ask to be woken at the next boundary."""
        now = ctx.local_time()
        minute = now.hour * 60 + now.minute
        seconds = now.second + now.microsecond / 1e6
        inside = (
            self.start <= minute < self.end
            if self.start <= self.end
            else (minute >= self.start or minute < self.end)
        )
        boundary = self.end if inside else self.start
        ahead = (boundary - minute) % 1440 or 1440
        ctx.wake_at(ctx.now + ahead * 60 - seconds + 0.01)
        return inside


@dataclass
class CrisisOpen(Condition):
    """``crisis open``."""

    def evaluate(self, ctx: Context) -> bool:
        """True while the operations layer has a crisis open."""
        return ctx.crisis_open()


@dataclass
class Not(Condition):
    """``not X``."""

    inner: Condition

    def evaluate(self, ctx: Context) -> bool:
        """The inner condition's negation."""
        return not self.inner.evaluate(ctx)

    def children(self) -> tuple[Condition, ...]:
        """The negated condition."""
        return (self.inner,)


@dataclass
class AllOf(Condition):
    """``A and B and ...`` (every part is evaluated, so every timer keeps running)."""

    parts: list[Condition]

    def evaluate(self, ctx: Context) -> bool:
        """True when every part holds."""
        results = [part.evaluate(ctx) for part in self.parts]
        return all(results)

    def children(self) -> tuple[Condition, ...]:
        """The parts."""
        return tuple(self.parts)


@dataclass
class AnyOf(Condition):
    """``A or B or ...``."""

    parts: list[Condition]

    def evaluate(self, ctx: Context) -> bool:
        """True when a part holds."""
        results = [part.evaluate(ctx) for part in self.parts]
        return any(results)

    def children(self) -> tuple[Condition, ...]:
        """The parts."""
        return tuple(self.parts)


@dataclass
class Held(Condition):
    """``X for N s``: true once X has held without a break for N seconds."""

    inner: Condition
    seconds: float
    since: float | None = field(default=None, compare=False)

    def evaluate(self, ctx: Context) -> bool:
        """Start the clock when X starts holding; reset it when X stops."""
        if not self.inner.evaluate(ctx):
            self.since = None
            return False
        if self.since is None:
            self.since = ctx.now
        due = self.since + self.seconds
        if ctx.now >= due:
            return True
        ctx.wake_at(due)
        return False

    def children(self) -> tuple[Condition, ...]:
        """The held condition."""
        return (self.inner,)


@dataclass
class _Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(f"unexpected character {text[position]!r}", position)
        kind = match.lastgroup or ""
        if kind != "space":
            found.append(_Token(kind, match.group(), position))
        position = match.end()
    found.append(_Token("end", "", len(text)))
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def is_word(self, *words: str) -> bool:
        return self.token.kind == "word" and self.token.text in words

    def expect(self, what: str) -> ConditionError:
        token = self.token
        got = "the end" if token.kind == "end" else repr(token.text)
        return ConditionError(f"expected {what}, got {got}", token.position)

    def condition(self) -> Condition:
        start = self.token.position
        parts = [self.conjunction()]
        while self.is_word("or"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else AnyOf(start, parts)

    def conjunction(self) -> Condition:
        start = self.token.position
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else AllOf(start, parts)

    def unary(self) -> Condition:
        if self.is_word("not"):
            start = self.take().position
            return Not(start, self.unary())
        start = self.token.position
        node = self.primary()
        if self.is_word("for"):
            self.take()
            if self.token.kind != "number":
                raise self.expect("a duration (30 s, 5 min, 1 h)")
            amount = float(self.take().text)
            if amount <= 0:
                raise ConditionError(
                    "a duration must be positive", self.tokens[self.index - 1].position
                )
            if not self.is_word(*UNITS):
                raise self.expect("a unit: s, min or h")
            node = Held(start, node, amount * UNITS[self.take().text])
        return node

    def primary(self) -> Condition:
        token = self.token
        if token.kind == "paren" and token.text == "(":
            self.take()
            node = self.condition()
            if not (self.token.kind == "paren" and self.token.text == ")"):
                raise self.expect("')'")
            self.take()
            return node
        if token.kind != "word" or token.text in {"and", "or", "for", "open", "true", "false"}:
            raise self.expect("a point id, 'alarm', 'schedule', 'crisis', 'not' or '('")
        self.take()
        if token.text == "alarm":
            if self.token.kind != "string":
                raise self.expect('an alarm id in double quotes ("hub:journal_replaced")')
            alarm_id = self.take().text[1:-1]
            if not self.is_word(*ALARM_STATES):
                raise self.expect("an alarm state: " + ", ".join(ALARM_STATES))
            return AlarmIs(token.position, alarm_id, self.take().text)
        if token.text == "schedule":
            window = self.token
            match = _WINDOW.match(window.text) if window.kind == "word" else None
            if match is None:
                raise self.expect("a window HH:MM-HH:MM (22:00-06:00)")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
                raise ConditionError("hours go 0-23 and minutes 0-59", window.position)
            self.take()
            return Schedule(token.position, h1 * 60 + m1, h2 * 60 + m2)
        if token.text == "crisis":
            if not self.is_word("open"):
                raise self.expect("'open'")
            self.take()
            return CrisisOpen(token.position)
        if token.text in KEYWORDS:
            raise ConditionError(f"{token.text!r} cannot start a condition", token.position)
        if self.token.kind != "op":
            return Truthy(token.position, token.text)
        op = self.take().text
        return Compare(token.position, token.text, op, self.literal())

    def literal(self) -> Any:
        token = self.token
        if token.kind == "number":
            self.take()
            number = float(token.text)
            return int(number) if number.is_integer() and "." not in token.text else number
        if token.kind == "string":
            self.take()
            return token.text[1:-1]
        if self.is_word("true", "false"):
            return self.take().text == "true"
        raise self.expect("a number, a string in double quotes, true or false")


def parse(text: str) -> Condition:
    """Parse a condition; raise :class:`ConditionError` naming the position of a mistake."""
    parser = _Parser(text)
    node = parser.condition()
    if parser.token.kind != "end":
        raise parser.expect("'and', 'or' or the end")
    return node
