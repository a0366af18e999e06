"""The traffic signal controller device type: its points, commands, interlocks and poll loop."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pydantic
from anyio.abc import TaskStatus

from cityvisor import (
    DeviceConfig,
    DeviceError,
    DeviceType,
    Quality,
    alarm,
    command,
    integer,
    interlock,
    point,
    reaches,
    string,
)
from cityvisor.hal import ntcip, snmp
from cityvisor.hal.ntcip import Junction, NtcipController, UnitControlStatus, UnitFlashStatus
from cityvisor.hal.snmp import CommunityCredentials


def _t(fr: str, en: str) -> dict[str, str]:
    return {"fr": fr, "en": en}


CONTROL = {status.value: status.name.lower() for status in UnitControlStatus}
NOT_LOCAL = interlock(
    "local_control",
    equals=False,
    reason=_t(
        "le carrefour est en commande locale (armoire)",
        "the junction is under local control (at the cabinet)",
    ),
)
"""A technician at the cabinet has the junction: the central's orders wait."""
FLASH = {status.value: status.name.lower() for status in UnitFlashStatus}
PHASE_STATES = ["dark", "red", "yellow", "green", "flash"]


class SignalConfig(DeviceConfig):
    """Settings of one traffic signal controller."""

    host: str
    """Address of the controller's SNMP agent."""
    port: int = pydantic.Field(161, ge=1, le=65535)
    """UDP port of the agent."""
    version: Literal["v2c"] = "v2c"
    """SNMP version (NTCIP controllers in service speak v1/v2c)."""
    community: str = "public"
    """The read community."""
    write_community: str = ""
    """The community allowed to SET (plans, holds, priority); empty, every command fails."""
    junction: str = "crossroads"
    """Junction profile: a bundled one's name, or the absolute path of a profile file."""
    detectors: list[pydantic.PositiveInt] = []
    """Vehicle detector numbers to watch (``d<n>`` points): occupancy and faults."""
    poll_period: float = pydantic.Field(1.0, gt=0)
    """Seconds between two reads of the controller."""
    timeout: float = pydantic.Field(1.0, gt=0)
    """Seconds to wait for each SNMP answer (then ``retries`` more attempts)."""
    retries: int = pydantic.Field(1, ge=0)
    """Extra attempts after a timeout."""
    bus_priority: bool = True
    """Whether bus priority requests are sent at start (a command switches it)."""
    feedback_time: float = pydantic.Field(10.0, gt=0)
    """Seconds a controller may take to show a command's effect (clearance included)."""

    @pydantic.model_validator(mode="after")
    def _junction_loads(self) -> SignalConfig:
        _junction(self.junction)
        return self

    @property
    def layout(self) -> Junction:
        """The junction profile."""
        return _junction(self.junction)


_JUNCTIONS: dict[str, Junction] = {}


def _junction(name: str) -> Junction:
    # A profile is read once per process: many controllers run the same layout.
    if name not in _JUNCTIONS:
        _JUNCTIONS[name] = ntcip.load_junction(name)
    return _JUNCTIONS[name]


