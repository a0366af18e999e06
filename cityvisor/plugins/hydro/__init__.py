"""Flood watch: river and underpass water-level gauges over Modbus/TCP and MQTT.

Two device types share one datasheet (:class:`GaugeBase`): the level, its
rate of rise, battery, link quality and the radar's status, and the
thresholds of each gauge (vigilance, alert, crisis) as alarms with
hysteresis (:mod:`.levels`), plus a rate-of-rise alarm.

* ``hydro.modbus_gauge`` reads a gauge through a Modbus profile
  (``hydro_gauge`` by default), with the shared Modbus driver.
* ``hydro.mqtt_gauge`` listens to the JSON payloads a gauge publishes on its
  topic of an MQTT broker (:mod:`cityvisor.hal.mqtt`); a gauge silent for
  ``stale_after`` seconds is lost (bad ``comm_failure``, communication alarm).

A threshold crossing can broadcast declared alerts (e-mail, webhook, CAP
1.2 message) exactly once per crossing: :mod:`.alerts`; :func:`broadcast`
sends one on an operator's order (a playbook's step), keyed the same way.
The family's page is docs/families/hydro.md.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import anyio
import pydantic
from anyio.abc import TaskStatus

from cityvisor import DeviceConfig, DeviceError, DeviceType, Quality, alarm, hookimpl, point
from cityvisor.hal import mqtt
from cityvisor.hal.modbus_driver import ModbusConfig, ModbusDeviceType

from .alerts import AlertBroadcaster, AlertsSettings, Crossing
from .levels import STAGES, LevelWatch, Thresholds

__all__ = ["GaugeBase", "ModbusGauge", "MqttGauge", "Thresholds", "broadcast"]

SENSOR_STATUSES = ["ok", "no_echo", "fouled", "fault"]
MEASURED = ("level", "battery", "link_quality", "sensor_status")


def _t(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


class GaugeSettings(DeviceConfig):
    """What every gauge's config has, whatever its protocol."""

    thresholds: Thresholds
    """The gauge's levels (m) and rate-of-rise limit: ``{ vigilance = 1.2, alert = 1.8, crisis = 2.4 }``."""
    battery_low: float = pydantic.Field(3.3, ge=0)
    """Battery voltage below which the low-battery alarm rises."""
    alerts: list[str] = []
    """Names of the alerts of ``[plugins.hydro.alerts]`` a threshold crossing broadcasts."""
    area: str = ""
    """The area a broadcast alert concerns (a CAP ``areaDesc``): "Quai de l'Ouche, Dijon"."""


