"""A Modbus TCP server full of simulated energy meters, built on pymodbus's own server.

Each unit id is a meter whose registers change on every read: power follows a slow wave, the
energy counter only grows, and register 6 (`Seq`) counts the reads of the holding table, so a
test can tell every sample apart and spot a missing one at the hub. When each read happened is
kept (`read_at`), so a test can tell whether a missing reading was taken just before a crash.
Setting `exception` makes every request fail with that Modbus exception code, as a busy or
faulty device does.

Like a real meter, it maps only the registers it has (`MAPPED`): a read that touches any other
address is refused with exception 02 (illegal data address), never answered with zeros, so a
misconfigured point shows up as refused instead of looking healthy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HOLDING_WORDS = 16
INPUT_WORDS = 8
BITS = 16

_FLOAT32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
_UINT32 = AsyncModbusTcpClient.DATATYPE.UINT32


SERIAL_NUMBER = "SIM-0001"
#: Alarm word (holding 8): bit 3 is set on every fourth read of the holding table.
ALARM_BIT = 3

#: The addresses each table maps; everything else is refused with exception 02.
MAPPED: dict[int, frozenset[int]] = {
    1: frozenset(range(BITS)),  # coils
    2: frozenset(range(BITS)),  # discrete inputs
    3: frozenset([*range(0, 7), 8, *range(10, 14)]),  # holding
    4: frozenset(range(0, 2)),  # input
}


def meter_points() -> list[dict[str, Any]]:
    """The point list that matches a simulated meter, as config dicts."""
    return [
        {"id": "Power", "table": "holding", "address": 0, "type": "float32"},
        {"id": "Voltage", "table": "holding", "address": 2, "type": "uint16", "scale": 0.1},
        {"id": "Temperature", "table": "holding", "address": 3, "type": "int16", "scale": 0.1},
        {"id": "Energy", "table": "holding", "address": 4, "type": "uint32"},
        {"id": "Seq", "table": "holding", "address": 6, "type": "uint16"},
        {"id": "Frequency", "table": "input", "address": 0, "type": "float32"},
        {"id": "Breaker", "table": "coil", "address": 0, "type": "bool"},
    ]


@dataclass
class SimulatedMeter:
    """The changing state of one meter; `fill_*` write it into pymodbus's register lists."""

    unit_id: int
    reads: int = 0
    energy: int = 1000
    started: float = field(default_factory=time.monotonic)
    #: Monotonic time of each holding read: read_at[n - 1] is when Seq n was handed out.
    read_at: list[float] = field(default_factory=list)

    def power(self) -> float:
        t = time.monotonic() - self.started
        return round(40.0 + 5 * self.unit_id + 8.0 * math.sin(t / 7.0), 3)

    def fill_holding(self, registers: list[int]) -> None:
        self.reads += 1
        self.read_at.append(time.monotonic())
        self.energy += 1 + self.reads % 3
        registers[0:2] = AsyncModbusTcpClient.convert_to_registers(self.power(), _FLOAT32)
        registers[2] = 2300 + (self.reads * 7) % 21 - 10
        registers[3] = (215 + self.unit_id * 3 + self.reads % 5) & 0xFFFF
        registers[4:6] = AsyncModbusTcpClient.convert_to_registers(self.energy, _UINT32)
        registers[6] = self.reads & 0xFFFF
        registers[8] = (1 << ALARM_BIT) if self.reads % 4 == 0 else 0
        text = SERIAL_NUMBER.encode().ljust(8, b"\0")
        registers[10:14] = [text[i] << 8 | text[i + 1] for i in range(0, 8, 2)]

    def fill_input(self, registers: list[int]) -> None:
        freq = 50.0 + 0.01 * ((self.reads % 11) - 5)
        registers[0:2] = AsyncModbusTcpClient.convert_to_registers(freq, _FLOAT32)


class ModbusSimulator:
    """A pymodbus TCP server on loopback with one simulated meter per unit id."""

    def __init__(self, unit_ids: Iterable[int] = (1,), host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.meters = {uid: SimulatedMeter(uid) for uid in unit_ids}
        self.exception: ExcCodes | None = None
        self._server: ModbusTcpServer | None = None

    def _device(self, meter: SimulatedMeter) -> SimDevice:
        async def on_access(
            function_code: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if self.exception is not None:
                return self.exception
            mapped = MAPPED.get(function_code)
            if mapped is not None and not all(a in mapped for a in range(address, address + count)):
                return ExcCodes.ILLEGAL_ADDRESS
            if values is None and function_code == 3:
                meter.fill_holding(registers)
            elif values is None and function_code == 4:
                meter.fill_input(registers)
            return None

        blocks = (
            [SimData(0, count=BITS, values=False, datatype=DataType.BITS)],
            [SimData(0, count=BITS, values=True, datatype=DataType.BITS)],
            [SimData(0, count=HOLDING_WORDS, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=INPUT_WORDS, values=0, datatype=DataType.REGISTERS)],
        )
        blocks[0][0] = SimData(0, values=[True] + [False] * (BITS - 1), datatype=DataType.BITS)
        return SimDevice(id=meter.unit_id, simdata=blocks, action=on_access)

    async def start(self) -> int:
        """Listen; returns the bound port (a free one when constructed with port 0)."""
        devices = [self._device(m) for m in self.meters.values()]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
