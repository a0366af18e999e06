"""The rule engine: evaluate rules on point changes, fire them once per onset, run their actions.

A synchronous PointDB listener only marks the rules that read the changed
point as dirty and wakes one evaluating task; that task sleeps otherwise,
except until the nearest ``for`` timer or schedule boundary. A rule fires
when its condition goes from false to true (edge-triggered), never while
it holds. Each firing is journaled (kind ``rule``) with the rule's name and
the values that fired it, then its actions run in the engine's task group,
as the automation user. A failing action raises the alarm
``automation:<rule>`` and never stops another rule.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cityvisor.core.commands import CommandError, CommandRequest
from cityvisor.core.declarations import alarm
from cityvisor.core.points import DataType, PointSpec, Quality, now_ms
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User

from .grammar import CrisisOpen, Held
from .rules import Action, CommandAction, IncidentAction, NotifyAction, Rule

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub
    from cityvisor.core.points import Point, PointValue

    from .incidents import IncidentDesk
    from .settings import AutomationSettings

__all__ = ["HubContext", "RuleEngine", "failure_alarm_id", "failure_point_id"]

log = logging.getLogger(__name__)


def failure_point_id(rule: str) -> str:
    """The point that says a rule's last firing had a failing action."""
    return f"hub/automation/{rule}/failing"


def failure_alarm_id(rule: str) -> str:
    """The alarm raised while a rule's last firing had a failing action."""
    return f"automation:{rule}"


class HubContext:
    """What conditions read in a running hub: its points and alarms, a clock, a crisis probe."""

    def __init__(self, hub: Hub, crisis_open: Callable[[], bool]) -> None:
        self.hub = hub
        self.now = 0.0
        self.values: dict[str, Any] = {}
        self.deadline = math.inf
        self.crisis_open = crisis_open

    def value(self, point_id: str) -> tuple[Any, bool] | None:
        if point_id not in self.hub.points:
            return None
        current = self.hub.points.value(point_id)
        return current.value, current.quality is Quality.GOOD

    def label(self, point_id: str, value: Any) -> str | None:
        labels = self.hub.points.get(point_id).spec.labels
        return None if labels is None else labels.get(value)

    def alarm(self, alarm_id: str, state: str) -> bool:
        try:
            found = self.hub.alarms.get(alarm_id)
        except KeyError:
            return False
        if state == "active":
            return bool(found.active)
        if state == "shelved":
            return bool(found.shelved)
        return not found.acked and found.state.value != "normal"

    def local_time(self) -> dt.datetime:
        return dt.datetime.now()

    def seen(self, point_id: str, value: Any) -> None:
        self.values[point_id] = value

    def wake_at(self, when: float) -> None:
        self.deadline = min(self.deadline, when)


