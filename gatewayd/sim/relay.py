"""A TCP relay that can cut, stall and restore a link, to play uplink faults on one machine.

A cut is a link that dies (both ends see a reset); a stall is one that silently stops carrying
bytes while both ends still think it is up, as a congested cellular link does: only keepalives
and reply timeouts can tell.
"""

from __future__ import annotations

import asyncio
import contextlib


class Relay:
    """Forwards loopback connections to a target; `cut()` drops them all and refuses new ones;
    `stall()` holds every byte (in both directions) until `restore()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def stall(self) -> None:
        self._flowing.clear()

    @property
    def is_stalled(self) -> bool:
        return not self._flowing.is_set()

    def restore(self) -> None:
        """End a cut or a stall: new connections are accepted, held bytes flow on."""
        self.is_cut = False
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
