"""Flood watch: radar water-level gauges over Modbus/TCP, with high-water alarms.

An example of a plugin published as its own package (``cityvisor-flood``).
Everything protocol-related is cityvisor's: the register map is a profile
file shipped in this package (``flood_gauge.toml``), and the device type
extends the shared :class:`~cityvisor.hal.modbus_driver.ModbusDeviceType`,
which polls, coalesces registers, reconnects and marks points bad. What is
left here is the datasheet: points, alarms, one command, and two derived
points (``vigilance``, ``danger``) comparing the level with the thresholds
each site's config gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
from cityvisor import DeviceType, alarm, command, hookimpl, number, point, reaches
from cityvisor.hal.modbus_driver import ModbusConfig, ModbusDeviceType
from cityvisor.opendata import Attribute, DataModel

__all__ = ["PROFILE", "GaugeConfig", "WaterLevelGauge"]

PROFILE = str(Path(__file__).with_name("flood_gauge.toml"))
"""The register map of the gauge, by absolute path (profiles outside cityvisor are files)."""


def _t(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


class GaugeConfig(ModbusConfig):
    """Settings of one water-level gauge."""

    profile: str = PROFILE
    """Register map: the absolute path of a profile file (default: this package's gauge)."""
    period: float = pydantic.Field(5.0, gt=0, le=3600)
    """Seconds between two polls (water rises in minutes, not seconds)."""
    vigilance_level: float = pydantic.Field(ge=0, le=50)
    """Level (m) from which the site is watched: the ``high_water`` alarm."""
    danger_level: float = pydantic.Field(ge=0, le=50)
    """Level (m) from which the site floods: the ``flood_danger`` alarm (close the road)."""

    @pydantic.model_validator(mode="after")
    def _danger_above_vigilance(self) -> GaugeConfig:
        if self.danger_level <= self.vigilance_level:
            raise ValueError("danger_level must be above vigilance_level")
        return self


class WaterLevelGauge(ModbusDeviceType):
    """A radar water-level gauge (river bank, underpass, storm basin), read over Modbus/TCP."""

    family = "flood"
    type_name = "flood.gauge"
    label = _t("Limnimètre", "Water-level gauge")
    Config = GaugeConfig

    level = point(float, unit="m", deadband=0.01, minimum=0, doc=_t("Hauteur d'eau", "Water level"))
    rate_of_rise = point(
        float, unit="cm/h", deadband=0.5, doc=_t("Vitesse de montée", "Rate of rise")
    )
    sensor_status = point(
        labels=["ok", "no_echo", "fouled", "fault"],
        doc=_t("État du capteur radar", "Radar sensor status"),
    )
    battery = point(float, unit="V", deadband=0.1, doc=_t("Tension batterie", "Battery voltage"))
    alert_level = point(
        float, unit="m", doc=_t("Seuil du relais d'alerte local", "Local alert relay level")
    )
    alert_relay = point(bool, doc=_t("Relais d'alerte local fermé", "Local alert relay closed"))
    vigilance = point(bool, doc=_t("Au-dessus du seuil de vigilance", "Above vigilance level"))
    danger = point(bool, doc=_t("Au-dessus du seuil de danger", "Above danger level"))

    high_water = alarm(
        "vigilance",
        equals=True,
        priority="high",
        procedure="FLOOD-01",
        message=_t("Crue : seuil de vigilance atteint", "High water: vigilance level reached"),
    )
    flood_danger = alarm(
        "danger",
        equals=True,
        priority="critical",
        procedure="FLOOD-02",
        message=_t("Crue : seuil de danger atteint", "Flood: danger level reached"),
    )
    rising_fast = alarm(
        "rate_of_rise",
        high=30,
        deadband=5,
        on_delay=60,  # one gust on the radar is not a flood wave
        priority="medium",
        procedure="FLOOD-01",
        message=_t("Montée rapide des eaux", "Water rising fast"),
    )
    sensor_fault = alarm(
        "sensor_status",
        not_equals=0,
        priority="low",
        message=_t("Capteur de niveau en défaut", "Level sensor fault"),
    )

    @command(
        level=number(0, 50, unit="m", doc=_t("Seuil d'alerte", "Alert level")),
        feedback=reaches("alert_level", param="level", tolerance=0.01, within=30),
        label=_t("Régler le seuil d'alerte local", "Set the local alert level"),
    )
    async def set_alert_level(self, level: float) -> None:
        """Set the level at which the gauge itself closes its alert relay (lights, siren)."""
        await self.write("alert_level", level)

    def received(self, values: dict[str, Any]) -> None:
        """Compare each good level reading with the site's thresholds."""
        level = values.get("level")
        if level is not None:
            config: GaugeConfig = self.config  # type: ignore[assignment]
            values["vigilance"] = level >= config.vigilance_level
            values["danger"] = level >= config.danger_level


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The flood watch's device types."""
    return [WaterLevelGauge]


@hookimpl
def cityvisor_opendata_models() -> list[DataModel]:
    """A gauge is published as a FIWARE ``WaterObserved``: the water's height at the site."""
    return [
        DataModel(
            WaterLevelGauge.type_name,
            "WaterObserved",
            [Attribute("level", "height", unit="MTR")],
            required=("location", "height"),
        )
    ]