class SignalController(DeviceType):
    """A traffic signal controller running one junction, over SNMP (NTCIP 1202)."""

    family = "signals"
    type_name = "signals.controller"
    label = _t("Contrôleur de feux", "Traffic signal controller")
    pages = {"/plugins/signals/ring?device={id}": _t("Diagramme des phases", "Phase ring diagram")}
    Config = SignalConfig

    control = point(labels=CONTROL, doc=_t("Source de commande", "Control source"))
    central_control = point(bool, doc=_t("Sous commande centrale", "Under central control"))
    local_control = point(
        bool, doc=_t("Commande locale (armoire)", "Local control (at the cabinet)")
    )
    flash_status = point(labels=FLASH, doc=_t("État clignotant", "Flash status"))
    flashing = point(bool, doc=_t("En clignotant", "In flash"))
    conflict_flash = point(
        bool,
        doc=_t("Clignotant sur conflit (moniteur de conflit)", "Flash by the conflict monitor"),
    )
    plan = point(
        int,
        doc=_t(
            "Plan de feux en cours (254 libre, 255 clignotant)",
            "Running plan (254 free, 255 flash)",
        ),
    )
    plan_name = point(str, doc=_t("Nom du plan en cours", "Name of the running plan"))
    greens = point(str, doc=_t("Phases au vert", "Phases on green"))
    bus_priority = point(bool, doc=_t("Priorité bus active", "Bus priority enabled"))
    priority_requests = point(
        int, doc=_t("Demandes de priorité en cours", "Priority requests in progress")
    )
    state = point(labels=PHASE_STATES, per="phase", doc=_t("Couleur de la phase", "Phase colour"))
    held = point(bool, per="phase", doc=_t("Phase maintenue au vert", "Phase held on green"))
    hold_conflict = point(
        str,
        per="phase",
        doc=_t(
            "Phases maintenues en conflit avec celle-ci (vide : aucune)",
            "Held phases that conflict with this one (empty: none)",
        ),
    )
    occupancy = point(
        float,
        unit="%",
        per="detector",
        deadband=5.0,
        doc=_t("Taux d'occupation du détecteur", "Detector occupancy"),
    )
    detector_fault = point(bool, per="detector", doc=_t("Détecteur en défaut", "Detector fault"))

    in_flash = alarm(
        "flashing",
        equals=True,
        priority="high",
        procedure="TRAFFIC-01",
        message=_t("Carrefour en clignotant", "Junction in flash"),
    )
    conflict_monitor = alarm(
        "conflict_flash",
        equals=True,
        priority="critical",
        procedure="TRAFFIC-02",
        message=_t(
            "Moniteur de conflit déclenché : carrefour en clignotant",
            "Conflict monitor tripped: junction in flash",
        ),
    )
    local_takeover = alarm(
        "local_control",
        equals=True,
        priority="low",
        procedure="TRAFFIC-03",
        message=_t("Carrefour en commande locale", "Junction under local control"),
    )
    detector_failed = alarm(
        "detector_fault",
        equals=True,
        priority="low",
        procedure="TRAFFIC-04",
        message=_t("Boucle de détection en défaut", "Vehicle detector fault"),
    )

    # ----------------------------------------------------------------- commands

    @command(
        plan=integer(1, 253, doc=_t("Numéro du plan", "Plan number")),
        confirm=True,
        interlocks=[NOT_LOCAL],
        feedback=reaches("plan", param="plan", within="feedback_time"),
        label=_t("Choisir un plan de feux", "Select a timing plan"),
    )
    async def select_plan(self, plan: int) -> None:
        """Run timing plan ``plan`` (SET systemPatternControl); it must be in the junction profile."""
        plans = self.config.layout.plans
        if plan not in plans:
            raise DeviceError(
                f"the junction has no plan {plan} (plans: {', '.join(map(str, plans))})",
                reason="config_error",
            )
        await self._controller().call_pattern(plan)
        await self._refresh()

    @command(
        confirm=True,
        interlocks=[NOT_LOCAL],
        feedback=reaches("flashing", True, within="feedback_time"),
        label=_t("Passer en clignotant", "Go to flash"),
    )
    async def go_to_flash(self) -> None:
        """Put the junction in flash (SET systemPatternControl = 255); holds are released."""
        controller = self._controller()
        await controller.set_holds(())
        await controller.call_pattern(ntcip.PATTERN_FLASH)
        await self._refresh()

    @command(
        confirm=True,
        interlocks=[NOT_LOCAL],
        feedback=reaches("central_control", False, within="feedback_time"),
        label=_t("Retour au programme horaire", "Return to schedule"),
    )
    async def return_to_schedule(self) -> None:
        """Release every hold and give the controller back to its own schedule (standby)."""
        controller = self._controller()
        await controller.set_holds(())
        await controller.call_pattern(ntcip.PATTERN_STANDBY)
        await self._refresh()

    @command(
        per="phase",
        confirm=True,
        interlocks=[
            interlock(
                "hold_conflict",
                equals="",
                reason=_t(
                    "une phase en conflit est déjà maintenue", "a conflicting phase is already held"
                ),
            ),
            interlock(
                "flashing",
                equals=False,
                reason=_t("le carrefour est en clignotant", "the junction is in flash"),
            ),
            NOT_LOCAL,
        ],
        feedback=reaches("held", True, within="feedback_time"),
        label=_t("Maintenir la phase au vert", "Hold the phase on green"),
    )
    async def hold_phase(self, phase: str) -> None:
        """Serve the phase and keep it green until released (phaseControlGroupHold)."""
        number = int(phase.removeprefix("p"))
        controller = self._controller()
        # The interlock judged the last poll; the table is checked again against what
        # the controller holds now, just before the SET.
        holds = (await controller.read_status()).holds
        if clash := self.config.layout.conflicting(number, holds):
            raise DeviceError(
                f"refused: phase {number} conflicts with held phase(s) "
                f"{', '.join(map(str, clash))} (conflict table of {self.config.layout.name})",
                reason="interlocked",
            )
        await controller.set_holds(holds | {number})
        await self._refresh()

    @command(
        per="phase",
        feedback=reaches("held", False, within="feedback_time"),
        label=_t("Libérer la phase", "Release the phase"),
    )
    async def release_phase(self, phase: str) -> None:
        """Stop holding the phase: the controller resumes its cycle."""
        number = int(phase.removeprefix("p"))
        controller = self._controller()
        holds = (await controller.read_status()).holds
        await controller.set_holds(holds - {number})
        await self._refresh()

    @command(
        vehicle=string(
            max_length=32, doc=_t("Véhicule (numéro de parc)", "Vehicle (fleet number)")
        ),
        approach=string(max_length=32, doc=_t("Approche du bus", "The bus's approach")),
        eta=integer(0, 600, unit="s", doc=_t("Arrivée prévue dans", "Arrives in")),
        interlocks=[
            interlock(
                "bus_priority",
                equals=True,
                reason=_t(
                    "priorité bus désactivée sur ce carrefour",
                    "bus priority is off at this junction",
                ),
            )
        ],
        label=_t("Demande de priorité bus", "Bus priority request"),
    )
    async def request_priority(self, vehicle: str, approach: str, eta: int) -> None:
        """Ask the controller to serve the bus's phase at its arrival (NTCIP 1211 style)."""
        layout = self.config.layout
        candidates = [p for p, info in layout.phases.items() if info["approach"] == approach]
        bus = [p for p in candidates if layout.phases[p].get("bus")]
        if not candidates:
            approaches = sorted({info["approach"] for info in layout.phases.values()})
            raise DeviceError(
                f"no approach {approach!r} at this junction (approaches: {', '.join(approaches)})",
                reason="config_error",
            )
        self._request_id += 1
        await self._controller().request_priority(
            self._request_id, vehicle=vehicle, phase=(bus or candidates)[0], eta=eta
        )

    @command(
        requires_online=False,
        feedback=reaches("bus_priority", True, within=5),
        label=_t("Activer la priorité bus", "Enable bus priority"),
    )
    async def enable_bus_priority(self) -> None:
        """Let bus priority requests through to this junction (a zone order: a whole commune)."""
        self.publish({"bus_priority": True})

    @command(
        requires_online=False,
        feedback=reaches("bus_priority", False, within=5),
        label=_t("Désactiver la priorité bus", "Disable bus priority"),
    )
    async def disable_bus_priority(self) -> None:
        """Refuse bus priority requests at this junction until enabled again."""
        self.publish({"bus_priority": False})

    # ----------------------------------------------------------------- driver

    config: SignalConfig
    _ntcip: NtcipController | None = None
    _request_id: int = 0

    def members(self, per: str) -> list[str]:
        """Phases are ``p<n>`` from the junction profile, detectors ``d<n>`` from the config."""
        if per == "phase":
            return [f"p{number}" for number in self.config.layout.phases]
        if per == "detector":
            return [f"d{number}" for number in self.config.detectors]
        return super().members(per)

    def _controller(self) -> NtcipController:
        if self._ntcip is None:
            raise DeviceError(f"{self.id} is not connected")
        if not self.config.write_community:
            raise DeviceError("no write_community in the config", reason="config_error")
        return self._ntcip

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read the controller every ``poll_period``; online once it answers."""
        config = self.config
        manager = self.resources.get("snmp.manager", snmp.SnmpManager)
        community = config.write_community or config.community
        client = manager.client(
            config.host,
            config.port,
            credentials=CommunityCredentials(community),
            timeout=config.timeout,
            retries=config.retries,
        )
        self._ntcip = NtcipController(client, list(config.layout.phases), config.detectors)
        # Bus priority is the hub's own state: it outlives driver restarts (which mark
        # every point bad), so it is published again, good, with the value it had.
        enabled = self.point("bus_priority").current.value
        self.publish({"bus_priority": config.bus_priority if enabled is None else enabled})
        try:
            await self._refresh()  # raises if the controller does not answer: not online
            task_status.started()
            next_poll = anyio.current_time()
            while True:
                next_poll = max(next_poll + config.poll_period, anyio.current_time())
                await anyio.sleep_until(next_poll)
                await self._refresh()
        finally:
            self._ntcip = None
            client.close()

    async def _refresh(self) -> None:
        assert self._ntcip is not None
        status = await self._ntcip.read_status()
        self.publish(self._values(status))
        # A detector in fault reports a fault code, not an occupancy: not a value to show.
        faulty = [f"d{n}/occupancy" for n, value in status.occupancy.items() if value is None]
        if faulty:
            self.mark(Quality.bad("device_failure"), faulty)
        # Requests in progress: one walk of the status column, only while priority is on.
        if self.point("bus_priority").current.value:
            statuses = await self._ntcip.priority_statuses()
            acting = (ntcip.PriorityStatus.QUEUED, ntcip.PriorityStatus.ACTIVE)
            self.publish({"priority_requests": sum(s in acting for s in statuses.values())})

    def _values(self, status: ntcip.ControllerStatus) -> dict[str, Any]:
        layout = self.config.layout
        flashing = status.flashing
        values: dict[str, Any] = {
            "control": int(status.control),
            "central_control": status.control == UnitControlStatus.SYSTEM_CONTROL,
            "local_control": status.control == UnitControlStatus.MANUAL,
            "flash_status": int(status.flash),
            "flashing": flashing,
            "conflict_flash": status.flash in (UnitFlashStatus.FAULT_MONITOR, UnitFlashStatus.MMU),
            "plan": status.pattern,
            "plan_name": str(layout.plans.get(status.pattern, {}).get("name", "")),
            "greens": " ".join(str(p) for p in sorted(status.greens)),
        }
        for number in layout.phases:
            p = f"p{number}"
            colour = "flash" if flashing else status.phase_state(number)
            values[f"{p}/state"] = PHASE_STATES.index(colour)
            values[f"{p}/held"] = number in status.holds
            clash = layout.conflicting(number, status.holds)
            values[f"{p}/hold_conflict"] = ", ".join(f"p{c}" for c in clash)
        for number in self.config.detectors:
            d = f"d{number}"
            values[f"{d}/detector_fault"] = number in status.detector_faults
            occupancy = status.occupancy.get(number)
            if occupancy is not None:
                values[f"{d}/occupancy"] = occupancy
        return values
