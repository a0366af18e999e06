"""One sender per shared watch: each delivery written to every screen of the watch in one loop.

Screens with the same patterns (and the same zones) share one core
:class:`~cityvisor.core.points.Watch`, which hands each of their
subscriptions the same batch at every delivery (every 50 ms). Rather than
each screen's task waking to send it, the watch's :class:`WatchSender`
wakes once and writes the shared ``changes`` message to every screen that
can take it at once, as a plain broadcast would. A screen can when its
task is idle (waiting for its next batch, nothing older queued: see
:meth:`Subscription.defer <cityvisor.core.points.Subscription.defer>`) and
its connection's buffer has room for the message without waiting (the
condition of the fast path of :meth:`Client.send <cityvisor.web.ws.Client.send>`).

Any other screen is handed its batch back: its own task wakes and sends it
as before, with the bounded queue, the resync on overflow, the send
deadline and the drop of :mod:`cityvisor.web.ws`. A slow screen therefore
never holds up the others, and a screen's messages stay in order: the
sender writes only while the screen's own task has nothing in hand.

The senders run in the task group of :meth:`Fanout.run` (the web server
starts it); each lives while its watch has screens. Without it (a
:class:`~cityvisor.web.state.WebState` outside a running server) every
screen is served by its own task.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from ..core.points import Subscription, Watch
from .texts import _changes_messages

__all__ = ["Fanout", "Screen", "WatchSender"]

log = logging.getLogger(__name__)


class Screen(Protocol):
    """What a sender needs of a connected screen (:class:`cityvisor.web.ws.Client`)."""

    closing: bool

    def can_write_now(self, size: int) -> bool:
        """True if a message of ``size`` bytes goes out now, without waiting for the client."""
        ...

    async def write_now(self, data: bytes) -> None:
        """Write one text message (UTF-8) that :meth:`can_write_now` accepted."""
        ...

    def gone(self) -> None:
        """The screen went away: stop its tasks."""
        ...


@dataclass(slots=True)
class _Member:
    screen: Screen
    generation: int
    """The screen's subscription number, the ``"sub"`` of its messages."""
    scope: anyio.CancelScope
    """The scope of the screen's feed: once cancelled, nothing more is written for it."""


class WatchSender:
    """Writes each delivery of one watch to every member screen that can take it at once."""

    def __init__(self, watch: Watch, counters: Counter[str]) -> None:
        self.watch = watch
        self.counters = counters
        self.members: dict[Subscription, _Member] = {}
        # Subscriptions notified since the last turn, in delivery order (a
        # dict: each once, so that it stays bounded by the members).
        self._due: dict[Subscription, None] = {}
        self._wakeup = anyio.Event()
        self._stopped = False
        self.turns = 0
        """Times the sender woke for deliveries (tests and diagnostics)."""

    def add(self, subscription: Subscription, member: _Member) -> None:
        """Serve ``subscription`` (its consumer's batches come here first)."""
        self.members[subscription] = member
        subscription.defer(self._notify)

    def remove(self, subscription: Subscription) -> None:
        """Stop serving ``subscription``: its consumer receives everything itself."""
        if self.members.pop(subscription, None) is not None:
            subscription.defer(None)
        self._due.pop(subscription, None)

    def stop(self) -> None:
        """End :meth:`run` (the watch has no screen left)."""
        self._stopped = True
        self._wakeup.set()

    def _notify(self, subscription: Subscription) -> None:
        """A batch was delivered to a waiting member (called by the delivery; never blocks)."""
        self._due[subscription] = None
        self._wakeup.set()

    async def run(self) -> None:
        """Wake once per delivery and serve every member notified, until stopped."""
        try:
            while not self._stopped:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                self.turns += 1
                due, self._due = self._due, {}
                for subscription in due:
                    member = self.members.get(subscription)
                    if member is not None:
                        await self._serve(subscription, member)
        finally:
            # Cancelled (the server stops) or stopped: every screen left is
            # handed back to its own task.
            for subscription in list(self.members):
                self.remove(subscription)

    async def _serve(self, subscription: Subscription, member: _Member) -> None:
        """Write the member's batch if it can take it now; else hand it back to its task."""
        screen = member.screen
        if member.scope.cancel_called or screen.closing:
            return  # its feed is ending: nothing more goes out for it
        batch = subscription.deferred()
        if batch is None:  # more has piled up (its task merges it), or it was woken
            subscription.wake()
            return
        data = _changes_messages.get(member.generation, batch.changes)
        if not screen.can_write_now(len(data)):
            subscription.wake()  # a slow screen: its own task sends, waits, or drops it
            return
        subscription.receive_nowait()
        self.counters["ws_batches"] += 1
        self.counters["ws_shared_batches"] += 1
        try:
            await screen.write_now(data)
        except ConnectionResetError:
            screen.gone()
        except Exception:  # a bug: this screen goes, the others keep their feed
            log.exception("a WebSocket screen could not be written to")
            screen.gone()


class Fanout:
    """The senders of the watches screens share, in one task group (:meth:`run`)."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.senders: dict[Watch, WatchSender] = {}
        """The running senders, by watch."""
        self._tg: Any = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the senders until cancelled (in the web server's task group)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            # The screens still connected are served by their own tasks from now on
            # (a sender cancelled before it ran has not handed them back itself).
            self._tg = None
            senders, self.senders = self.senders, {}
            for sender in senders.values():
                for subscription in list(sender.members):
                    sender.remove(subscription)

    @contextlib.contextmanager
    def serving(
        self,
        subscription: Subscription,
        screen: Screen,
        generation: int,
        scope: anyio.CancelScope,
    ) -> Iterator[None]:
        """While inside, the sender of ``subscription``'s watch writes its batches when it can.

        Enter it once the screen's snapshot is sent, around the loop that
        receives the rest: the screen's own task still receives what the
        sender hands back. The watch's sender starts with its first screen
        and stops with its last.
        """
        if self._tg is None:  # no server running the senders: the screen's task does it all
            yield
            return
        watch = subscription.watch
        sender = self.senders.get(watch)
        if sender is None:
            sender = self.senders[watch] = WatchSender(watch, self.counters)
            self._tg.start_soon(sender.run, name=f"WebSocket sender {watch.patterns}")
        sender.add(subscription, _Member(screen, generation, scope))
        try:
            yield
        finally:
            sender.remove(subscription)
            if not sender.members and self.senders.get(watch) is sender:
                del self.senders[watch]
                sender.stop()
