"""Public lighting: a street-lighting cabinet with dimmable circuits, over Modbus/TCP.

The register map is a profile (``lighting_cabinet`` by default, a vendor's
file otherwise: docs/modbus-profiles.md); the poll loop is the Modbus
driver's (:mod:`cityvisor.hal.modbus_driver`); the dusk-to-dawn schedules
are in :mod:`.schedule` (docs/lighting-schedules.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pydantic

from cityvisor import DeviceType, alarm, command, hookimpl, interlock, number, point, reaches
from cityvisor.hal.modbus_driver import ModbusConfig, ModbusDeviceType, shared_profile
from cityvisor.opendata import Attribute, DataModel, MemberModel

from .schedule import LightingSettings, NightSchedule, config_problems, service_for


def _t(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


class CabinetConfig(ModbusConfig):
    """Settings of a lighting cabinet."""

    profile: str = "lighting_cabinet"
    """Register map: a bundled profile's name, or the absolute path of a vendor's profile file."""
    circuits: int = pydantic.Field(8, ge=1, le=64)
    """Number of circuits: their points are ``c1/...`` to ``cN/...``."""
    feedback_time: float = pydantic.Field(15.0, gt=0)
    """Seconds a circuit may take to obey an order (dimming ramp and poll included)."""
    schedule: NightSchedule | str | None = None
    """Dusk-to-dawn schedule (docs/lighting-schedules.md): a table, or the name of a shared
    one in ``[plugins.lighting.schedules]``; without it, circuits obey operators only."""

    @pydantic.model_validator(mode="after")
    def _circuits_exist(self) -> CabinetConfig:
        profile = shared_profile(self.profile)
        if "circuit" not in profile.members:
            raise ValueError(f"profile {profile.name} has no [members.circuit] table")
        names = profile.member_names("circuit", self.circuits)
        inline = self.schedule if isinstance(self.schedule, NightSchedule) else None
        unknown = sorted(set(inline.circuits or ()) - set(names)) if inline else []
        if unknown:
            raise ValueError(f"schedule.circuits: no circuit {', '.join(unknown)} in this cabinet")
        return self


class LightingCabinet(ModbusDeviceType):
    """A street-lighting cabinet: N dimmable circuits, door contact, mains supply."""

    family = "lighting"
    type_name = "lighting.cabinet"
    label = _t("Armoire d'éclairage", "Lighting cabinet")
    Config = CabinetConfig

    on = point(bool, per="circuit", doc=_t("Circuit allumé", "Circuit switched on"))
    level = point(
        float,
        unit="%",
        per="circuit",
        minimum=0,
        maximum=100,
        doc=_t("Niveau de gradation mesuré", "Actual dimming level"),
    )
    setpoint = point(float, unit="%", per="circuit", doc=_t("Consigne", "Dimming setpoint"))
    power = point(float, unit="W", per="circuit", deadband=1.0, doc=_t("Puissance", "Power"))
    energy = point(
        float,
        unit="kWh",
        per="circuit",
        deadband=0.01,
        history="energy",
        doc=_t("Énergie", "Energy"),
    )
    lamp_failures = point(int, per="circuit", doc=_t("Lampes en panne", "Failed lamps"))
    door_open = point(bool, doc=_t("Porte de l'armoire ouverte", "Cabinet door open"))
    mains_present = point(bool, doc=_t("Présence secteur", "Mains present"))
    breaker_tripped = point(bool, doc=_t("Disjoncteur général déclenché", "Main breaker tripped"))
    temperature = point(float, unit="°C", deadband=0.5, doc=_t("Température", "Temperature"))
    mains_voltage = point(float, unit="V", deadband=1.0, doc=_t("Tension secteur", "Mains voltage"))

    lamp_failure = alarm(
        "lamp_failures",
        high=0,
        procedure="LIGHT-07",
        message=_t("Lampe en panne", "Lamp failure"),
    )
    cabinet_open = alarm(
        "door_open",
        equals=True,
        priority="high",
        procedure="LIGHT-02",
        message=_t("Armoire ouverte", "Cabinet door open"),
    )
    mains_lost = alarm(
        "mains_present",
        equals=False,
        priority="high",
        procedure="LIGHT-03",
        message=_t("Perte secteur", "Mains lost"),
    )
    breaker_trip = alarm(
        "breaker_tripped",
        equals=True,
        priority="high",
        procedure="LIGHT-03",
        message=_t("Disjoncteur déclenché", "Breaker tripped"),
    )

    @command(
        per="circuit",
        feedback=reaches("on", True, within="feedback_time"),
        label=_t("Allumer", "Switch on"),
        doc=_t(
            "Allumer le circuit : son niveau monte jusqu'à la consigne.",
            "Switch the circuit on: its level ramps to the setpoint.",
        ),
    )
    async def switch_on(self, circuit: str) -> None:
        """Switch the circuit on: its level ramps to the setpoint."""
        await self.write(f"{circuit}/on", True)

    @command(
        per="circuit",
        feedback=reaches("on", False, within="feedback_time"),
        label=_t("Éteindre", "Switch off"),
        doc=_t("Éteindre le circuit.", "Switch the circuit off."),
    )
    async def switch_off(self, circuit: str) -> None:
        """Switch the circuit off."""
        await self.write(f"{circuit}/on", False)

    @command(
        per="circuit",
        level=number(0, 100, unit="%", doc=_t("Niveau visé", "Target level")),
        interlocks=[interlock("on", equals=True, reason=_t("circuit éteint", "circuit is off"))],
        feedback=reaches("level", param="level", tolerance=1.0, within="feedback_time"),
        label=_t("Graduer", "Dim"),
        doc=_t(
            "Graduer le circuit au niveau voulu (l'allumer d'abord).",
            "Dim the circuit to the level wanted (switch it on first).",
        ),
    )
    async def set_level(self, circuit: str, level: float) -> None:
        """Dim the circuit to ``level`` %: its level ramps there (switch it on first)."""
        await self.write(f"{circuit}/setpoint", level)


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The lighting plugin's device types."""
    return [LightingCabinet]


