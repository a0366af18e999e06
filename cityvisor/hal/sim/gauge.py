"""Water-level gauge simulators: over Modbus/TCP, and publishing JSON over MQTT.

Both share :class:`Gauge`, the simulator's truth for one gauge: a base
level, and rain events that make the water rise and fall again (a
flood hydrograph: a smooth rise to the peak in the first third of the
event, a slower fall after it), plus battery, link quality and the radar's
status. Time is the simulator's clock (:func:`time.monotonic` unless given);
``time_scale`` runs an event faster (60: an hour's flood in a minute).

* :class:`HydroGaugeSimulator` serves gauges as Modbus units behind one
  Modbus/TCP gateway, laid out by the ``hydro_gauge`` profile the plugin reads.
* :class:`MqttGaugeSimulator` publishes one JSON payload per gauge every
  ``period`` on ``<prefix>/<name>`` to a broker (the local Mosquitto):
  ``{"level": 1.23, "battery": 3.61, "link_quality": 82, "status": "ok"}``.
  It can go silent (:meth:`~MqttGaugeSimulator.silence`) or send garbage
  (:meth:`~MqttGaugeSimulator.publish_raw`), as a failing gauge does.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
import anyio

from cityvisor.hal.sim.modbus_server import ModbusSimulator, run_simulator_cli

__all__ = ["STATUSES", "Gauge", "HydroGaugeSimulator", "MqttGaugeSimulator", "RainEvent", "main"]

STATUSES = ("ok", "no_echo", "fouled", "fault")


@dataclass(frozen=True)
class RainEvent:
    """Water ``peak`` metres above the base level, over ``duration`` seconds from ``start``."""

    start: float
    duration: float
    peak: float

    def rise(self, now: float) -> float:
        """Metres this event adds to the level at ``now``."""
        x = (now - self.start) / self.duration
        if not 0 <= x <= 1:
            return 0.0
        # Rise to the peak over the first third, fall over the rest (a hydrograph's shape).
        phase = x / (1 / 3) if x < 1 / 3 else 1 + (x - 1 / 3) / (2 / 3)
        return self.peak * math.sin(phase * math.pi / 2) ** 2


@dataclass
class Gauge:
    """One gauge: what it measures at any time of the simulator's clock."""

    name: str
    base_level: float = 0.5
    battery: float = 3.6
    link_quality: int = 85
    status: str = "ok"
    events: list[RainEvent] = field(default_factory=list)

    def level(self, now: float) -> float:
        """The water level (m) at ``now``."""
        return round(max(0.0, self.base_level + sum(e.rise(now) for e in self.events)), 3)


class _Gauges:
    """What both simulators offer: gauges by name, rain events, faults."""

    gauges: dict[str, Gauge]
    clock: Callable[[], float]
    time_scale: float

    def gauge(self, name: str) -> Gauge:
        """One gauge by name."""
        return self.gauges[name]

    def rain(self, name: str, peak: float, duration: float) -> RainEvent:
        """Start a rain event now at gauge ``name``: up ``peak`` m and down over ``duration`` s."""
        event = RainEvent(self.clock(), duration / self.time_scale, peak)
        self.gauges[name].events.append(event)
        return event

    def set_level(self, name: str, metres: float) -> None:
        """Put the water at ``metres`` now (rain events stop)."""
        gauge = self.gauges[name]
        gauge.events.clear()
        gauge.base_level = metres

    def set_status(self, name: str, status: str) -> None:
        """The radar's diagnosis: ``ok``, ``no_echo``, ``fouled`` or ``fault``."""
        if status not in STATUSES:
            raise ValueError(f"status is one of {STATUSES}")
        self.gauges[name].status = status


