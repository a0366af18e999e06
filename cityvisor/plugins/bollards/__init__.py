"""Retractable bollards: a PLC-driven bollard over Modbus/TCP, never raised onto a vehicle.

The register map is a profile (``bollard_plc`` by default, a vendor's file
otherwise: docs/modbus-profiles.md); the poll loop is the Modbus driver's
(:mod:`cityvisor.hal.modbus_driver`). Raising and lowering need the
operator's confirmation; the command bus refuses to raise while a vehicle is
on the loop. The driver watches every stroke: a bollard that has not reached
its target ``travel_time`` seconds after the order sets ``command_failed``,
which raises the ``blocked`` alarm (and the order ends ``feedback_timeout``).
"""

from __future__ import annotations

from typing import Any

import anyio
import pydantic

from cityvisor import DeviceType, alarm, command, hookimpl, interlock, point, reaches
from cityvisor.hal.modbus_driver import ModbusConfig, ModbusDeviceType
from cityvisor.opendata import Attribute, DataModel

POSITIONS = ["down", "up", "moving", "fault"]
MODES = ["remote", "local", "maintenance"]
DOWN, UP = POSITIONS.index("down"), POSITIONS.index("up")


def _t(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


class BollardConfig(ModbusConfig):
    """Settings of a retractable bollard."""

    profile: str = "bollard_plc"
    """Register map: a bundled profile's name, or the absolute path of a vendor's profile file."""
    period: float = pydantic.Field(0.5, gt=0, le=60)
    """Seconds between two polls (a bollard moves: poll it often)."""
    travel_time: float = pydantic.Field(10.0, gt=0, le=300)
    """Seconds a stroke may take (the PLC's stroke time plus a margin) before the order fails."""


REMOTE = interlock(
    "mode",
    equals=MODES.index("remote"),
    reason=_t("clé hors « distance »", "key switch not in remote"),
)
HEALTHY = interlock("fault_code", equals=0, reason=_t("borne en défaut", "bollard in fault"))
NO_VEHICLE = interlock(
    "vehicle_on_loop", equals=False, reason=_t("véhicule sur la boucle", "vehicle on the loop")
)


class Bollard(ModbusDeviceType):
    """A retractable bollard controlling access to a street, driven by its PLC."""

    family = "bollards"
    type_name = "bollards.bollard"
    label = _t("Borne escamotable", "Retractable bollard")
    Config = BollardConfig

    position = point(labels=POSITIONS, doc=_t("Position de la borne", "Bollard position"))
    height = point(float, unit="%", deadband=1.0, doc=_t("Hauteur (100 % levée)", "Height"))
    vehicle_on_loop = point(bool, doc=_t("Véhicule sur la boucle", "Vehicle on the loop"))
    mode = point(labels=MODES, doc=_t("Clé : distance, local, maintenance", "Key switch mode"))
    fault_code = point(int, doc=_t("Code défaut de l'automate (0 : aucun)", "PLC fault code"))
    command_failed = point(
        bool, doc=_t("Dernier ordre non exécuté à temps", "Last order not carried out in time")
    )

    fault = alarm(
        "fault_code",
        high=0,
        priority="high",
        procedure="BOLLARD-01",
        message=_t("Borne en défaut", "Bollard fault"),
    )
    blocked = alarm(
        "command_failed",
        equals=True,
        priority="high",
        procedure="BOLLARD-02",
        message=_t("Borne bloquée : position non atteinte", "Bollard blocked: target not reached"),
    )

    @command(
        name="raise",
        confirm=True,
        interlocks=[NO_VEHICLE, REMOTE, HEALTHY],
        feedback=reaches("position", UP, within="travel_time"),
        label=_t("Lever", "Raise"),
        doc=_t(
            "Lever la borne (jamais sur un véhicule).", "Raise the bollard (never onto a vehicle)."
        ),
    )
    async def raise_bollard(self) -> None:
        """Raise the bollard (never onto a vehicle)."""
        await self._order("raise", UP)

    @command(
        confirm=True,
        interlocks=[REMOTE, HEALTHY],
        feedback=reaches("position", DOWN, within="travel_time"),
        label=_t("Baisser", "Lower"),
        doc=_t(
            "Baisser la borne pour laisser passer.", "Lower the bollard to let vehicles through."
        ),
    )
    async def lower(self) -> None:
        """Lower the bollard to let vehicles through."""
        await self._order("lower", DOWN)

    @command(
        feedback=reaches("fault_code", 0, within="travel_time"),
        label=_t("Réarmer", "Reset"),
        doc=_t(
            "Acquitter et effacer le défaut de l'automate.",
            "Acknowledge and clear the PLC's fault.",
        ),
    )
    async def reset(self) -> None:
        """Acknowledge and clear the PLC's fault (a bollard stopped mid-stroke settles down)."""
        await self.write("reset_fault", True)

    _stroke: tuple[int, float] | None = None  # (target position, deadline) of the order under way
    _failed = False

    async def _order(self, coil: str, target: int) -> None:
        await self.write(coil, True)  # the PLC clears the coil when it takes the order
        self._stroke = (target, anyio.current_time() + self.config.travel_time)  # type: ignore[attr-defined]

    def received(self, values: dict[str, Any]) -> None:
        """Watch the stroke in progress: ``command_failed`` once it overruns ``travel_time``."""
        stroke = self._stroke
        position = self.point_specs["position"].coerce(values.get("position"))
        if stroke is not None and position == stroke[0]:
            self._stroke, self._failed = None, False
        elif stroke is not None and anyio.current_time() > stroke[1]:
            self._stroke, self._failed = None, True
        values["command_failed"] = self._failed


@hookimpl
def cityvisor_device_types() -> list[type[DeviceType]]:
    """The bollards plugin's device types."""
    return [Bollard]


@hookimpl
def cityvisor_opendata_models() -> list[DataModel]:
    """A bollard is published as a Device whose state is its position.

    A vehicle on the loop is a person's car at a place and a time: it is
    published only aggregated (``[opendata.families.bollards.aggregate.vehicle_on_loop]``).
    """
    return [
        DataModel(
            Bollard.type_name,
            "Device",
            [Attribute("position", "deviceState"), Attribute("height", "value")],
            static={"category": ["actuator"], "controlledProperty": ["trafficFlow"]},
            private=frozenset({"vehicle_on_loop"}),
        )
    ]