class RuleEngine:
    """The hub's rules: the listener, the evaluating task and the actions' workers."""

    def __init__(
        self,
        hub: Hub,
        settings: AutomationSettings,
        rules: list[Rule] | None = None,
        *,
        loader: Callable[[], list[Rule]] | None = None,
        crisis_open: Callable[[], bool] = lambda: False,
        incidents: IncidentDesk | None = None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.incidents = incidents
        """Who opens the incidents of ``incident`` actions (None: the operations layer is off)."""
        self.user = User(settings.user, Role[settings.role.upper()], frozenset({"*"}))
        self._loader = loader
        self._index(rules)
        self._dirty: set[str] = set()
        self._wake = anyio.Event()
        self._ctx = HubContext(hub, crisis_open)
        self._send: MemoryObjectSendStream[tuple[Rule, dict[str, Any]]] | None = None
        self.ready = anyio.Event()
        """Set once the rules are loaded and evaluated a first time."""
        self.evaluations = 0
        self.onsets = 0
        """Conditions that went from false to true (each one a firing)."""

    def _index(self, rules: list[Rule] | None) -> None:
        rules = rules or []
        self.rules = {rule.name: rule for rule in rules}
        self._by_point: dict[str, list[Rule]] = {}
        self._by_alarm: dict[str, list[Rule]] = {}
        for rule in rules:
            for point_id in rule.condition.points():
                self._by_point.setdefault(point_id, []).append(rule)
            for alarm_id in rule.condition.alarms():
                self._by_alarm.setdefault(alarm_id, []).append(rule)
        self._by_crisis = [
            r.name for r in rules if any(isinstance(n, CrisisOpen) for n in r.condition.walk())
        ]

    # -- the listener ------------------------------------------------------

    def _changed(self, point: Point, value: PointValue) -> None:
        rules = self._by_point.get(point.id)
        if rules:
            for rule in rules:
                self._dirty.add(rule.name)
            self._wake.set()

    @property
    def pending(self) -> int:
        """Rules marked for evaluation and not evaluated yet."""
        return len(self._dirty)

    def crisis_changed(self, *_: Any) -> None:
        """A crisis opened or closed: evaluate the rules that read ``crisis open``."""
        if self._by_crisis:
            self._dirty.update(self._by_crisis)
            self._wake.set()

    def mark_all(self) -> None:
        """Evaluate every rule at the next wake (enabling, crisis opened...)."""
        self._dirty.update(self.rules)
        self._wake.set()

    # -- running -----------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the rule files, declare the failure alarms, listen, evaluate and act until cancelled.

        Rule files that do not load make the service fail (the hub logs every
        problem and retries with backoff): check-config reports them first.
        """
        if self._loader is not None:
            self._index(await anyio.to_thread.run_sync(self._loader))
            log.info("%d rules loaded", len(self.rules))
        for name in self.rules:
            self._declare_failure(name)
        send, receive = anyio.create_memory_object_stream[tuple[Rule, dict[str, Any]]](
            self.settings.queue
        )
        self._send = send
        self.hub.points.add_listener(self._changed)
        try:
            with send, receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._act, receive)
                    if self._by_alarm:
                        tg.start_soon(self._watch_alarms)
                    self.mark_all()
                    self.ready.set()
                    task_status.started()
                    await self._evaluate_forever()
        finally:
            self._send = None
            self.hub.points.remove_listener(self._changed)

    def _declare_failure(self, name: str) -> None:
        point_id = failure_point_id(name)
        if point_id in self.hub.points:
            return
        self.hub.points.register(
            point_id,
            PointSpec(
                "failing",
                DataType.BOOL,
                doc={
                    "fr": f"La dernière exécution de la règle {name} a échoué",
                    "en": f"The last firing of rule {name} had a failing action",
                },
            ),
            family="hub",
        )
        self.hub.alarms.add(
            alarm(
                point_id,
                equals=True,
                priority="medium",
                name=f"rule_{name}_failed",
                message={
                    "fr": f"Règle {name} : une action a échoué (voir le journal)",
                    "en": f"Rule {name}: an action failed (see the journal)",
                },
            ),
            point_id,
            family="hub",
            alarm_id=failure_alarm_id(name),
        )
        self.hub.points.update(point_id, False)

    async def _watch_alarms(self) -> None:
        async with self.hub.alarms.subscribe() as feed:
            async for _message in feed:
                for rules in self._by_alarm.values():
                    self._dirty.update(r.name for r in rules)
                self._wake.set()

    async def _evaluate_forever(self) -> None:
        while True:
            deadline = min((r.deadline for r in self.rules.values() if r.enabled), default=math.inf)
            delay = deadline - anyio.current_time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
            self._wake = anyio.Event()
            now = anyio.current_time()
            for rule in self.rules.values():
                if rule.deadline <= now:
                    self._dirty.add(rule.name)
            dirty, self._dirty = self._dirty, set()
            for name in dirty:
                rule = self.rules[name]
                if rule.enabled:
                    self._evaluate(rule, now)
            if dirty and self.settings.batch_interval:
                # Changes arriving meanwhile are evaluated together: a busy city
                # wakes this task a bounded number of times per second.
                await anyio.sleep(self.settings.batch_interval)

    def _evaluate(self, rule: Rule, now: float) -> None:
        ctx = self._ctx
        ctx.now, ctx.values, ctx.deadline = now, {}, math.inf
        self.evaluations += 1
        holds = rule.condition.evaluate(ctx)
        rule.deadline = ctx.deadline
        if holds and not rule.held:
            self.onsets += 1
            try:
                if self._send is not None:
                    self._send.send_nowait((rule, dict(ctx.values)))
            except anyio.WouldBlock:
                log.error("rule %s: too many firings waiting; this one is refused", rule.name)
                self._fail(rule)
        rule.held = holds

    async def set_enabled(self, name: str, enabled: bool, user: User, comment: str = "") -> Rule:
        """Enable or disable a rule (a supervisor; journaled with the user and comment).

        An enabled rule fires on the next onset, not on what already holds.
        :raises KeyError: no such rule. :raises PermissionError: below supervisor.
        """
        rule = self.rules[name]
        if not user.has_role(Role.SUPERVISOR):
            raise PermissionError(
                f"{user.name} may not {'enable' if enabled else 'disable'} rules: "
                "it needs the supervisor role"
            )
        if enabled and not rule.enabled:
            ctx = self._ctx
            ctx.now, ctx.values, ctx.deadline = anyio.current_time(), {}, math.inf
            for held in rule.condition.walk():
                if isinstance(held, Held):
                    held.since = None
            rule.held = rule.condition.evaluate(ctx)
            rule.deadline = ctx.deadline
            self._wake.set()
        changed = rule.enabled != enabled
        rule.enabled = enabled
        await self.hub.store.journal(
            JournalEntry(
                kind="rule",
                message=f"rule {name} {'enabled' if enabled else 'disabled'}"
                + ("" if changed else " (it already was)")
                + (f": {comment}" if comment else ""),
                user=user.name,
                data={"rule": name, "enabled": enabled, "comment": comment},
            )
        )
        return rule

    # -- actions -----------------------------------------------------------

    async def _act(self, receive: MemoryObjectReceiveStream[tuple[Rule, dict[str, Any]]]) -> None:
        limiter = anyio.Semaphore(self.settings.concurrency)
        async with anyio.create_task_group() as tg:
            async for rule, values in receive:
                await limiter.acquire()
                tg.start_soon(self._fire, rule, values, limiter)

    async def _fire(self, rule: Rule, values: dict[str, Any], limiter: anyio.Semaphore) -> None:
        try:
            rule.fired += 1
            rule.last_fired_ts = now_ms()
            rule.last_values = values
            await self.hub.store.journal(
                JournalEntry(
                    kind="rule",
                    message=f"rule {rule.name} fired",
                    user=self.user.name,
                    data={"rule": rule.name, "when": rule.when, "values": values},
                )
            )
            failures = []
            for action in rule.actions:
                problem = await self._run_action(rule, action)
                if problem:
                    failures.append(problem)
            if failures:
                await self.hub.store.journal(
                    JournalEntry(
                        kind="rule",
                        message=f"rule {rule.name}: {len(failures)} action(s) failed",
                        user=self.user.name,
                        data={"rule": rule.name, "failures": failures},
                    )
                )
                self._fail(rule)
            elif rule.failing:
                rule.failing = False
                self.hub.points.update(failure_point_id(rule.name), False)
        finally:
            limiter.release()

    def _fail(self, rule: Rule) -> None:
        rule.failing = True
        self.hub.points.update(failure_point_id(rule.name), True)

    async def _run_action(self, rule: Rule, action: Action) -> str | None:
        """Run one action; say what failed (None when it did not)."""
        comment = f"rule {rule.name}"
        try:
            if isinstance(action, IncidentAction):
                if self.incidents is None:
                    return f"incident {action.request.title!r}: the operations layer is not enabled"
                opened = await self.incidents.open_incident(action.request, self.user, comment)
                if opened.incident_id is None or opened.problem:
                    return f"incident {action.request.title!r}: {opened.problem}"
                return None
            if isinstance(action, NotifyAction):
                await self.hub.store.journal(
                    JournalEntry(
                        kind="note",
                        message=action.message,
                        user=self.user.name,
                        data={"rule": rule.name},
                    )
                )
                return None
            if isinstance(action, CommandAction):
                result = await self.hub.commands.execute(
                    CommandRequest(
                        action.device,
                        action.command,
                        dict(action.arguments),
                        action.member,
                        self.user,
                        comment,
                        origin="rule",
                    )
                )
                if result.ok:
                    return None
                return f"{action.device}.{action.command}: {result.outcome.value}"
            group = await self.hub.commands.execute_group(
                action.command,
                dict(action.arguments),
                self.user,
                **action.selector,
                members=action.members,
                comment=comment,
                origin="rule",
            )
            bad = [r for r in group.results if not r.ok]
            if bad or not group.results:
                return (
                    f"group {action.command} {dict(action.selector)}: "
                    f"{len(bad)} of {len(group.results)} refused or failed ({group.summary})"
                )
            return None
        except CommandError as error:
            return f"{getattr(action, 'device', 'group')}.{getattr(action, 'command', '')}: {error}"
        except Exception as error:  # a rule never stops the others
            log.exception("rule %s: action failed", rule.name)
            return f"{type(error).__name__}: {error}"
