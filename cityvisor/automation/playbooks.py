"""Playbooks: ordered steps an operator runs, with a dry run and second-person approvals.

A playbook file (``*.toml`` in ``[plugins.automation] playbooks``) holds a
title and its ``[[step]]`` tables, run in order::

    title = "Flood: close the underpasses"

    [[step]]
    approval = "Close the underpasses of the north"

    [[step]]
    group = "raise"
    family = "bollards"
    zone = "nord"
    undo = { command = "lower" }

    [[step]]
    wait = "nord/hydro/gauge-1/level < 1.2"
    timeout = 3600

Steps: ``group`` (a command to every device the selector matches, each
target's outcome kept), ``wait`` (until a condition holds, or the step's
timeout fails the run), ``check`` (an operator confirms a manual check),
``approval`` (a supervisor other than the person who started the run).
A run can be paused, resumed and aborted; pause and abort take effect
between targets, so a command already sent finishes and is reported, and
the targets not yet sent are reported ``not_sent``.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from cityvisor.core.commands import CommandError, CommandRequest
from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User

from .engine import HubContext
from .grammar import Condition, ConditionError, parse
from .rules import RuleError, selector_matches

if TYPE_CHECKING:
    from cityvisor.core.hub import Hub
    from cityvisor.core.points import Point, PointValue

__all__ = [
    "Playbook",
    "PlaybookError",
    "PlaybookRun",
    "Playbooks",
    "Step",
    "load_playbooks",
    "step_targets",
]

SELECTOR_KEYS = ("zone", "family", "tag")
KINDS = ("group", "wait", "check", "approval")


class PlaybookError(ValueError):
    """A request the run's state does not allow (the message says why)."""


@dataclass(frozen=True)
class Step:
    """One step of a playbook."""

    kind: str
    """``group``, ``wait``, ``check`` or ``approval``."""
    text: str = ""
    command: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    undo: Mapping[str, Any] | None = None
    """``{"command": ..., "arguments": {...}}``: what undoes a group step."""
    condition: Condition | None = None
    timeout: float = 300.0

    def as_json(self) -> dict[str, Any]:
        """The step as the API shows it."""
        return {
            "kind": self.kind,
            "text": self.text,
            "command": self.command,
            "selector": dict(self.selector),
            "arguments": dict(self.arguments),
            "undo": None if self.undo is None else dict(self.undo),
            "timeout": self.timeout if self.kind == "wait" else None,
        }


@dataclass(frozen=True)
class Playbook:
    """A named, ordered list of steps."""

    name: str
    title: str
    steps: tuple[Step, ...]


def load_playbooks(directory: Path) -> dict[str, Playbook]:
    """Every ``*.toml`` playbook of ``directory``, by name (the file's stem).

    :raises RuleError: listing every problem, naming the file, the step and the key.
    """
    if not directory.is_dir():
        raise RuleError([f"{directory}: not a directory of playbooks"])
    found: dict[str, Playbook] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            found[path.stem] = _load(path)
        except RuleError as error:
            problems += error.problems
    if problems:
        raise RuleError(problems)
    return found


def _load(path: Path) -> Playbook:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RuleError([f"{path}: {error}"]) from None
    problems = [f"{path}: {k}: unknown key" for k in sorted(set(document) - {"title", "step"})]
    steps: list[Step] = []
    tables = document.get("step")
    if not isinstance(tables, list) or not tables:
        problems.append(f"{path}: step: expected at least one [[step]]")
        tables = []
    for index, table in enumerate(tables):
        try:
            steps.append(_step(table))
        except ConditionError as error:
            problems.append(f"{path}: step[{index}]: wait: {error}")
        except PlaybookError as error:
            problems.append(f"{path}: step[{index}]: {error}")
    if problems:
        raise RuleError(problems)
    return Playbook(path.stem, str(document.get("title", path.stem)), tuple(steps))


