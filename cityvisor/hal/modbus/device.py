"""A Modbus unit read through its profile: poll, write, and the qualities of what failed."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..modbus_profile import (
    Profile,
    RegisterSpec,
)
from .errors import ModbusConnectionError, ModbusError
from .plan import PollResult, ReadPlan

if TYPE_CHECKING:  # the endpoint hands out devices: the type is only needed for hints
    from .endpoint import ModbusEndpoint

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- device


class ModbusDevice:
    """One Modbus unit read and written through its profile, by relative point id.

    The read plan is computed here, once; :meth:`poll` only sends it.
    """

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        unit: int,
        profile: Profile,
        members: Mapping[str, int | Sequence[str]] | None = None,
        *,
        only: Iterable[str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.unit = unit
        self.profile = profile
        self.specs: dict[str, RegisterSpec] = profile.resolve(members)
        """Every point of the device, by relative id."""
        self.plan = ReadPlan.for_profile(profile, members, only=only)
        # The unit's backoff: counts the polls it did not answer, reset by an answer.
        self._backoff = endpoint._unit_backoff(unit)
        self._subplans: dict[tuple[str, ...], ReadPlan] = {}
        self._decoded: dict[int, tuple[list[Any], dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"<ModbusDevice unit {self.unit} at {self.endpoint.address} ({self.profile.name})>"

    async def poll(self, plan: ReadPlan | None = None) -> PollResult:
        """Read every point of the plan once, in one turn on the endpoint's wire.

        A block that fails gives each of its points the failure's quality
        (``config_error:illegal_data_address``, ``comm_failure:timeout``...).
        After a timeout the rest of the poll is not sent (see
        :meth:`ModbusEndpoint.read_blocks`): those points get the same
        quality. Only :class:`ModbusConnectionError` is raised.
        """
        plan = plan or self.plan
        blocks = plan.blocks
        replies = await self.endpoint.read_blocks(self.unit, blocks)
        result = PollResult()
        result.requests = len(replies)
        changed = result.changed
        own_plan = plan is self.plan
        decoded = self._decoded
        failure: ModbusError | None = None
        for index, block in enumerate(blocks):
            raw = replies[index] if index < len(replies) else failure
            if isinstance(raw, ModbusError):
                if raw is not failure:
                    failure = raw
                    log.debug("modbus %s unit %d: %s", self.endpoint.address, self.unit, raw)
                    result.errors.append(raw)
                quality = raw.quality
                ids = [point_id for point_id, _spec in block.points]
                result.update(dict.fromkeys(ids, quality))
                result.failed.setdefault(quality, []).extend(ids)
                if own_plan:
                    # The points went bad: when the block reads again, even as it
                    # was, its values are news.
                    decoded.pop(index, None)
                continue
            assert raw is not None
            if not own_plan:
                values = block.decode(raw)
                result.update(values)
                changed.update(values)
                continue
            # Most registers read the same from one poll to the next: in a block of
            # the device's own plan, decode only the points whose registers changed
            # (decoding is a pure function of them); they alone are news.
            last = decoded.get(index)
            if last is None:
                values = block.decode(raw)
                changed.update(values)
            elif last[0] != raw:
                news = block.decode_changes(last[0], raw)
                values = {**last[1], **news}
                changed.update(news)
            else:
                result.update(last[1])
                continue
            decoded[index] = (raw, values)
            result.update(values)
        if result.answered:
            if self._backoff.failures:
                self._backoff.succeeded()
        else:
            self._backoff.failed()
        return result

    @property
    def retry_after(self) -> float:
        """Seconds before it is worth polling the unit again (see :class:`ModbusEndpoint`)."""
        return self.endpoint.retry_after(self.unit)

    async def read(self, *point_ids: str) -> PollResult:
        """Read only some points (their plan is computed on first use, then kept)."""
        key = tuple(sorted(point_ids))
        plan = self._subplans.get(key)
        if plan is None:
            missing = [p for p in key if p not in self.specs]
            if missing:
                raise KeyError(f"{self.profile.name} has no points {missing}")
            info = self.profile.info
            plan = ReadPlan(
                {p: self.specs[p] for p in key},
                max_gap=info.max_gap,
                max_registers=info.max_registers,
                max_bits=info.max_bits,
            )
            self._subplans[key] = plan
        return await self.poll(plan)

    async def write(self, point_id: str, value: Any) -> None:
        """Write one point by relative id (``"c1/setpoint"``), in engineering units.

        Raises :class:`ModbusError` subclasses if the write fails, KeyError
        for an unknown point and ValueError for a read-only one or a value
        out of the register's range.
        """
        try:
            spec = self.specs[point_id]
        except KeyError:
            raise KeyError(f"{self.profile.name} has no point {point_id!r}") from None
        await self.endpoint.write(self.unit, spec, value)

    async def poll_every(self, period: float) -> AsyncGenerator[PollResult, None]:
        """Poll at a fixed rate and yield each result.

        Raises :class:`ModbusConnectionError` when the endpoint is lost, and
        when the unit has not answered a single request for
        ``settings.unreachable_after`` polls in a row (a dead unit behind a
        live gateway), so the supervisor marks the device and restarts it.
        """
        silent = 0
        next_at = anyio.current_time()
        while True:
            result = await self.poll()
            silent = 0 if result.answered else silent + 1
            if silent >= self.endpoint.settings.unreachable_after:
                raise ModbusConnectionError(
                    f"unit {self.unit} at {self.endpoint.address} has not answered "
                    f"for {silent} polls",
                    retry_after=self.retry_after,
                )
            yield result
            next_at += period
            now = anyio.current_time()
            if next_at < now:  # late (slow line): skip, never burst to catch up
                next_at = now
            await anyio.sleep(next_at - now)
