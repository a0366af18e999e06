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
``approval`` (a supervisor other than the person who started the run),
``incident`` (open an incident in the operations layer and, if asked,
send the nearest available crew), ``broadcast`` (send a declared alert
of ``[plugins.hydro.alerts]`` about a gauge, once per run and step).
A run can be paused, resumed and aborted; pause and abort take effect
between targets, so a command already sent finishes and is reported, and
the targets not yet sent are reported ``not_sent``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from cityvisor.core.commands import CommandError, CommandOutcome, CommandRequest
from cityvisor.core.points import now_ms
from cityvisor.core.store import JournalEntry
from cityvisor.core.users import Role, User

from .engine import HubContext
from .grammar import Condition, ConditionError, parse
from .incidents import IncidentDesk, IncidentRequest, incident_request
from .rules import RuleError, selector_matches
from .runs import RunHistory

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

SELECTOR_KEYS = ("zone", "family", "tag", "device")
KINDS = ("group", "wait", "check", "approval", "incident", "broadcast")
STAGES = ("vigilance", "alert", "crisis")

Broadcaster = Callable[[str, str, str, str], str | None]
"""``(alert, gauge, stage, key) -> why not`` (None once queued): the flood alerts' broadcast."""
STOPPED = ("done", "failed", "aborted", "undone", "interrupted")
"""The states of a run that is over (``interrupted``: the hub stopped while it ran)."""
KEEP = 500
"""Runs kept in memory and in the store (the oldest that are over go first)."""


class PlaybookError(ValueError):
    """A request the run's state does not allow (the message says why)."""