def _step(table: Any) -> Step:
    if not isinstance(table, dict):
        raise PlaybookError("expected a table")
    kinds = [k for k in KINDS if k in table]
    if len(kinds) != 1:
        raise PlaybookError("expected exactly one of group, wait, check, approval")
    kind = kinds[0]
    allowed = {
        "group": {"group", "arguments", "undo", *SELECTOR_KEYS},
        "wait": {"wait", "timeout"},
        "check": {"check"},
        "approval": {"approval"},
    }[kind]
    extra = sorted(set(table) - allowed)
    if extra:
        raise PlaybookError(f"{extra[0]}: unknown key in a {kind} step")
    value = table[kind]
    if not isinstance(value, str) or not value.strip():
        raise PlaybookError(f"{kind}: expected a text")
    if kind == "group":
        selector = {k: table[k] for k in SELECTOR_KEYS if k in table}
        if not selector or not all(isinstance(v, str) for v in selector.values()):
            raise PlaybookError("a group step needs a selector: zone, family or tag (strings)")
        arguments = table.get("arguments", {})
        undo = table.get("undo")
        if not isinstance(arguments, dict):
            raise PlaybookError("arguments: expected a table")
        if undo is not None and (not isinstance(undo, dict) or "command" not in undo):
            raise PlaybookError("undo: expected { command = ..., arguments = {...} }")
        return Step("group", command=value, selector=selector, arguments=arguments, undo=undo)
    if kind == "wait":
        timeout = table.get("timeout", 300)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise PlaybookError("timeout: expected a positive number of seconds")
        return Step("wait", text=value, condition=parse(value), timeout=float(timeout))
    return Step(kind, text=value)


def step_targets(hub: Hub, step: Step, command: str | None = None) -> list[str]:
    """The devices a group step touches: those with the command that match its selector."""
    command = command or step.command
    return sorted(
        device.id
        for device in hub.devices.values()
        if selector_matches(device, command, step.selector)
    )


_IDS = itertools.count(1)


