"""The hub: the running system, built from one config file and the installed plugins.

It builds the point database, the store, the alarm manager, the command bus
and the supervisor; creates every configured device from its plugin's
device type; and runs them all under one task group, so that stopping the
hub (cancelling :meth:`Hub.run`) stops everything, in order, within seconds.

Nothing here knows a protocol or a web page: the web server and the
equipment families reach the hub through the plugin hooks.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .alarms import Alarm, AlarmManager, Transition, alarm
from .commands import CommandBus
from .devices import DeviceType, Resources, Supervisor
from .plugins import PluginManager, collect_device_types
from .points import DataType, PointDB, PointSpec
from .store import JournalEntry, Store
from .store.anchors import ANCHOR_INTERVAL, anchor_store, load_private_key

if TYPE_CHECKING:
    from .config import Config, JournalSection

__all__ = ["Hub"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0
"""Seconds the hub allows itself to flush and close after cancellation."""

SETTLE_AT = 20_000
"""Points from which the hub settles its memory (:meth:`Hub.settle_memory`, decision 0022)."""

SETTLE_AGAIN = 10_000
"""Points registered since the last settling after which the hub settles again."""

SETTLE_CHECK = 30.0
"""Seconds between the hub's looks at how many points were registered since it settled."""

_settled_hubs = 0
"""Hubs of this process that froze their objects (the collector's state is the process's)."""

JOURNAL_REPLACED_POINT = "hub/journal/replaced_entries"
"""Journal entries written as a placeholder since the hub started (appears with the first)."""
JOURNAL_REPLACED_ALARM = "hub:journal_replaced"
"""The alarm raised when the journal had to write a placeholder instead of an entry."""


