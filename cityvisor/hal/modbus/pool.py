"""The endpoint pool: endpoints by address, shared with reference counting (two cabinets, one gateway)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from .endpoint import ModbusEndpoint
from .settings import ModbusSettings, SerialAddress, TcpAddress

# --------------------------------------------------------------------------- pool


class ModbusPool:
    """The registry of endpoints: one connection per address, shared, reference-counted.

    ``async with pool.tcp(host, port) as endpoint:`` gives the endpoint for
    that address, creating it for the first user; the last user to leave
    closes it. The hub owns one pool and every Modbus driver borrows from it,
    so the cabinets behind one gateway use one connection.
    """

    def __init__(self, settings: ModbusSettings | None = None) -> None:
        self.settings = settings or ModbusSettings()
        self._endpoints: dict[TcpAddress | SerialAddress, ModbusEndpoint] = {}

    @property
    def endpoints(self) -> Mapping[TcpAddress | SerialAddress, ModbusEndpoint]:
        """The endpoints in use, by address."""
        return {address: e for address, e in self._endpoints.items() if e._refs}

    @contextlib.asynccontextmanager
    async def endpoint(
        self, address: TcpAddress | SerialAddress, settings: ModbusSettings | None = None
    ) -> AsyncIterator[ModbusEndpoint]:
        """Borrow the endpoint of ``address`` for the duration of the block.

        ``settings`` apply when this call creates the endpoint; a shared
        endpoint keeps the settings of its first user.
        """
        endpoint = self._endpoints.get(address)
        if endpoint is None or (
            not endpoint._refs and settings is not None and settings != endpoint.settings
        ):
            endpoint = ModbusEndpoint(address, settings or self.settings)
            self._endpoints[address] = endpoint
        endpoint._refs += 1
        try:
            yield endpoint
        finally:
            endpoint._refs -= 1
            if endpoint._refs == 0:
                # Closed, but kept: a driver restarted after a failure must find
                # the backoff where it left it (the pool holds one per address).
                endpoint.close()

    def tcp(
        self, host: str, port: int = 502, *, settings: ModbusSettings | None = None
    ) -> contextlib.AbstractAsyncContextManager[ModbusEndpoint]:
        """Borrow the Modbus/TCP endpoint ``host:port``."""
        return self.endpoint(TcpAddress(host, port), settings)

    def serial(
        self,
        device: str,
        *,
        baudrate: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        settings: ModbusSettings | None = None,
    ) -> contextlib.AbstractAsyncContextManager[ModbusEndpoint]:
        """Borrow the Modbus RTU line on serial port ``device``."""
        address = SerialAddress(device, baudrate, parity, stopbits, bytesize)
        return self.endpoint(address, settings)

    def close(self) -> None:
        """Close every connection (endpoints stay usable and reopen on demand)."""
        for endpoint in self._endpoints.values():
            endpoint.close()