class PlaybookRun:
    """One run: its state, its current step, every target's outcome, who approved what."""

    def __init__(self, hub: Hub, playbook: Playbook, user: User, concurrency: int) -> None:
        self.id = next(_IDS)
        self.hub = hub
        self.playbook = playbook
        self.user = user
        self.concurrency = concurrency
        self.state = "running"
        """``running``, ``paused``, ``waiting_check``, ``waiting_approval``,
        ``done``, ``failed``, ``aborted``, ``undone``."""
        self.step = 0
        self.outcomes: list[dict[str, str]] = [{} for _ in playbook.steps]
        self.signed: dict[int, str] = {}
        """Step index -> who checked or approved it."""
        self.started_ts = now_ms()
        self._aborted = False
        self._paused = False
        self._changed = anyio.Event()

    def as_json(self) -> dict[str, Any]:
        """The run as the API shows it."""
        return {
            "id": self.id,
            "playbook": self.playbook.name,
            "user": self.user.name,
            "state": self.state,
            "step": self.step,
            "started_ts": self.started_ts,
            "steps": [
                {**s.as_json(), "outcomes": self.outcomes[i], "signed_by": self.signed.get(i)}
                for i, s in enumerate(self.playbook.steps)
            ],
        }

    # -- what people do ----------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def pause(self, user: User) -> None:
        """Pause between targets (an operator)."""
        self._operator(user)
        if self.state not in ("running", "waiting_check", "waiting_approval"):
            raise PlaybookError(f"the run is {self.state}: it cannot be paused")
        self._paused = True
        self._wake()

    def resume(self, user: User) -> None:
        """Resume a paused run (an operator); it never passes a check or an approval."""
        self._operator(user)
        if not self._paused:
            raise PlaybookError(f"the run is {self.state}, not paused")
        self._paused = False
        self._wake()

    def abort(self, user: User) -> None:
        """Stop: the commands being sent finish, nothing else is sent (an operator)."""
        self._operator(user)
        if self.state in ("done", "failed", "aborted", "undone"):
            raise PlaybookError(f"the run is already {self.state}")
        self._aborted = True
        self._wake()

    def check(self, user: User) -> None:
        """Confirm the manual check the run waits for (an operator)."""
        self._operator(user)
        if self.state != "waiting_check":
            raise PlaybookError(f"no manual check is waiting (the run is {self.state})")
        self.signed[self.step] = user.name
        self._wake()

    def approve(self, user: User) -> None:
        """Approve the step waiting for it: a supervisor other than the run's author."""
        if self.state != "waiting_approval":
            raise PlaybookError(f"no step waits for an approval (the run is {self.state})")
        if user.name == self.user.name:
            raise PermissionError(
                "the approval must come from another person than the run's author"
            )
        if not user.has_role(Role.SUPERVISOR):
            raise PermissionError(f"{user.name} may not approve: it needs the supervisor role")
        self.signed[self.step] = user.name
        self._wake()

    @staticmethod
    def _operator(user: User) -> None:
        if not user.has_role(Role.OPERATOR):
            raise PermissionError(
                f"{user.name} may not act on playbooks: it needs the operator role"
            )

    # -- running -----------------------------------------------------------

    async def run(self) -> None:
        """Run the steps in order until done, failed or aborted (each journaled)."""
        await self._journal(f"playbook {self.playbook.name} started (run {self.id})")
        ok = True
        for index, step in enumerate(self.playbook.steps):
            self.step = index
            if not await self._not_paused():
                break
            ok = await self._run_step(index, step)
            await self._journal(
                f"playbook {self.playbook.name}: step {index} ({step.kind}) "
                + ("done" if ok else "aborted" if self._aborted else "failed"),
                outcomes=self.outcomes[index],
                signed_by=self.signed.get(index),
            )
            if not ok:
                break
        self.state = "aborted" if self._aborted else ("done" if ok else "failed")
        await self._journal(f"playbook {self.playbook.name} {self.state} (run {self.id})")

    async def _not_paused(self) -> bool:
        """Wait while paused; False once aborted."""
        while self._paused and not self._aborted:
            previous, self.state = self.state, "paused"
            await self._changed.wait()
            self.state = previous if previous != "paused" else "running"
        return not self._aborted

    async def _run_step(self, index: int, step: Step) -> bool:
        if step.kind in ("check", "approval"):
            self.state = f"waiting_{step.kind}"
            while index not in self.signed and not self._aborted:
                await self._changed.wait()
            if self._aborted:
                return False
            self.state = "running"
            return True
        if step.kind == "wait":
            self.state = "running"
            return await self._wait(step)
        self.state = "running"
        return await self._group(index, step, step.command, step.arguments)

    async def _wait(self, step: Step) -> bool:
        assert step.condition is not None
        condition = step.condition
        watched = condition.points()
        changed = anyio.Event()

        def listener(point: Point, value: PointValue) -> None:
            if point.id in watched:
                changed.set()

        self.hub.points.add_listener(listener)
        try:
            with anyio.move_on_after(step.timeout):
                while not self._aborted:
                    ctx = HubContext(self.hub, lambda: False)
                    ctx.now = anyio.current_time()
                    if condition.evaluate(ctx):
                        return True
                    changed = anyio.Event()
                    delay = ctx.deadline - anyio.current_time()
                    with anyio.move_on_after(delay if delay < math.inf else math.inf):
                        async with anyio.create_task_group() as tg:

                            async def either(event: anyio.Event) -> None:
                                await event.wait()
                                tg.cancel_scope.cancel()

                            tg.start_soon(either, changed)
                            tg.start_soon(either, self._changed)
            return False
        finally:
            self.hub.points.remove_listener(listener)

    async def _group(
        self, index: int, step: Step, command: str, arguments: Mapping[str, Any]
    ) -> bool:
        outcome = self.outcomes[index]
        limiter = anyio.Semaphore(self.concurrency)
        pending = step_targets(self.hub, step, command)

        async def send(device_id: str) -> None:
            try:
                result = await self.hub.commands.execute(
                    CommandRequest(
                        device_id,
                        command,
                        dict(arguments),
                        None,
                        self.user,
                        f"playbook {self.playbook.name}, step {index}",
                        origin="playbook",
                    )
                )
                outcome[device_id] = result.outcome.value
            except CommandError as error:
                found = error.result
                outcome[device_id] = "refused" if found is None else found.outcome.value
            finally:
                limiter.release()

        async with anyio.create_task_group() as tg:
            for device_id in pending:
                await limiter.acquire()
                if not await self._not_paused():
                    limiter.release()
                    break
                outcome[device_id] = "sending"
                tg.start_soon(send, device_id)
        for device_id in pending:
            outcome.setdefault(device_id, "not_sent")
        return not self._aborted

    async def undo(self, user: User) -> None:
        """Run the undo of every group step that has one, last step first (an operator)."""
        self._operator(user)
        if self.state not in ("done", "failed", "aborted"):
            raise PlaybookError(f"the run is {self.state}: undo needs it stopped")
        self._aborted = False
        self.state = "undoing"
        for index in reversed(range(len(self.playbook.steps))):
            step = self.playbook.steps[index]
            if step.undo is None or not self.outcomes[index]:
                continue
            self.outcomes[index] = {}
            await self._group(
                index, step, str(step.undo["command"]), dict(step.undo.get("arguments", {}))
            )
        self.state = "undone"
        await self._journal(f"playbook {self.playbook.name} undone (run {self.id})")

    async def _journal(self, message: str, **data: Any) -> None:
        await self.hub.store.journal(
            JournalEntry(
                kind="playbook",
                message=message,
                user=self.user.name,
                data={"playbook": self.playbook.name, "run": self.id, "step": self.step, **data},
            )
        )