@hookimpl
def cityvisor_startup(hub: Any) -> Callable[[], Awaitable[None]] | None:
    """Run the dusk-to-dawn schedules, if any cabinet has one."""
    cabinets = [d for d in hub.devices.values() if isinstance(d, LightingCabinet)]
    return service_for(hub, cabinets)


@hookimpl
def cityvisor_settings() -> type[LightingSettings]:
    """Schedules shared by many cabinets: ``[plugins.lighting.schedules.<name>]``."""
    return LightingSettings


@hookimpl
def cityvisor_check_config(config: Any) -> Sequence[str]:
    """Schedules follow the sun: they need the site's coordinates; they name real circuits."""
    return config_problems(config, LightingCabinet.type_name)


@hookimpl
def cityvisor_opendata_models() -> list[DataModel]:
    """A cabinet is a ``StreetlightControlCabinet``; each circuit, the ``StreetLight`` it feeds.

    cityvisor knows circuits, not lamps: one StreetLight entity stands for
    the lamps of one circuit (its ``circuit`` attribute names it).
    """
    return [
        DataModel(
            LightingCabinet.type_name,
            "StreetlightControlCabinet",
            [],
            member=MemberModel(
                "circuit",
                "StreetLight",
                [
                    Attribute("on", "powerState", values={True: "on", False: "off"}),
                    Attribute("level", "illuminanceLevel", scale=0.01, unit="C62"),
                    Attribute(
                        "lamp_failures",
                        "status",
                        convert=lambda failures: "defectiveLamp" if failures else "ok",
                    ),
                ],
                relation="refStreetlightControlCabinet",
                static={"circuit": "{member}"},
                required=("location", "status"),
            ),
        )
    ]
