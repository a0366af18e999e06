"""The plugin contract: every hook a cityvisor plugin can implement.

A plugin is a module (or object) with functions decorated with
:data:`cityvisor.hookimpl` whose names are the hooks below. Built-in
equipment families are plugins exactly like third-party packages, which
cityvisor finds through the ``cityvisor`` entry-point group::

    # pyproject.toml of a plugin package
    [project.entry-points.cityvisor]
    flood = "cityvisor_flood"

Hooks are synchronous and cheap: they *declare* things (device types, web
routes) or *react* (alarm transitions) without doing I/O. All I/O lives in
a device's ``run()`` or in a service returned by :func:`cityvisor_startup`,
both run by the hub under its task group.

Every hook receives only the arguments it names (pluggy passes keyword
arguments by name), so a plugin may leave out the ones it does not use.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .alarms import Alarm, Transition
    from .config import Config
    from .devices import DeviceType
    from .hub import Hub
    from .plugins import PluginManager

PROJECT = "cityvisor"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cityvisor_device_types() -> Sequence[type[DeviceType]]:
    """Return the device types this plugin provides.

    Called once, when the hub is built and by ``cityvisor plugins``. Each
    device type is a :class:`cityvisor.DeviceType` subclass whose
    ``type_name`` (``"lighting.cabinet"``) deployments use in their config.
    Two plugins declaring the same ``type_name`` is a configuration error.

    :return: a list of device type classes (collected from every plugin).

    Example::

        @hookimpl
        def cityvisor_device_types():
            return [LightingCabinet]
    """


@hookspec
def cityvisor_web_routes(hub: Hub) -> Sequence[Any]:
    """Return aiohttp routes this plugin adds to the web server.

    Called once when the web application is built, after the hub. Give
    full paths: under ``/api/v1/`` for data, ``/plugins/<name>/`` for
    pages. Every route is behind the same session check as the core API:
    only logged-in users reach it; the handler finds the user in
    ``request["user"]``. What a route shows must follow the site's reading
    policy (``[security] zone_reading``): ask
    ``cityvisor.web.visibility.visibility(request)`` (``sees_device``,
    ``sees_zone``, ``sees_point``, ``sees_alarm``) and answer 404 for the rest.
    A read-only handler meant for anyone (open data)
    is marked with :func:`public`: it answers without a session, so it must
    only return what anyone may read.

    :param hub: the running hub (devices, points, alarms, command bus, store).
    :return: a list of ``aiohttp.web.RouteDef`` (``web.get(path, handler)``)
        or an ``aiohttp.web.RouteTableDef``; collected from every plugin.

    Example::

        @hookimpl
        def cityvisor_web_routes(hub):
            async def snapshot(request):
                ...
            return [web.get("/api/v1/cameras/{id}/snapshot", snapshot)]
    """


@hookspec
def cityvisor_web_pages(hub: Hub) -> Sequence[Mapping[str, Any]]:
    """Return the screens this plugin serves, for the HMI's navigation.

    Called when a logged-in HMI asks for the site (``GET /api/v1/site``,
    once per session). A page is served by the plugin's own routes
    (:func:`cityvisor_web_routes`, under ``/plugins/<name>/``); this hook
    only puts a link to it beside the HMI's own screens. Declare nothing
    when the feature is off (its settings say ``enabled = false``).

    :param hub: the running hub (to read the plugin's settings).
    :return: a list of ``{"name": ..., "path": "/plugins/...", "label":
        {"fr": ..., "en": ...}}``, in the order the links appear; collected
        from every plugin. An entry that does not fit is logged and left out.

    Example::

        @hookimpl
        def cityvisor_web_pages(hub):
            return [{"name": "flood", "path": "/plugins/flood/",
                     "label": {"fr": "Crues", "en": "Floods"}}]
    """


PUBLIC_ROUTE = "public"
"""The mark :func:`public` puts on a handler (the web server's name for "no session")."""


def public(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route handler of :func:`cityvisor_web_routes` as answering without a session.

    For read-only data anyone may read (``/opendata/``); the handler does its
    own rate limiting, and nothing it returns may be personal or secret.
    """

    async def answer(request: Any) -> Any:
        return await handler(request)

    # A wrapper, so that a bound method can be marked too.
    functools.update_wrapper(answer, handler)
    answer.__cityvisor_auth__ = PUBLIC_ROUTE  # type: ignore[attr-defined]
    return answer


@hookspec
def cityvisor_opendata_models() -> Sequence[Any]:
    """Return the open data models of this plugin's device types.

    Called when open data is published (``[opendata] enabled = true``) and by
    ``cityvisor export``. Each model is a :class:`cityvisor.opendata.DataModel`
    naming a device type, the FIWARE Smart Data Model its devices become
    (``StreetlightControlCabinet``, ``WaterObserved``...) and which point
    gives which attribute; a member kind (``per="circuit"``) may become its
    own entities (``StreetLight``). A device type without a model is
    published as a ``Device`` with ``DeviceMeasurement`` entities, and only
    if the deployment names its points. Points that could identify a person
    are declared ``private``: published only aggregated.

    :return: a list of ``DataModel`` declarations; collected from every plugin.

    Example::

        @hookimpl
        def cityvisor_opendata_models():
            return [DataModel("flood.gauge", "WaterObserved",
                              [Attribute("level", "height", unit="MTR")])]
    """


@hookspec
def cityvisor_alarm_transition(alarm: Alarm, transition: Transition, hub: Hub) -> None:
    """React to an alarm changing state (raised, cleared, acknowledged, shelved...).

    Called after the transition is written to the journal, in the alarm
    manager's task, for every alarm of every device. Keep it fast and do no
    I/O here: to notify an external system, hand the transition to a
    service of yours (started by :func:`cityvisor_startup`) through a
    bounded memory stream.

    :param alarm: the alarm, in its new state.
    :param transition: what happened (``transition.kind``: ``raised``,
        ``cleared``, ``acknowledged``, ``shelved``, ``unshelved``,
        ``suppressed``, ``unsuppressed``, ``out_of_service``, ``in_service``,
        ``maintenance_started``, ``maintenance_ended``, ``procedure_step``),
        who did it (``transition.user``, None for the system) and when.
        ``transition.annunciated`` is False for what happened to a hidden
        (suppressed, shelved, in maintenance) alarm. Zone-wide events
        (floods, maintenance windows added or removed) concern no single
        alarm and reach only :meth:`AlarmManager.subscribe` consumers.
    :param hub: the running hub.
    :return: nothing.

    Example::

        @hookimpl
        def cityvisor_alarm_transition(alarm, transition, hub):
            if transition.kind == "raised" and alarm.priority >= Priority.HIGH:
                outbox.send_nowait(alarm.message["fr"])
    """


@hookspec
def cityvisor_startup(hub: Hub) -> Callable[[], Awaitable[None]] | None:
    """Called once when the hub has started (store open, drivers starting).

    Return an async function to run a service for the hub's lifetime (a
    notifier, a rule engine, a bridge): the hub runs it in its task group,
    cancels it at shutdown, and logs and restarts it with backoff if it
    fails. Return None if the plugin needs no service.

    :param hub: the running hub.
    :return: an async callable taking no arguments, or None; collected.

    Example::

        @hookimpl
        def cityvisor_startup(hub):
            async def watch():
                async with hub.points.subscribe("*/lighting/**") as sub:
                    async for message in sub:
                        ...
            return watch
    """


@hookspec
def cityvisor_shutdown(hub: Hub) -> None:
    """Called once when the hub stops, after every driver and service is cancelled.

    Release what the plugin holds outside the hub (files, caches). No I/O
    that may block: the hub must stop within seconds.

    :param hub: the hub that is stopping.
    :return: nothing.
    """


@hookspec
def cityvisor_settings() -> type[Any] | None:
    """Return the model of this plugin's own settings table, ``[plugins.<name>]``.

    Called when a deployment is checked and when the hub is built. Settings
    that belong to no single device (shared lighting schedules, a trap
    listener's address) live in the deployment file under the plugin's name::

        [plugins.lighting.schedules.residential]
        dusk_level = 80

    The table is validated against the returned pydantic model (errors name
    the key path, ``plugins.lighting.schedules.residential.dusk_level``);
    the plugin reads the result with ``hub.config.settings("lighting")``. A
    ``[plugins.<name>]`` table for a plugin that declares no settings is an
    error; a plugin with settings and no table gets the model's defaults.

    :return: a pydantic model class (a :class:`cityvisor.DeviceConfig`
        subclass is convenient: unknown keys are refused), or None.

    Example::

        class LightingSettings(DeviceConfig):
            schedules: dict[str, NightSchedule] = {}

        @hookimpl
        def cityvisor_settings():
            return LightingSettings
    """


@hookspec
def cityvisor_check_config(
    config: Config, device_types: Mapping[str, type[DeviceType]], plugins: PluginManager
) -> Sequence[str]:
    """Return problems the plugin finds in a deployment's config, beyond its schema.

    Called by ``cityvisor check-config`` and before the hub starts, after the
    plugins' settings are validated (``config.settings(name)`` holds them).
    Each problem is one sentence that names the key path
    (``devices[3].config.port``).

    :param config: the validated deployment config.
    :param device_types: every device type the loaded plugins declare, by
        ``type_name`` (to check a section that names families or points).
    :param plugins: the plugin manager (to collect another hook's
        declarations, as open data does with its models).
    :return: a list of problems (empty if none); collected from every plugin.

    Example::

        @hookimpl
        def cityvisor_check_config(config):
            return [f"devices[{i}]: two cabinets on one unit id"
                    for i in duplicated_units(config)]
    """
