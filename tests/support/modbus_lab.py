"""A Modbus server whose four tables the test fills directly, on any of the three transports.

The server runs on its own event loop thread, so synchronous tests (hypothesis) can drive the
real protocol: set the table content, then read it through gatewayd's endpoint and decoder.
Serial RTU runs over a socat pty pair: two linked pseudo-terminals, one per side.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tests.support.pty import pty_pair

T = TypeVar("T")
WORDS = 64
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]
_TABLE_OF_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


def pack_bits(bits: list[bool]) -> list[int]:
    """Sixteen bits per register, bit 0 first: how pymodbus's simulator stores bit tables."""
    out = []
    for start in range(0, len(bits), 16):
        chunk = bits[start : start + 16]
        out.append(sum(1 << i for i, bit in enumerate(chunk) if bit))
    return out


class ModbusLab:
    """Start with `start(transport)`; set `tables[...]`; read `request_log` to see the traffic."""

    def __init__(self, workdir: Path, unit_ids: tuple[int, ...] = (1, 2)) -> None:
        self.workdir = workdir
        self.unit_ids = unit_ids
        self.tables: dict[int, dict[str, list[Any]]] = {
            u: {
                "holding": [0] * WORDS,
                "input": [0] * WORDS,
                "coil": [False] * WORDS,
                "discrete": [False] * WORDS,
            }
            for u in unit_ids
        }
        #: (unit id, table) pairs that answer every read with an exception.
        self.refuse: set[tuple[int, str]] = set()
        #: (monotonic start time, unit id, function code) of every request the server handled.
        self.request_log: list[tuple[float, int, int]] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._socat: subprocess.Popen[bytes] | None = None
        self.connection: dict[str, Any] = {}

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def _device(self, unit_id: int) -> SimDevice:
        tables = self.tables[unit_id]

        async def on_access(
            fc: int, start: int, address: int, count: int, registers: list[int], values: Any
        ) -> ExcCodes | None:
            self.request_log.append((time.monotonic(), unit_id, fc))
            table = _TABLE_OF_FC.get(fc)
            if table is None:
                return None
            if (unit_id, table) in self.refuse:
                return ExcCodes.ILLEGAL_ADDRESS
            content = tables[table]
            words = pack_bits(content) if table in ("coil", "discrete") else content
            registers[: len(words)] = words
            return None

        bits = [SimData(0, count=WORDS, values=False, datatype=DataType.BITS)]
        words = [SimData(0, count=WORDS, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(
            id=unit_id, simdata=(bits, list(bits), words, list(words)), action=on_access
        )

    def start(self, transport: Transport = "tcp") -> dict[str, Any]:
        """Serve; returns the `[devices.modbus]` keys (less unit_id) that reach the server."""
        self._thread.start()
        devices = [self._device(u) for u in self.unit_ids]
        if transport == "rtu":
            client_end, server_end = self._pty_pair()
            self.connection = {"transport": "rtu", "serial_port": client_end, "baudrate": 38400}

        async def serve() -> ModbusTcpServer | ModbusSerialServer:
            server: ModbusTcpServer | ModbusSerialServer
            if transport == "rtu":
                server = ModbusSerialServer(
                    devices, port=server_end, baudrate=38400, ignore_missing_devices=True
                )
            else:
                framer = FramerType.RTU if transport == "rtu_over_tcp" else FramerType.SOCKET
                server = ModbusTcpServer(
                    devices, framer=framer, address=("127.0.0.1", 0), ignore_missing_devices=True
                )
            await server.serve_forever(background=True)
            return server

        self._server = self.run(serve())
        if transport != "rtu":
            transport_obj: Any = self._server.transport
            port = int(transport_obj.sockets[0].getsockname()[1])
            self.connection = {"transport": transport, "host": "127.0.0.1", "port": port}
        return dict(self.connection)

    def _pty_pair(self) -> tuple[str, str]:
        a, b = self.workdir / "tty-client", self.workdir / "tty-server"
        self._socat = pty_pair(a, b)
        return str(a), str(b)

    def stop(self) -> None:
        if self._server is not None:
            self.run(self._server.shutdown())
            self._server = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait(10)
