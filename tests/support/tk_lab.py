"""The same lab as `ModbusLab`, served by modbus-tk instead of pymodbus.

gatewayd's client is pymodbus; testing it only against pymodbus's own server lets the two agree
on a mistake. modbus-tk is an independent implementation (its own framing, CRC, databank and
exception rules: an address outside a block is refused with exception 02). Serial RTU runs on a
socat pty pair; RTU over TCP goes through a small converter thread here that relays one TCP
connection at a time to the serial line, as a serial device server does.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import serial
from modbus_tk import defines, hooks, modbus, modbus_rtu, modbus_tcp

from tests.support.modbus_lab import _TABLE_OF_FC, WORDS, ModbusLab, Transport

_BLOCKS = {
    "coil": defines.COILS,
    "discrete": defines.DISCRETE_INPUTS,
    "holding": defines.HOLDING_REGISTERS,
    "input": defines.ANALOG_INPUTS,
}
#: modbus-tk's hooks are process-wide: each slave object is mapped to the lab and unit it serves.
_OWNERS: dict[int, tuple[TkModbusLab, int]] = {}


def _before_request(args: tuple[Any, bytes]) -> bytes | None:
    slave, pdu = args
    owner = _OWNERS.get(id(slave))
    if owner is None:
        return None
    lab, unit_id = owner
    return lab.on_request(slave, unit_id, pdu)


hooks.install_hook("modbus.Slave.handle_request", _before_request)


class TkModbusLab(ModbusLab):
    """`tables`, `refuse`, `request_log` and `connection` as in ModbusLab; the server is modbus-tk."""

    def __init__(self, workdir: Path, unit_ids: tuple[int, ...] = (1, 2)) -> None:
        super().__init__(workdir, unit_ids)
        self._tk: modbus.Server | None = None
        self._bridge_stop = threading.Event()
        self._bridge: threading.Thread | None = None
        self._listener: socket.socket | None = None

    def on_request(self, slave: Any, unit_id: int, pdu: bytes) -> bytes | None:
        """Copy the test's tables into the slave before it answers; refuse where asked to."""
        fc = pdu[0]
        self.request_log.append((time.monotonic(), unit_id, fc))
        table = _TABLE_OF_FC.get(fc)
        if table is not None and (unit_id, table) in self.refuse:
            return struct.pack(">BB", fc | 0x80, defines.ILLEGAL_DATA_ADDRESS)
        for name, content in self.tables[unit_id].items():
            slave.set_values(name, 0, [int(v) for v in content])
        return None

    def start(self, transport: Transport = "tcp") -> dict[str, Any]:
        self._thread.start()  # the loop that runs gatewayd's side (see ModbusLab.run)
        if transport == "tcp":
            server: modbus.Server = modbus_tcp.TcpServer(port=0, address="127.0.0.1")
        else:
            client_end, server_end = self._pty_pair()
            line = serial.Serial(server_end, baudrate=38400)
            server = modbus_rtu.RtuServer(line)
        for unit_id in self.unit_ids:
            slave = server.add_slave(unit_id)
            for name, block_type in _BLOCKS.items():
                slave.add_block(name, block_type, 0, WORDS)
            _OWNERS[id(slave)] = (self, unit_id)
        server.start()
        self._tk = server
        if transport == "tcp":
            port = self._bound_port(server)
            self.connection = {"transport": "tcp", "host": "127.0.0.1", "port": port}
        elif transport == "rtu":
            self.connection = {"transport": "rtu", "serial_port": client_end, "baudrate": 38400}
        else:
            port = self._start_converter(client_end)
            self.connection = {"transport": "rtu_over_tcp", "host": "127.0.0.1", "port": port}
        return dict(self.connection)

    @staticmethod
    def _bound_port(server: Any) -> int:
        deadline = time.monotonic() + 10
        while getattr(server, "_sock", None) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("modbus-tk's TCP server did not start")
            time.sleep(0.01)
        return int(server._sock.getsockname()[1])

    def _start_converter(self, serial_path: str) -> int:
        """A serial device server: raw bytes between one TCP client at a time and the line."""
        fd = os.open(serial_path, os.O_RDWR | os.O_NOCTTY)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)

        def relay() -> None:
            conn: socket.socket | None = None
            assert self._listener is not None
            while not self._bridge_stop.is_set():
                watched: list[Any] = [fd, self._listener] + ([conn] if conn else [])
                ready, _, _ = select.select(watched, [], [], 0.1)
                if self._listener in ready:
                    if conn is not None:
                        conn.close()
                    conn, _ = self._listener.accept()
                if fd in ready:
                    data = os.read(fd, 512)
                    if conn is not None:
                        with contextlib.suppress(OSError):
                            conn.sendall(data)
                if conn is not None and conn in ready:
                    data = conn.recv(512)
                    if data:
                        os.write(fd, data)
                    else:
                        conn.close()
                        conn = None
            if conn is not None:
                conn.close()
            os.close(fd)

        self._bridge = threading.Thread(target=relay, daemon=True)
        self._bridge.start()
        return int(self._listener.getsockname()[1])

    def stop(self) -> None:
        if self._tk is not None:
            self._tk.stop()
            for unit_id in self.unit_ids:
                with contextlib.suppress(Exception):
                    _OWNERS.pop(id(self._tk.get_slave(unit_id)), None)
            self._tk = None
        self._bridge_stop.set()
        if self._bridge is not None:
            self._bridge.join(5)
        if self._listener is not None:
            self._listener.close()
        super().stop()