class Hub:
    """The running system: points, alarms, commands, devices and plugin services.

    Build it with a validated :class:`~cityvisor.core.config.Config` and a
    plugin manager, then ``await hub.run()`` (it runs until cancelled)::

        hub = Hub(load_config("config/demo.toml"), make_plugin_manager())
        async with anyio.create_task_group() as tg:
            await tg.start(hub.run)
            ...
            tg.cancel_scope.cancel()

    ``hub.points``, ``hub.alarms``, ``hub.commands``, ``hub.store``,
    ``hub.devices`` and ``hub.supervisor`` are the parts plugins and the web
    server use.
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginManager,
        *,
        store: Store | None = None,
        device_types: Mapping[str, type[DeviceType]] | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.device_types = dict(device_types or collect_device_types(plugins))
        self.points = PointDB()
        self.store: Store = store or config.store.create_store(config.source)
        config.load_settings(plugins)
        self.devices: dict[str, DeviceType] = {}
        self.resources = Resources()
        self.supervisor = Supervisor(self.points)
        self.alarms = AlarmManager(self.points, self.store, on_transition=self._alarm_transition)
        self.commands = CommandBus(self.points, self.store, self.devices)
        self.started = anyio.Event()
        self._settled = False
        self._settled_at = 0
        self.services: dict[str, Callable[[], Awaitable[None]]] = {}
        self.service_failures: Counter[str] = Counter()
        """Failures of each plugin's service since start (each one logged, then restarted)."""
        self._build()

    # -- building ------------------------------------------------------------

    def _build(self) -> None:
        for resolved in self.config.resolve_devices(self.device_types):
            if not resolved.enabled:
                continue
            device = resolved.device_type(
                resolved.info, resolved.config, self.points, self.resources
            )
            device.declare_points()
            self.devices[device.id] = device
            self.alarms.add_device(device)
            self.supervisor.add(device)
        for alarm_config in self.config.alarms:
            spec, point_id = alarm_config.to_spec()
            entry = self.points.get(point_id)
            self.alarms.add(
                spec,
                point_id,
                device_id=entry.device_id,
                zone=entry.zone,
                family=entry.family,
                member=entry.member,
                alarm_id=f"config:{spec.name}",
            )
        for procedure in self.config.procedures:
            self.alarms.add_procedure(procedure.to_procedure())
        store = self.store
        self.points.add_listener(lambda point, value: store.record(value, point.spec))
        if hasattr(store, "on_journal_replaced"):
            store.on_journal_replaced = self._journal_replaced

    def _journal_replaced(self, count: int, reason: str) -> None:
        """Raise the journal's alarm: an entry was written as a placeholder (its text made safe).

        The point and its alarm are created with the first placeholder, so a
        hub whose journal never needed one shows neither (after a restart,
        they come back while the alarm has a state to show, see :meth:`run`).
        """
        self._declare_journal_alarm()
        log.error("journal: %d entries replaced so far; last: %s", count, reason)
        self.points.update(JOURNAL_REPLACED_POINT, count)

    def _declare_journal_alarm(self) -> None:
        if JOURNAL_REPLACED_POINT not in self.points:
            self.points.register(
                JOURNAL_REPLACED_POINT,
                PointSpec(
                    "replaced_entries",
                    DataType.INT,
                    doc={
                        "fr": "Entrées du journal écrites en remplacement depuis le démarrage",
                        "en": "Journal entries written as a placeholder since start",
                    },
                ),
                family="hub",
            )
            self.alarms.add(
                alarm(
                    JOURNAL_REPLACED_POINT,
                    high=0,
                    priority="high",
                    name="journal_replaced",
                    message={
                        "fr": "Une entrée du journal a dû être remplacée (voir le journal)",
                        "en": "A journal entry had to be replaced (see the journal)",
                    },
                ),
                JOURNAL_REPLACED_POINT,
                family="hub",
                alarm_id=JOURNAL_REPLACED_ALARM,
            )

    # -- running -------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the store, start every part and device, and run until cancelled."""
        await self.store.open()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.store.run)
                tg.start_soon(self.points.run, name="point delivery")
                await tg.start(self.alarms.run)
                if self.alarms.has_saved_state(JOURNAL_REPLACED_ALARM):
                    # Not acknowledged before the restart: shown again (none replaced since).
                    self._declare_journal_alarm()
                    self.points.update(JOURNAL_REPLACED_POINT, 0)
                await tg.start(self.commands.run)
                await self.store.journal(
                    JournalEntry(
                        kind="config",
                        message=f"hub started: {len(self.devices)} devices, "
                        f"{len(self.points)} points",
                        data={
                            "event": "started",
                            "devices": len(self.devices),
                            "points": len(self.points),
                            "config": str(getattr(self.config, "source", "")),
                            "sha256": self._config_digest(),
                            "plugins": self.plugins.plugin_names(),
                            "plugin_failures": [str(f) for f in self.plugins.failures],
                        },
                    )
                )
                await tg.start(self.supervisor.run)
                journal = getattr(self.config, "journal", None)
                if journal is not None and journal.anchor_key is not None:
                    tg.start_soon(self._anchor_daily, journal, name="journal anchor")
                for plugin_name, service in self._services():
                    self.services[plugin_name] = service
                    tg.start_soon(self._run_service, plugin_name, service, name=plugin_name)
                tg.start_soon(self._settle, name="settle memory")
                self.started.set()
                task_status.started()
        finally:
            self._unsettle()
            with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                await self.resources.aclose()
                self.plugins.call_each("cityvisor_shutdown", hub=self)
                await self.store.journal(
                    JournalEntry(kind="config", message="hub stopped", data={"event": "stopped"})
                )
                await self.store.close()

    def settle_memory(self) -> None:
        """Leave every object that exists now out of the garbage collector's full passes.

        A city of 250,000 points is a million objects that live as long as
        the hub (its points, their declarations, the index over their ids);
        each full pass of the cyclic collector would walk them all and hold
        the event loop for a tenth of a second or more. After one last pass
        they are frozen (:func:`gc.freeze`): no longer walked, still freed as
        usual when nothing refers to them. Their current values change all
        the time but are plain tuples the collector does not track
        (:data:`~cityvisor.core.points.values.State`), so the passes that
        remain walk only what was made since. The hub does it once started
        when it holds :data:`SETTLE_AT` points, and again after every
        :data:`SETTLE_AGAIN` points registered since (an edge node's birth,
        a plugin's new devices); it unfreezes when it stops. Decision 0022.
        """
        global _settled_hubs
        gc.collect()
        gc.freeze()
        if not self._settled:
            self._settled = True
            _settled_hubs += 1
        self._settled_at = self.points.registered

    def _unsettle(self) -> None:
        """The hub stops: what it froze can be collected again (once no other hub of
        this process holds it frozen)."""
        global _settled_hubs
        if self._settled:
            self._settled = False
            _settled_hubs -= 1
            if _settled_hubs == 0:
                gc.unfreeze()

    async def _settle(self) -> None:
        """Settle the memory once started with a large city, then after many new points."""
        while True:
            if len(self.points) >= SETTLE_AT:
                since = self.points.registered - self._settled_at
                if not self._settled or since >= SETTLE_AGAIN:
                    started = anyio.current_time()
                    self.settle_memory()
                    log.info(
                        "memory settled: %d points, %d objects out of the collector's passes (%.0f ms)",
                        len(self.points),
                        gc.get_freeze_count(),
                        (anyio.current_time() - started) * 1000,
                    )
            await anyio.sleep(SETTLE_CHECK)

    async def _anchor_daily(self, journal: JournalSection) -> None:
        """Anchor the journal's chain at start, then once a day (``[journal] anchor_key``).

        The key is read each time (never kept): a key that cannot be read, or
        a failed write, is logged and tried again within the hour; a broken
        chain is not signed.
        """
        while True:
            delay = ANCHOR_INTERVAL
            try:
                assert journal.anchor_key is not None
                key = await anyio.to_thread.run_sync(load_private_key, journal.anchor_key)
                anchor = await anchor_store(self.store, key, journal.anchor_file, "hub")
                if anchor is None:
                    log.error("journal chain broken: no anchor signed (cityvisor journal verify)")
                else:
                    log.info("journal anchored at row %s", anchor["row_id"])
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                log.exception("journal anchor failed; trying again in an hour")
                delay = 3600.0
            await anyio.sleep(delay)

    def _services(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            (name, service)
            for name, service in self.plugins.call_each("cityvisor_startup", hub=self)
            if service is not None
        ]

    async def _run_service(self, name: str, service: Callable[[], Awaitable[None]]) -> None:
        """Run a plugin's service; restart it with capped backoff if it fails."""
        attempt = 0
        while True:
            started = anyio.current_time()
            try:
                await service()
                log.info("service of plugin %s returned", name)
                return
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                self.service_failures[name] += 1
                log.exception("service of plugin %s failed", name)
            if anyio.current_time() - started > 60:
                attempt = 0
            delay = min(60.0, 0.5 * math.pow(2, attempt)) * random.uniform(0.8, 1.0)
            attempt += 1
            await anyio.sleep(delay)

    def _alarm_transition(self, alarm: Alarm, transition: Transition) -> None:
        # A notifier's bug must never stop alarm processing: call_each isolates plugins.
        self.plugins.call_each(
            "cityvisor_alarm_transition", alarm=alarm, transition=transition, hub=self
        )

    def _config_digest(self) -> str:
        source = getattr(self.config, "source", None)
        if source is None:
            return ""
        try:
            with open(source, "rb") as file:
                return hashlib.sha256(file.read()).hexdigest()
        except OSError:
            return ""

    def summary(self) -> dict[str, Any]:
        """Counts for logs and metrics."""
        return {
            "devices": len(self.devices),
            "points": len(self.points),
            "online": sum(1 for s in self.supervisor.drivers.values() if s.online),
            "restarts": self.supervisor.restarts,
        }