class HydroGaugeSimulator(_Gauges, ModbusSimulator):
    """Gauges ``g1..gN`` as Modbus units ``1..N`` behind one Modbus/TCP gateway.

    With ``storms_every`` (seconds), storms come at random, on average that
    often: a flood wave of ``storm_peak`` metres (a range) down the river,
    reaching each gauge in turn.
    """

    kind = "hydro gauge"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        gauges: int = 1,
        level: float = 0.5,
        tick: float = 0.1,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        storms_every: float | None = None,
        storm_peak: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        super().__init__(
            host, port, profile="hydro_gauge", units=range(1, gauges + 1), tick=tick, seed=seed
        )
        self.clock, self.time_scale = clock, time_scale
        self.storms_every = storms_every
        self.storm_peak = storm_peak
        self.gauges = {f"g{unit}": Gauge(f"g{unit}", base_level=level) for unit in self.units}

    async def setup(self, unit: int) -> None:
        """Publish the first reading."""
        await self._publish(unit)

    async def tick(self, unit: int, dt: float) -> None:
        """Move the water; with ``storms_every``, a storm now and then (the demo's weather)."""
        first = unit == self.units[0]  # one draw per tick, not one per gauge
        if first and self.storms_every and self.random.random() < dt / self.storms_every:
            # A storm upstream: every gauge of the river sees the wave, the lower ones later.
            peak = self.random.uniform(*self.storm_peak)
            duration = self.random.uniform(300, 900)
            for position, gauge in enumerate(self.gauges.values()):
                start = self.clock() + position * 30 / self.time_scale
                gauge.events = [e for e in gauge.events if e.start + e.duration > self.clock()]
                gauge.events.append(RainEvent(start, duration / self.time_scale, peak))
        await self._publish(unit)

    async def _publish(self, unit: int) -> None:
        gauge = self.gauges[f"g{unit}"]
        await self.set(unit, "level", gauge.level(self.clock()))
        await self.set(unit, "battery", gauge.battery)
        await self.set(unit, "link_quality", gauge.link_quality)
        await self.set(unit, "sensor_status", STATUSES.index(gauge.status))


class MqttGaugeSimulator(_Gauges):
    """Gauges named ``names`` publishing JSON every ``period`` s on ``<prefix>/<name>``.

    Use as ``async with MqttGaugeSimulator(["ouche-1"]) as sim:``: it
    connects to the broker and publishes until the block ends.
    """

    def __init__(
        self,
        names: Sequence[str] = ("gauge-1",),
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "cityvisor-sim/gauges",
        period: float = 0.2,
        level: float = 0.5,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port, self.prefix, self.period = host, port, prefix, period
        self.clock, self.time_scale = clock, time_scale
        self.gauges = {name: Gauge(name, base_level=level) for name in names}
        self.silent: set[str] = set()
        self.published = 0
        self._client: aiomqtt.Client | None = None
        self._stack: AsyncExitStack | None = None

    def topic(self, name: str) -> str:
        """The topic gauge ``name`` publishes on."""
        return f"{self.prefix}/{name}"

    def payload(self, name: str) -> dict[str, Any]:
        """What gauge ``name`` publishes now."""
        gauge = self.gauges[name]
        return {
            "level": gauge.level(self.clock()),
            "battery": gauge.battery,
            "link_quality": gauge.link_quality,
            "status": gauge.status,
        }

    def silence(self, name: str, silent: bool = True) -> None:
        """Stop (or resume) gauge ``name``'s publications: a flat battery, a lost link."""
        (self.silent.add if silent else self.silent.discard)(name)

    async def publish_raw(self, name: str, payload: bytes) -> None:
        """Publish ``payload`` as gauge ``name``, whatever it is (a gauge that lies)."""
        assert self._client is not None, "the simulator is not running"
        await self._client.publish(self.topic(name), payload, qos=1)

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._client = await stack.enter_async_context(
                aiomqtt.Client(self.host, self.port, timeout=5)
            )
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            group.start_soon(self._publish_forever)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    async def _publish_forever(self) -> None:
        assert self._client is not None
        while True:
            for name in self.gauges:
                if name not in self.silent:
                    data = json.dumps(self.payload(name)).encode()
                    await self._client.publish(self.topic(name), data, qos=1)
                    self.published += 1
            await anyio.sleep(self.period)


def main(argv: Sequence[str] | None = None) -> int:
    """``cityvisor sim hydro``: serve water-level gauges over Modbus/TCP until interrupted."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gauges", type=int, default=1, help="gauges (units 1..N)")
        parser.add_argument("--level", type=float, default=0.5, help="initial level, m")
        parser.add_argument(
            "--storms-every", type=float, default=None, help="a storm every N s on average"
        )

    def build(args: argparse.Namespace) -> HydroGaugeSimulator:
        return HydroGaugeSimulator(
            args.host,
            args.port,
            gauges=args.gauges,
            level=args.level,
            seed=args.seed,
            storms_every=args.storms_every,
        )

    return run_simulator_cli(
        "Simulated water-level gauges over Modbus/TCP", add_arguments, build, argv
    )
