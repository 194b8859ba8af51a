"""The hub simulator's authenticating front: a TCP listener that checks MQTT CONNECT like the hub.

A plain broker lets anyone in, so a gateway with a wrong secret would connect and be answered.
The front sits on the port the gateway dials, reads the first packet, asks a judge (the hub's
`check_login`, gatewayd/sim/login.py) and either answers CONNACK with the refusal code itself
and closes, or opens a connection to the real broker behind it, forwards the CONNECT unchanged
and then relays bytes both ways. The broker never sees a refused login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from gatewayd.sim.login import (
    CONNECT,
    MAX_CONNECT_BYTES,
    ConnectPacket,
    LoginVerdict,
    MalformedPacket,
    connack,
    parse_connect,
    remaining_length,
)

log = logging.getLogger(__name__)

Judge = Callable[[ConnectPacket], LoginVerdict]


class AuthFront:
    """Listens on `host:port` (0: the OS picks) and relays accepted sessions to the backend."""

    def __init__(
        self,
        backend_host: str,
        backend_port: int,
        judge: Judge,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.backend = (backend_host, backend_port)
        self.judge = judge
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen (again on the same port after a stop); returns the port."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every relayed session (both ends see the connection end)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    packet = await read_first_packet(reader)
                connect = parse_connect(packet)
            except (TimeoutError, MalformedPacket, asyncio.IncompleteReadError, OSError) as exc:
                log.warning("hub_front_bad_connect error=%r", str(exc) or type(exc).__name__)
                writer.transport.abort()
                return
            verdict = self.judge(connect)
            if not verdict.accepted:
                writer.write(connack(verdict.code))
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.backend)
            except OSError as exc:
                log.warning(
                    "hub_front_backend_down backend=%s:%d error=%r", *self.backend, str(exc)
                )
                writer.transport.abort()
                return
            self._links.add(up_writer)
            up_writer.write(packet)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._links.discard(writer)
            if up_writer is not None:
                self._links.discard(up_writer)


async def read_first_packet(reader: asyncio.StreamReader) -> bytes:
    """The whole first MQTT packet, refusing one longer than any CONNECT needs to be."""
    data = await reader.readexactly(2)
    if data[0] != CONNECT:  # not MQTT, or not a login: no need to wait for the rest
        raise MalformedPacket(f"the first packet is not CONNECT (type byte {data[0]:#04x})")
    while (header := remaining_length(data)) is None:
        data += await reader.readexactly(1)
    length, header_bytes = header
    if length + header_bytes > MAX_CONNECT_BYTES:
        raise MalformedPacket(f"first packet of {length} bytes is too long for a CONNECT")
    return data + await reader.readexactly(length + header_bytes - len(data))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()


class ThreadedFront:
    """An AuthFront on its own event loop thread, for callers that are not async (the CLI, the
    test fixtures); `start()` and `stop()` block until done and may be repeated."""

    def __init__(self, front: AuthFront) -> None:
        self.front = front
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gatewayd-hub-front", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self.front.port

    def start(self) -> int:
        return asyncio.run_coroutine_threadsafe(self.front.start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.front.stop(), self._loop).result(10)

    def close(self) -> None:
        """Stop and end the thread; the object cannot be started again."""
        if self._loop.is_closed():
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