class GaugeBase(DeviceType):
    """The datasheet every water-level gauge shares (not a device type by itself)."""

    level = point(float, unit="m", deadband=0.01, doc=_t("Hauteur d'eau", "Water level"))
    rate_of_rise = point(
        float, unit="cm/h", deadband=0.5, doc=_t("Vitesse de montée", "Rate of rise")
    )
    battery = point(float, unit="V", deadband=0.02, doc=_t("Tension batterie", "Battery voltage"))
    link_quality = point(
        float, unit="%", deadband=2, doc=_t("Qualité de la liaison radio", "Radio link quality")
    )
    sensor_status = point(labels=SENSOR_STATUSES, doc=_t("État du capteur", "Sensor status"))
    stage = point(labels=STAGES, doc=_t("Niveau de crue", "Flood stage"))
    above_vigilance = point(bool, doc=_t("Seuil de vigilance atteint", "Vigilance level reached"))
    above_alert = point(bool, doc=_t("Seuil d'alerte atteint", "Alert level reached"))
    above_crisis = point(bool, doc=_t("Seuil de crise atteint", "Crisis level reached"))
    rising_fast = point(bool, doc=_t("Montée rapide des eaux", "Water rising fast"))
    low_battery = point(bool, doc=_t("Batterie faible", "Battery low"))

    vigilance = alarm(
        "above_vigilance",
        equals=True,
        priority="medium",
        procedure="FLOOD-01",
        message=_t("Crue : seuil de vigilance atteint", "Flood: vigilance level reached"),
    )
    flood_alert = alarm(
        "above_alert",
        equals=True,
        priority="high",
        procedure="FLOOD-02",
        message=_t("Crue : seuil d'alerte atteint", "Flood: alert level reached"),
    )
    flood_crisis = alarm(
        "above_crisis",
        equals=True,
        priority="critical",
        procedure="FLOOD-03",
        message=_t("Crue : seuil de crise atteint", "Flood: crisis level reached"),
    )
    water_rising_fast = alarm(
        "rising_fast",
        equals=True,
        priority="medium",
        procedure="FLOOD-01",
        message=_t("Montée rapide des eaux", "Water rising fast"),
    )
    sensor_fault = alarm(
        "sensor_status",
        not_equals=0,
        priority="low",
        procedure="FLOOD-04",
        message=_t("Capteur de niveau en défaut", "Level sensor fault"),
    )
    battery_alarm = alarm(
        "low_battery",
        equals=True,
        priority="low",
        procedure="FLOOD-04",
        message=_t("Batterie du limnimètre faible", "Gauge battery low"),
    )

    _watch: LevelWatch | None = None

    def derived(self, values: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        """Add the thresholds' flags, the stage and the rate of rise to a reading's values."""
        settings: Any = self.config
        if self._watch is None:
            self._watch = LevelWatch(settings.thresholds)
        level = values.get("level")
        if isinstance(level, int | float):
            values |= self._watch.update(float(level), time.monotonic() if at is None else at)
        battery = values.get("battery")
        if isinstance(battery, int | float):
            values["low_battery"] = battery < settings.battery_low
        return values


# --------------------------------------------------------------------------- Modbus


class ModbusGaugeConfig(ModbusConfig, GaugeSettings):
    """Settings of a gauge read over Modbus/TCP."""

    profile: str = "hydro_gauge"
    """Register map: a bundled profile's name, or the absolute path of a vendor's profile file."""
    period: float = pydantic.Field(5.0, gt=0, le=3600)
    """Seconds between two polls (water rises in minutes, not seconds)."""


class ModbusGauge(ModbusDeviceType, GaugeBase):
    """A water-level gauge (river bank, underpass) read over Modbus/TCP through a profile."""

    family = "hydro"
    type_name = "hydro.modbus_gauge"
    label = _t("Limnimètre (Modbus)", "Water-level gauge (Modbus)")
    Config = ModbusGaugeConfig  # type: ignore[assignment]  # a ModbusConfig too

    def received(self, values: dict[str, Any]) -> None:
        """Each poll's level goes through the thresholds and the rate of rise."""
        self.derived(values)


# --------------------------------------------------------------------------- MQTT


class MqttGaugeConfig(GaugeSettings):
    """Settings of a gauge that publishes JSON on an MQTT topic."""

    broker: str = "127.0.0.1"
    """Address of the MQTT broker."""
    port: int = pydantic.Field(1883, ge=1, le=65535)
    """TCP port of the broker."""
    topic: str = pydantic.Field(min_length=1)
    """The topic the gauge publishes on (one JSON object per reading)."""
    username: str = ""
    """Broker user, if the broker wants one."""
    password: str = ""
    """Broker password; keep it in the environment: ``${NAME}``."""
    stale_after: float = pydantic.Field(60.0, gt=0)
    """Seconds without a reading after which the gauge is lost (communication alarm)."""

    @pydantic.field_validator("topic")
    @classmethod
    def _publishable(cls, topic: str) -> str:
        if "#" in topic or "+" in topic:
            raise ValueError("one gauge, one topic: no MQTT wildcard")
        return topic


class MqttGauge(GaugeBase):
    """A water-level gauge that publishes its readings as JSON on an MQTT topic."""

    family = "hydro"
    type_name = "hydro.mqtt_gauge"
    label = _t("Limnimètre (MQTT)", "Water-level gauge (MQTT)")
    Config = MqttGaugeConfig

    bad_payloads: int = 0
    """Payloads that were not a reading (not JSON, no level...), ignored and counted."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Online with the first valid reading; lost when none comes for ``stale_after`` s."""
        config: MqttGaugeConfig = self.config  # type: ignore[assignment]
        async with mqtt.subscription(
            config.broker,
            config.port,
            config.topic,
            username=config.username,
            password=config.password,
            identifier=f"cityvisor-{self.id}-{time.monotonic_ns()}",
        ) as messages:
            started = False
            while True:
                message = None
                with anyio.move_on_after(config.stale_after):
                    message = await anext(messages)
                if message is None:
                    raise DeviceError(
                        f"no reading on {config.topic} for {config.stale_after:g} s",
                        reason="comm_failure",
                    )
                values = self._reading(message.payload)
                if values is None:
                    continue
                self.publish(self.derived(values), source_ts=message.received_at)
                if not started:
                    started = True
                    task_status.started()

    def _reading(self, payload: bytes) -> dict[str, Any] | None:
        """A payload's values, or None (counted, logged, points marked) when it is no reading."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._refused(payload, "is not JSON")
        if not isinstance(data, dict):
            return self._refused(payload, "is not a JSON object")
        level: Any = data.get("level")
        if not _finite(level):
            return self._refused(payload, "has no numeric level")
        values: dict[str, Any] = {"level": float(level)}
        for name in ("battery", "link_quality"):
            if _finite(data.get(name)):
                values[name] = float(data[name])
        status = data.get("status", "ok")
        if status in SENSOR_STATUSES:
            values["sensor_status"] = SENSOR_STATUSES.index(status)
        return values

    def _refused(self, payload: bytes, why: str) -> dict[str, Any] | None:
        self.bad_payloads += 1
        if self.bad_payloads == 1 or self.bad_payloads % 100 == 0:
            self.log.warning(
                "%s: a payload on %s %s (%d so far): %r",
                self.id,
                self.config.topic,  # type: ignore[attr-defined]
                why,
                self.bad_payloads,
                payload[:80],
            )
        # The gauge says something that is not a level: what it showed is no longer known.
        self.mark(Quality.bad("device_failure"), MEASURED)
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The hydro family's device types."""
    return [ModbusGauge, MqttGauge]


# --------------------------------------------------------------------------- alerts

STAGE_OF_ALARM = {"vigilance": "vigilance", "flood_alert": "alert", "flood_crisis": "crisis"}
"""The threshold alarms and the stage each one's raising is a crossing of."""


def _broadcaster(hub: Any) -> AlertBroadcaster:
    settings = hub.config.settings("hydro") or AlertsSettings.model_validate({})
    return hub.resources.get("hydro.alerts", lambda: AlertBroadcaster(hub, settings))


def _alerting(hub: Any) -> list[GaugeBase]:
    return [d for d in hub.devices.values() if isinstance(d, GaugeBase) and d.config.alerts]  # type: ignore[attr-defined]


@hookimpl
def cityvisor_settings() -> type[AlertsSettings]:
    """Declared alerts: ``[plugins.hydro.alerts.<name>]`` (docs/families/hydro.md)."""
    return AlertsSettings


def broadcast(hub: Any, alert: str, device_id: str, stage: str, key: str) -> str | None:
    """Broadcast the declared ``alert`` now, about a gauge, as if ``stage`` had been crossed.

    For an operator's order (a playbook's step): the message is the gauge's
    threshold alarm's, its area and level the gauge's. ``key`` identifies the
    order for good (a run and its step), so that it goes out once per
    channel, restart or not, like a crossing. Each delivery is journaled
    (kind ``notification``) by the broadcaster. Return why it cannot go out,
    or None once it is queued.
    """
    settings = hub.config.settings("hydro")
    if settings is None or alert not in settings.alerts:
        return f"no alert {alert!r} in [plugins.hydro.alerts]"
    if stage not in STAGE_OF_ALARM.values():
        return f"stage: expected one of {', '.join(STAGE_OF_ALARM.values())}"
    device = hub.devices.get(device_id)
    if not isinstance(device, GaugeBase):
        return f"{device_id} is not a water-level gauge"
    name = next(a for a, s in STAGE_OF_ALARM.items() if s == stage)
    try:
        message = dict(hub.alarms.get(f"{device.id}:{name}").spec.message)
    except KeyError:
        message = {}
    level = device.point("level").current
    config: Any = device.config
    _broadcaster(hub).offer(
        Crossing(
            key=key,
            device=device.id,
            zone=device.zone,
            stage=stage,  # type: ignore[arg-type]
            value=None if level is None or not level.quality.is_good else level.value,
            ts=int(time.time() * 1000),
            alerts=(alert,),
            message=message,
            area=config.area,
        )
    )
    return None


@hookimpl
def cityvisor_startup(hub: Any) -> Any:
    """Broadcast the alerts of threshold crossings (and operators' orders), if any are declared."""
    settings = hub.config.settings("hydro")
    declared = settings is not None and bool(settings.alerts)
    return _broadcaster(hub).run if _alerting(hub) or declared else None


@hookimpl
def cityvisor_alarm_transition(alarm: Any, transition: Any, hub: Any) -> None:
    """A threshold alarm raised is a crossing: hand it to the broadcaster (no I/O here)."""
    stage = STAGE_OF_ALARM.get(alarm.spec.name)
    if transition.kind != "raised" or stage is None:
        return
    device = hub.devices.get(alarm.device_id)
    if not isinstance(device, GaugeBase) or not device.config.alerts:  # type: ignore[attr-defined]
        return
    config: Any = device.config
    raised = alarm.raised_at or transition.ts
    level = device.point("level").current
    _broadcaster(hub).offer(
        Crossing(
            key=f"{alarm.id}@{raised}",
            device=device.id,
            zone=device.zone,
            stage=stage,  # type: ignore[arg-type]
            value=None if level is None else level.value,
            ts=raised,
            alerts=tuple(config.alerts),
            message=dict(alarm.spec.message),
            area=config.area,
        )
    )


@hookimpl
def cityvisor_check_config(config: Any) -> list[str]:
    """Every alert a gauge names is declared in ``[plugins.hydro.alerts]``."""
    settings = config.settings("hydro")
    declared = set(settings.alerts) if settings is not None else set()
    problems = []
    for number, entry in enumerate(config.devices):
        if entry.type not in (ModbusGauge.type_name, MqttGauge.type_name):
            continue
        for name in entry.config.get("alerts", []):
            if name not in declared:
                problems.append(
                    f"devices[{number}].config.alerts: no alert {name!r} in [plugins.hydro.alerts] "
                    f"(declared: {', '.join(sorted(declared)) or 'none'})"
                )
    return problems
