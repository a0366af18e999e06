"""The plugin manager: built-in families first, then every installed ``cityvisor`` entry point.

Build one with :func:`make_plugin_manager` (a factory, not a global: each hub
and each test gets its own). Loading never happens as a side effect of
import. A plugin that fails to import or to register is reported by name
with its error in :attr:`PluginManager.failures` and in the log; the others
load regardless.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs

if TYPE_CHECKING:
    from .devices import DeviceType

__all__ = [
    "PluginConflictError",
    "PluginFailure",
    "PluginManager",
    "builtin_plugins",
    "collect_device_types",
    "make_plugin_manager",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cityvisor"


def builtin_plugins() -> tuple[str, ...]:
    """The built-in plugins: every package under ``cityvisor.plugins``, in name order.

    They are loaded exactly as third-party plugins are; a new family is a new
    package there, with nothing to register elsewhere.
    """
    # Found by name, as entry points are: the core never imports plugins/ itself.
    spec = importlib.util.find_spec("cityvisor.plugins")
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError("the built-in plugins (cityvisor.plugins) are not installed")
    return tuple(
        f"cityvisor.plugins.{info.name}"
        for info in sorted(
            pkgutil.iter_modules(spec.submodule_search_locations), key=lambda i: i.name
        )
        if info.ispkg and not info.name.startswith("_")
    )


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: its name, where it came from, and why."""

    name: str
    source: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.source}) failed to load: {self.error}"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with cityvisor's hooks, and a record of plugins that failed."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []

    def load_module(
        self, module_name: str, *, name: str | None = None, source: str = "builtin"
    ) -> bool:
        """Import and register a plugin module; record a failure instead of raising."""
        name = name or module_name.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(module_name)
            self._register_checked(module, name)
        except Exception as error:  # a broken plugin must not stop the others
            self._fail(name, source, error)
            return False
        return True

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> int:
        """Load every installed distribution's entry points of ``group``; return how many loaded."""
        loaded = 0
        for entry_point in importlib.metadata.entry_points(group=group):
            source = f"entry point {entry_point.value}"
            if entry_point.dist is not None:
                source = f"{entry_point.dist.name} {entry_point.dist.version}: {entry_point.value}"
            # A blocked (disabled) plugin is not even imported: it may be disabled
            # precisely because importing it fails.
            if self.has_plugin(entry_point.name) or self.is_blocked(entry_point.name):
                continue
            try:
                plugin = entry_point.load()
                self._register_checked(plugin, entry_point.name)
            except Exception as error:
                self._fail(entry_point.name, source, error)
                continue
            loaded += 1
        return loaded

    def _register_checked(self, plugin: ModuleType | Any, name: str) -> None:
        if self.has_plugin(name):
            return
        self.register(plugin, name=name)
        try:
            self.check_pending()
        except pluggy.PluginValidationError:
            self.unregister(name=name)
            raise

    def _fail(self, name: str, source: str, error: BaseException) -> None:
        failure = PluginFailure(name, source, f"{type(error).__name__}: {error}")
        self.failures.append(failure)
        log.error("%s", failure, exc_info=error)

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call one hook plugin by plugin; a plugin that raises is recorded and skipped.

        Returns ``(plugin name, result)`` pairs in registration order. Use it
        where one plugin's bug must not deprive the others of a call (pluggy's
        own hook call stops at the first exception).
        """
        results: list[tuple[str, Any]] = []
        caller = getattr(self.hook, hook_name)
        for implementation in reversed(caller.get_hookimpls()):
            arguments = {name: kwargs[name] for name in implementation.argnames}
            try:
                result = implementation.function(**arguments)
            except Exception as error:
                self._fail(implementation.plugin_name, f"{hook_name}()", error)
                continue
            results.append((implementation.plugin_name, result))
        return results

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order."""
        return [name for name, _ in self.list_name_plugin()]


def make_plugin_manager(
    *,
    builtins: Iterable[str] | None = None,
    entry_points: bool = True,
    plugins: Iterable[Any] = (),
    disabled: Iterable[str] = (),
) -> PluginManager:
    """A fresh plugin manager with the built-ins, installed entry points and ``plugins``.

    ``plugins`` are extra plugin objects registered directly (what tests and
    ``cityvisor.testing`` use to load only the plugin under test). ``builtins`` defaults
    to every package under ``cityvisor.plugins`` (:func:`builtin_plugins`).
    ``disabled`` names plugins never to load (a deployment's ``[plugins]
    disabled``); a built-in's name is the last part of its module name.
    """
    manager = PluginManager()
    for name in disabled:
        manager.set_blocked(name)
    for module_name in builtin_plugins() if builtins is None else builtins:
        if manager.is_blocked(module_name.rsplit(".", 1)[-1]):
            continue
        manager.load_module(module_name)
    if entry_points:
        manager.load_entry_points()
    for plugin in plugins:
        # A module is named as a built-in is (its last dotted part): its settings
        # table, [plugins.<name>], is then the same however it was loaded.
        name = (getattr(plugin, "__name__", None) or type(plugin).__name__).rsplit(".", 1)[-1]
        try:
            manager._register_checked(plugin, name)
        except Exception as error:
            manager._fail(name, "registered directly", error)
    return manager


class PluginConflictError(Exception):
    """Two plugins declare the same device type name."""


def collect_device_types(plugins: PluginManager) -> dict[str, type[DeviceType]]:
    """Every device type the plugins declare, by ``type_name``.

    A plugin whose hook raises is recorded in ``plugins.failures`` and
    skipped; two plugins declaring one ``type_name`` is a
    :class:`PluginConflictError` (a deployment could not say which it means).
    """
    types: dict[str, type[DeviceType]] = {}
    owners: dict[str, str] = {}
    for plugin_name, declared in plugins.call_each("cityvisor_device_types"):
        for device_type in declared or ():
            name = device_type.type_name
            if name in types and types[name] is not device_type:
                raise PluginConflictError(
                    f"device type {name!r} is declared by two plugins: "
                    f"{owners[name]!r} and {plugin_name!r}"
                )
            types[name] = device_type
            owners[name] = plugin_name
    return types