@dataclass(frozen=True)
class Step:
    """One step of a playbook."""

    kind: str
    """``group``, ``wait``, ``check``, ``approval``, ``incident`` or ``broadcast``."""
    text: str = ""
    command: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    members: str | tuple[str, ...] = "all"
    """For a command declared per member (a circuit, a port): ``"all"`` or the names."""
    undo: Mapping[str, Any] | None = None
    """``{"command": ..., "arguments": {...}}``: what undoes a group step."""
    condition: Condition | None = None
    timeout: float = 300.0
    incident: IncidentRequest | None = None
    """What an ``incident`` step opens."""
    device: str = ""
    """The gauge a ``broadcast`` step tells about."""
    stage: str = "alert"
    """The stage a ``broadcast`` step announces (vigilance, alert, crisis)."""

    def as_json(self) -> dict[str, Any]:
        """The step as the API shows it."""
        return {
            "kind": self.kind,
            "text": self.text,
            "command": self.command,
            "selector": dict(self.selector),
            "arguments": dict(self.arguments),
            "members": self.members if isinstance(self.members, str) else list(self.members),
            "undo": None if self.undo is None else dict(self.undo),
            "timeout": self.timeout if self.kind == "wait" else None,
            "incident": None if self.incident is None else self.incident.as_json(),
            "device": self.device or None,
            "stage": self.stage if self.kind == "broadcast" else None,
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
        raise PlaybookError(f"expected exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    allowed = {
        "group": {"group", "arguments", "undo", "members", *SELECTOR_KEYS},
        "wait": {"wait", "timeout"},
        "check": {"check"},
        "approval": {"approval"},
        "incident": {"incident", "zone", "priority", "skill", "device", "dispatch"},
        "broadcast": {"broadcast", "device", "stage"},
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
        members = table.get("members", "all")
        if members != "all" and (
            not isinstance(members, list)
            or not members
            or not all(isinstance(m, str) for m in members)
        ):
            raise PlaybookError('members: expected "all" or a list of member names')
        return Step(
            "group",
            command=value,
            selector=selector,
            arguments=arguments,
            members=members if isinstance(members, str) else tuple(members),
            undo=undo,
        )
    if kind == "incident":
        return Step("incident", text=value, incident=incident_request(table, PlaybookError))
    if kind == "broadcast":
        device, stage = table.get("device"), table.get("stage", "alert")
        if not isinstance(device, str) or not device:
            raise PlaybookError("device: expected the gauge the alert tells about")
        if stage not in STAGES:
            raise PlaybookError(f"stage: expected one of {', '.join(STAGES)} (got {stage!r})")
        return Step("broadcast", text=value, device=device, stage=stage)
    if kind == "wait":
        timeout = table.get("timeout", 300)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise PlaybookError("timeout: expected a positive number of seconds")
        return Step("wait", text=value, condition=parse(value), timeout=float(timeout))
    return Step(kind, text=value)


def step_targets(hub: Hub, step: Step, command: str | None = None) -> list[str]:
    """What a group step touches: the devices with the command that match its selector.

    A command declared per member (a lighting circuit) gives one target per
    member, ``device/member``.
    """
    command = command or step.command
    selector = {k: v for k, v in step.selector.items() if k != "device"}
    targets: list[str] = []
    for device in hub.devices.values():
        if "device" in step.selector and device.id != step.selector["device"]:
            continue
        if not selector_matches(device, command, selector):
            continue
        per = device.command_specs[command].per
        if per is None:
            targets.append(device.id)
        elif isinstance(step.members, str):
            try:
                targets += [f"{device.id}/{m}" for m in device.members(per)]
            except (TypeError, ValueError):
                targets.append(device.id)  # refused when sent, with the reason
        else:
            targets += [f"{device.id}/{m}" for m in step.members]
    return sorted(targets)


class PlaybookRun:
    """One run: its state, its current step, every target's outcome, who approved what."""

    def __init__(
        self,
        hub: Hub,
        playbook: Playbook,
        user: User,
        concurrency: int,
        *,
        run_id: int,
        history: RunHistory | None = None,
        incidents: IncidentDesk | None = None,
        broadcaster: Broadcaster | None = None,
    ) -> None:
        self.id = run_id
        self.hub = hub
        self.history = history
        self.incidents = incidents
        self.broadcaster = broadcaster
        self.playbook = playbook
        self.user = user
        self.concurrency = concurrency
        self.state = "running"
        """``running``, ``paused``, ``waiting_check``, ``waiting_approval``,
        ``undoing``, ``done``, ``failed``, ``aborted``, ``undone`` (and
        ``interrupted`` for a run the hub stopped, read back from the store)."""
        self.step = 0
        self.outcomes: list[dict[str, str]] = [{} for _ in playbook.steps]
        self.signed: dict[int, str] = {}
        """Step index -> who checked or approved it."""
        self.started_ts = now_ms()
        self.ended_ts: int | None = None
        self._aborted = False
        self._paused = False
        self._changed = anyio.Event()

    def as_json(self) -> dict[str, Any]:
        """The run as the API shows it."""
        return {
            "id": self.id,
            "playbook": self.playbook.name,
            "user": self.user.name,
            "title": self.playbook.title,
            "state": self.state,
            "paused": self._paused,
            "step": self.step,
            "started_ts": self.started_ts,
            "ended_ts": self.ended_ts,
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
        if self.state in STOPPED or self.state == "undoing":
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
        await self._journal(
            f"playbook {self.playbook.name} started (run {self.id})", event="started"
        )
        ok = True
        for index, step in enumerate(self.playbook.steps):
            self.step = index
            if not await self._not_paused():
                break
            ok = await self._run_step(index, step)
            result = "done" if ok else "aborted" if self._aborted else "failed"
            await self._journal(
                f"playbook {self.playbook.name}: step {index} ({step.kind}) {result}",
                event="step",
                result=result,
                outcomes=self.outcomes[index],
                signed_by=self.signed.get(index),
            )
            if not ok:
                break
        self.state = "aborted" if self._aborted else ("done" if ok else "failed")
        self.ended_ts = now_ms()
        await self._journal(
            f"playbook {self.playbook.name} {self.state} (run {self.id})",
            event="stopped",
            state=self.state,
        )

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
            await self._save()
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
        if step.kind == "incident":
            return await self._incident(index, step)
        if step.kind == "broadcast":
            return self._broadcast(index, step)
        return await self._group(index, step, step.command, step.arguments)

    def _broadcast(self, index: int, step: Step) -> bool:
        """Hand the step's alert to the broadcaster, keyed by run and step (sent once)."""
        outcome = self.outcomes[index]
        key = f"playbook:{self.playbook.name}:run-{self.id}:step-{index}"
        problem = (
            "the flood alerts are not available"
            if self.broadcaster is None
            else self.broadcaster(step.text, step.device, step.stage, key)
        )
        outcome[step.text] = "refused" if problem else "queued"
        if problem:
            outcome["reason"] = problem
        return problem is None

    async def _incident(self, index: int, step: Step) -> bool:
        """Open the step's incident (and send a crew); its outcomes say what became of both."""
        assert step.incident is not None
        outcome = self.outcomes[index]
        if self.incidents is None:
            outcome["incident"] = "refused"
            outcome["reason"] = "the operations layer is not enabled"
            return False
        opened = await self.incidents.open_incident(
            step.incident,
            self.user,
            f"playbook {self.playbook.name}, step {index}",
        )
        outcome.update(opened.outcomes())
        return opened.incident_id is not None

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

        async def send(target: str) -> None:
            device_id, _, member = target.partition("/")
            request = CommandRequest(
                device_id,
                command,
                dict(arguments),
                member or None,
                self.user,
                f"playbook {self.playbook.name}, step {index}",
                origin="playbook",
            )
            try:
                result = await self.hub.commands.execute(request)
                if result.outcome is CommandOutcome.PENDING_CONFIRMATION and result.token:
                    # Select before operate: the operator selected the whole step when
                    # starting the run after its dry run; the run operates each selection
                    # at once, as that operator, through the bus's every gate again.
                    result = await self.hub.commands.execute(
                        CommandRequest(
                            device_id,
                            command,
                            dict(arguments),
                            member or None,
                            self.user,
                            request.comment,
                            origin="playbook",
                            confirmation=result.token,
                        )
                    )
                outcome[target] = result.outcome.value
            except CommandError as error:
                found = error.result
                outcome[target] = "refused" if found is None else found.outcome.value
            finally:
                limiter.release()

        async with anyio.create_task_group() as tg:
            for target in pending:
                await limiter.acquire()
                if not await self._not_paused():
                    limiter.release()
                    break
                outcome[target] = "sending"
                tg.start_soon(send, target)
        for target in pending:
            outcome.setdefault(target, "not_sent")
        return not self._aborted

    def begin_undo(self, user: User) -> None:
        """Check that ``user`` may undo the run now and mark it undoing (then :meth:`undo`)."""
        self._operator(user)
        if self.state not in ("done", "failed", "aborted"):
            raise PlaybookError(f"the run is {self.state}: undo needs it stopped")
        self._aborted = False
        self.state = "undoing"

    async def undo(self, user: User) -> None:
        """Run the undo of every group step that has one, last step first (an operator)."""
        if self.state != "undoing":
            self.begin_undo(user)
        await self._journal(
            f"playbook {self.playbook.name} undo started (run {self.id})", event="undo_started"
        )
        for index in reversed(range(len(self.playbook.steps))):
            step = self.playbook.steps[index]
            if step.undo is None or not self.outcomes[index]:
                continue
            self.outcomes[index] = {}
            await self._group(
                index, step, str(step.undo["command"]), dict(step.undo.get("arguments", {}))
            )
        self.state = "undone"
        self.ended_ts = now_ms()
        await self._journal(f"playbook {self.playbook.name} undone (run {self.id})", event="undone")

    async def record(self, action: str, user: User) -> None:
        """Journal what ``user`` just did to the run (pause, resume, abort, check, approve)."""
        await self.hub.store.journal(
            JournalEntry(
                kind="playbook",
                message=f"playbook {self.playbook.name} (run {self.id}): {action} by {user.name}",
                user=user.name,
                data={
                    "playbook": self.playbook.name,
                    "run": self.id,
                    "step": self.step,
                    "event": "action",
                    "action": action,
                },
            )
        )
        await self._save()

    async def _save(self) -> None:
        if self.history is not None:
            await self.history.save(self.as_json())

    async def _journal(self, message: str, **data: Any) -> None:
        await self.hub.store.journal(
            JournalEntry(
                kind="playbook",
                message=message,
                user=self.user.name,
                data={"playbook": self.playbook.name, "run": self.id, "step": self.step, **data},
            )
        )
        # Each journaled moment is also the run's saved state: after a restart the
        # history shows the run as it stood then (marked interrupted if it was running).
        await self._save()


class PastRun:
    """A run read back from the store: history only (nothing of it runs any more)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = int(body["id"])
        self.body = body
        self.state = str(body["state"])

    def as_json(self) -> dict[str, Any]:
        """The run as it was saved."""
        return self.body

    def _refuse(self, user: User) -> None:
        raise PlaybookError(
            f"run {self.id} is {self.state}: it is history since the hub restarted; "
            "start the playbook again"
        )

    pause = resume = abort = check = approve = _refuse


class Playbooks:
    """The playbooks of one hub and their runs, owned by the automation service's task group."""

    def __init__(
        self,
        hub: Hub,
        playbooks: dict[str, Playbook] | None = None,
        *,
        loader: Callable[[], dict[str, Playbook]] | None = None,
        concurrency: int = 16,
        history: RunHistory | None = None,
        incidents: IncidentDesk | None = None,
        broadcaster: Broadcaster | None = None,
    ) -> None:
        self.hub = hub
        self.playbooks = playbooks or {}
        self._loader = loader
        self.concurrency = concurrency
        self.history = history
        self.incidents = incidents
        self.broadcaster = broadcaster
        self.runs: dict[int, PlaybookRun | PastRun] = {}
        self._next_id = 1
        self._tg: TaskGroup | None = None
        self.ready = anyio.Event()
        """Set once the playbook files and the past runs are loaded."""

    def dry_run(self, name: str) -> list[dict[str, Any]]:
        """What each step would do and the devices it would touch; nothing is sent."""
        playbook = self.playbooks[name]
        return [
            {
                **step.as_json(),
                "step": index,
                "targets": step_targets(self.hub, step) if step.kind == "group" else [],
                "undo_targets": step_targets(self.hub, step, str(step.undo["command"]))
                if step.kind == "group" and step.undo is not None
                else [],
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
        run = PlaybookRun(
            self.hub,
            self.playbooks[name],
            user,
            self.concurrency,
            run_id=self._next_id,
            history=self.history,
            incidents=self.incidents,
            broadcaster=self.broadcaster,
        )
        self._next_id += 1
        self.runs[run.id] = run
        # Bounded like the stored history: the oldest runs that are over go first.
        over = [i for i, r in self.runs.items() if r.state in STOPPED]
        for run_id in over[: max(0, len(self.runs) - KEEP)]:
            del self.runs[run_id]
        self._tg.start_soon(run.run)
        return run

    async def undo(self, run: PlaybookRun | PastRun, user: User) -> None:
        """Undo a stopped run, in the service's task group; raise what forbids it."""
        if self._tg is None:
            raise PlaybookError("the automation service is not running")
        PlaybookRun._operator(user)
        if isinstance(run, PastRun):
            run._refuse(user)
            return
        run.begin_undo(user)  # at once: a second undo is refused, the screen shows it
        self._tg.start_soon(run.undo, user)

    async def serve(self) -> None:
        """Load the playbook files and past runs (in worker threads), then own the runs until cancelled."""
        if self._loader is not None:
            self.playbooks = await anyio.to_thread.run_sync(self._loader)
        if self.history is not None:
            for body in await self.history.load():
                run = PastRun(body)
                self.runs[run.id] = run
            self._next_id = max(self.runs, default=0) + 1
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self.ready.set()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None
