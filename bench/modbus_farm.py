"""Many Modbus TCP devices on loopback, in their own process (so they do not share the daemon's
CPU accounting): each is a pymodbus server with one unit of 64 holding registers that change on
every read.

    python bench/modbus_farm.py --devices 200

Prints one JSON line, the list of ports, once all listen; runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

REGISTERS = 64


def device() -> SimDevice:
    reads = [0]

    async def on_access(
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: Any,
    ) -> None:
        if values is None:
            reads[0] += 1
            registers[0] = reads[0] & 0xFFFF

    blocks = (
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, values=list(range(REGISTERS)), datatype=DataType.REGISTERS)],
        [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
    )
    return SimDevice(id=1, simdata=blocks, action=on_access)


async def serve(count: int) -> None:
    servers = []
    for _ in range(count):
        server = ModbusTcpServer([device()], address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server)
    ports = [int(s.transport.sockets[0].getsockname()[1]) for s in servers]  # type: ignore[union-attr]
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        await server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=200)
    asyncio.run(serve(parser.parse_args().devices))


if __name__ == "__main__":
    main()
