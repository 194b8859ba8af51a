"""A TCP relay that can cut, stall and restore a link, to play uplink faults on one machine.

A cut is a link that dies (both ends see a reset); a stall is one that silently stops carrying
bytes while both ends still think it is up, as a congested cellular link does: only keepalives
and reply timeouts can tell. `drop_publish()` is the nastiest of the three: it reads the MQTT
packets going up and throws away the client's PUBLISH packets while PINGREQ and everything else
pass, so keepalives succeed and the client's unacknowledged window simply never empties.
"""

from __future__ import annotations

import asyncio
import contextlib

#: The MQTT control packet type of PUBLISH (the high nibble of the first byte).
PUBLISH = 3


def split_packets(buffer: bytearray) -> list[bytes]:
    """Take the complete MQTT packets off the front of `buffer` (fixed header + remaining length)."""
    packets: list[bytes] = []
    while len(buffer) >= 2:
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buffer) or index > 4:
                return packets  # the length is not all here yet
            byte = buffer[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        end = index + length
        if len(buffer) < end:
            return packets
        packets.append(bytes(buffer[:end]))
        del buffer[:end]
    return packets


class Relay:
    """Forwards loopback connections to a target; `cut()` drops them all and refuses new ones;
    `stall()` holds every byte (in both directions) until `restore()`; `drop_publish()` drops the
    client's PUBLISH packets (only those) until `restore()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.dropping_publish = False
        self.dropped_publish = 0
        #: Set whenever a PUBLISH packet was dropped (for whoever waits for a count).
        self.publish_dropped = asyncio.Event()

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

    def drop_publish(self) -> None:
        self.dropping_publish = True

    def stall(self) -> None:
        self._flowing.clear()

    @property
    def is_stalled(self) -> bool:
        return not self._flowing.is_set()

    def restore(self) -> None:
        """End a cut or a stall: new connections are accepted, held bytes flow on."""
        self.is_cut = False
        self.dropping_publish = False
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
        await asyncio.gather(self._pipe(reader, up_writer, up=True), self._pipe(up_reader, writer))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool = False
    ) -> None:
        """One direction; client to broker (`up`) packet by packet, so that PUBLISH packets can
        be dropped."""
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if not up:
                    writer.write(data)
                else:
                    buffer += data
                    for packet in split_packets(buffer):
                        writer.write(self._passed(packet))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    def _passed(self, packet: bytes) -> bytes:
        """The packet, or nothing if it is a PUBLISH being dropped."""
        if self.dropping_publish and packet[0] >> 4 == PUBLISH:
            self.dropped_publish += 1
            self.publish_dropped.set()
            return b""
        return packet