class Playbooks:
    """The playbooks of one hub and their runs, owned by the automation service's task group."""

    def __init__(
        self,
        hub: Hub,
        playbooks: dict[str, Playbook] | None = None,
        *,
        loader: Callable[[], dict[str, Playbook]] | None = None,
        concurrency: int = 16,
    ) -> None:
        self.hub = hub
        self.playbooks = playbooks or {}
        self._loader = loader
        self.concurrency = concurrency
        self.runs: dict[int, PlaybookRun] = {}
        self._tg: TaskGroup | None = None

    def dry_run(self, name: str) -> list[dict[str, Any]]:
        """What each step would do and the devices it would touch; nothing is sent."""
        playbook = self.playbooks[name]
        return [
            {
                **step.as_json(),
                "step": index,
                "targets": step_targets(self.hub, step) if step.kind == "group" else [],
            }
            for index, step in enumerate(playbook.steps)
        ]

    def start(self, name: str, user: User) -> PlaybookRun:
        """Start a run (an operator); it runs in the service's task group."""
        PlaybookRun._operator(user)
        if self._tg is None:
            raise PlaybookError("the automation service is not running")
        if name not in self.playbooks:
            raise KeyError(name)
        run = PlaybookRun(self.hub, self.playbooks[name], user, self.concurrency)
        self.runs[run.id] = run
        self._tg.start_soon(run.run)
        return run

    async def undo(self, run: PlaybookRun, user: User) -> None:
        """Undo a stopped run, in the service's task group; raise what forbids it."""
        if self._tg is None:
            raise PlaybookError("the automation service is not running")
        PlaybookRun._operator(user)
        if run.state not in ("done", "failed", "aborted"):
            raise PlaybookError(f"the run is {run.state}: undo needs it stopped")
        self._tg.start_soon(run.undo, user)

    async def serve(self) -> None:
        """Load the playbook files (in a worker thread), then own the runs until cancelled."""
        if self._loader is not None:
            self.playbooks = await anyio.to_thread.run_sync(self._loader)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None
