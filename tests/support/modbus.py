"""A pymodbus server with known, fixed register contents, and what they decode to."""

from __future__ import annotations

from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

DT = AsyncModbusTcpClient.DATATYPE


def _regs(value: Any, dtype: Any, word_order: str = "big") -> list[int]:
    return list(AsyncModbusTcpClient.convert_to_registers(value, dtype, word_order=word_order))


# holding: 0-1 float32 12.5 | 2 uint16 2301 | 3 int16 -5 | 4-5 uint32 70000 (CDAB) | 6-9 spare
HOLDING = (
    _regs(12.5, DT.FLOAT32)
    + _regs(2301, DT.UINT16)
    + _regs(-5, DT.INT16)
    + _regs(70000, DT.UINT32, "little")
    + [0, 0, 0, 0]
)
INPUT = _regs(-3.25, DT.FLOAT32) + [0] * 6

KNOWN_POINTS: list[dict[str, Any]] = [
    {"id": "P", "table": "holding", "address": 0, "type": "float32"},
    {"id": "U", "table": "holding", "address": 2, "type": "uint16", "scale": 0.1},
    {"id": "T", "table": "holding", "address": 3, "type": "int16", "scale": 0.5, "offset": 1.0},
    {"id": "E", "table": "holding", "address": 4, "type": "uint32", "order": "CDAB"},
    {"id": "Q", "table": "input", "address": 0, "type": "float32"},
]
KNOWN_VALUES: dict[str, Any] = {"P": 12.5, "U": 230.1, "T": -1.5, "E": 70000, "Q": -3.25}


def known_device(unit_id: int) -> SimDevice:
    return SimDevice(
        id=unit_id,
        simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, values=HOLDING, datatype=DataType.REGISTERS)],
            [SimData(0, values=INPUT, datatype=DataType.REGISTERS)],
        ),
    )


class KnownModbusServer:
    """Serves `known_device` for each unit id on a free loopback port."""

    def __init__(self, unit_ids: tuple[int, ...] = (1,)) -> None:
        self.unit_ids = unit_ids
        self.port = 0
        self._server: ModbusTcpServer | None = None

    async def start(self) -> int:
        devices = [known_device(u) for u in self.unit_ids]
        self._server = ModbusTcpServer(devices, address=("127.0.0.1", 0))
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
