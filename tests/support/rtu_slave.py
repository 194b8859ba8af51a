"""RTU slaves on one line, written from the Modbus spec rather than any library, for field faults.

pymodbus's and modbus-tk's servers answer at once and only for the right unit. Real lines do not:
a slave may answer after the master gave up, a converter may pass on an answer from the wrong
unit, and several slaves share one RS-485 pair. Here every unit on the line answers each request
addressed to it after its own delay, one request after another, independently of the other units
(each answer is scheduled on a timer, as separate devices would), and addresses a unit does not map are refused with exception
02, as real meters do. The line is either a socat pty pair (serial RTU) or a TCP listener that
carries raw RTU frames (an RTU-over-TCP converter).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pty import pty_pair

_TABLE_OF_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC (polynomial 0xA001, initial 0xFFFF), low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


@dataclass
class Unit:
    """One slave: its mapped addresses per table, how late it answers, which id it answers as."""

    unit_id: int
    tables: dict[str, dict[int, int]] = field(
        default_factory=lambda: {t: {} for t in _TABLE_OF_FC.values()}
    )
    #: Seconds to wait before answering a read of (table, first address, count).
    delay: Callable[[str, int, int], float] = lambda table, address, count: 0.0
    #: Answer with this unit id instead of our own (a mis-addressed converter).
    answer_as: int | None = None
    #: Answer every read with this exception code (0x0B: a gateway whose target is dead).
    exception: int | None = None
    #: Send every answer a second time, this many seconds after the first (a faulty repeater).
    duplicate_after: float | None = None
    #: Before each answer, send the previous answer again (firmware that replays its buffer).
    replay_previous: bool = False
    last_answer: bytes = b""
    #: Requests that arrive while the slave is still busy are dropped, not queued (as simple,
    #: single-threaded firmware does).
    ignore_while_busy: bool = False
    #: Send each answer in pieces of this many bytes, this many seconds apart (a converter or a
    #: USB adapter that delivers a frame in bursts).
    chunks: tuple[int, float] | None = None
    #: Monotonic time until which the slave is busy with earlier requests.
    busy_until: float = 0.0
    #: Raw bytes to put on the line after a request to this unit: (seconds after the request
    #: arrived, bytes) for each, given the request (table, address, count). Noise, or frames.
    also_send: Callable[[str, int, int], list[tuple[float, bytes]]] = lambda t, a, c: []
    #: Frames to send glued in front of the next answer, in the same write (two answers back
    #: to back, as a converter's buffer delivers them); taken once.
    prefix: bytes = b""

    def answer(self, fc: int, address: int, count: int) -> bytes:
        """The PDU answering a read, or exception 02 if any address in it is not mapped."""
        table = _TABLE_OF_FC.get(fc)
        if self.exception is not None:
            return bytes([fc | 0x80, self.exception])
        if table is None:
            return bytes([fc | 0x80, 0x01])
        mapped = self.tables[table]
        wanted = range(address, address + count)
        if count < 1 or any(a not in mapped for a in wanted):
            return bytes([fc | 0x80, 0x02])
        if table in ("coil", "discrete"):
            packed = bytearray((count + 7) // 8)
            for i, a in enumerate(wanted):
                if mapped[a]:
                    packed[i // 8] |= 1 << (i % 8)
            return bytes([fc, len(packed)]) + bytes(packed)
        words = b"".join(struct.pack(">H", mapped[a] & 0xFFFF) for a in wanted)
        return bytes([fc, len(words)]) + words


class RtuLine:
    """A line with several units; `start('rtu')` or `start('rtu_over_tcp')` gives the config keys."""

    def __init__(self, workdir: Path, units: list[Unit], echo: bool = False) -> None:
        self.workdir = workdir
        #: Hand every request back at once, as a local-echo RS-485 adapter does.
        self.echo = echo
        self.units = {u.unit_id: u for u in units}
        #: (monotonic time, unit id, function code, address, count) of every request seen.
        self.requests: list[tuple[float, int, int, int, int]] = []
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._socat: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._write: Callable[[bytes], None] = lambda data: None
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self._fd: int | None = None
        self._conn: socket.socket | None = None

    def start(self, transport: str) -> dict[str, Any]:
        if transport == "rtu":
            return self._start_pty()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._spawn(self._accept_loop)
        port = self._listener.getsockname()[1]
        return {"transport": "rtu_over_tcp", "host": "127.0.0.1", "port": port}

    def _start_pty(self) -> dict[str, Any]:
        client, server = self.workdir / "tty-master", self.workdir / "tty-slave"
        self._socat = pty_pair(client, server)
        fd = os.open(server, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)
        self._fd = fd
        self._write = lambda data: os.write(fd, data) and None

        def read(n: int) -> bytes | None:
            ready, _, _ = select.select([fd], [], [], 0.1)
            return os.read(fd, n) if ready else None

        self._spawn(self._serve, read)
        return {"transport": "rtu", "serial_port": str(client), "baudrate": 38400}

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._conn is not None:
                self._conn.close()  # one master at a time, as a converter allows
            conn.settimeout(0.1)
            self._conn = conn
            self._write = conn.sendall
            self._spawn(self._serve, self._tcp_reader(conn))

    @staticmethod
    def _tcp_reader(conn: socket.socket) -> Callable[[int], bytes | None]:
        def read(n: int) -> bytes | None:
            try:
                return conn.recv(n)
            except TimeoutError:
                return None

        return read

    def _serve(self, read: Callable[[int], bytes | None]) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = read(256)
            except OSError:
                return
            if chunk is None:
                continue
            if not chunk:
                return  # the TCP master went away
            buffer += chunk
            while len(buffer) >= 8:
                frame, rest = buffer[:8], buffer[8:]
                if crc16(frame[:6]) != frame[6:]:
                    buffer = buffer[1:]  # out of step: slide until a frame checks
                    continue
                buffer = rest
                if self.echo:
                    self._send(frame)
                self._request(frame)

    def _request(self, frame: bytes) -> None:
        unit_id, fc, address, count = struct.unpack(">BBHH", frame[:6])
        self.requests.append((time.monotonic(), unit_id, fc, address, count))
        unit = self.units.get(unit_id)
        if unit is None:
            return  # nobody on the line has this address: silence, as on RS-485
        pdu = unit.answer(fc, address, count)
        adu = bytes([unit.answer_as if unit.answer_as is not None else unit_id]) + pdu
        adu += crc16(adu)
        # One request at a time per slave, in the order received, as a device's firmware does.
        now = time.monotonic()
        if unit.ignore_while_busy and now < unit.busy_until:
            return
        start = max(now, unit.busy_until)
        unit.busy_until = start + unit.delay(_TABLE_OF_FC.get(fc, ""), address, count)
        wire = (unit.last_answer + adu) if unit.replay_previous else adu
        wire, unit.prefix = unit.prefix + wire, b""
        unit.last_answer = adu
        for after, data in unit.also_send(_TABLE_OF_FC.get(fc, ""), address, count):
            self._schedule(after, data)
        self._schedule(unit.busy_until - now, wire)
        if unit.duplicate_after is not None:
            self._schedule(unit.busy_until - now + unit.duplicate_after, adu)

    def babble(self, frame: bytes, every_s: float) -> None:
        """Put `frame` on the line every `every_s` seconds, unasked (a chatty device)."""

        def talk() -> None:
            while not self._stop.wait(every_s):
                with self._send_lock, contextlib.suppress(OSError):
                    self._write(frame)

        self._spawn(talk)

    def _schedule(self, delay: float, data: bytes) -> None:
        timer = threading.Timer(delay, self._send, (data,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _send(self, adu: bytes) -> None:
        if self._stop.is_set():
            return
        unit = self.units.get(adu[0])
        if unit is not None and unit.chunks is not None:
            size, gap = unit.chunks
            for start in range(0, len(adu), size):
                with self._send_lock, contextlib.suppress(OSError):
                    self._write(adu[start : start + size])
                time.sleep(gap)
            return
        # If the master hung up, a real slave would talk to nobody too.
        with self._send_lock, contextlib.suppress(OSError):
            self._write(adu)

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        if self._listener is not None:
            self._listener.close()
        if self._conn is not None:
            self._conn.close()
        if self._fd is not None:
            os.close(self._fd)
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait(10)
        for thread in self._threads:
            thread.join(5)
