"""A userspace link emulator: a TCP proxy with a field uplink's rate and round trip.

A gateway sits behind 0.25–10 Mbit/s of cellular or satellite uplink with 50–700 ms of round
trip; loopback has neither, so a window or a deadline that is wrong on such a link looks right in
every loopback test. Each direction here is a token bucket at the set rate (bytes leave the
bucket no faster than the link would serialise them) followed by a fixed one-way delay of RTT/2
per segment. Segments are pipelined: a segment's delay runs while the next one is serialised,
as on a real link, so a full pipe moves `rate` bytes per second whatever the round trip.

The proxy reads from a sender only as fast as the bucket empties, so a sender that writes
faster than the link fills its own socket buffer and blocks, as on the real thing. Counters per
direction (bytes carried, seconds the link sat idle while a connection was open) let a
benchmark report how well the link was used.

    python -m gatewayd.sim.link --target-port P --rate-bps 1000000 --rtt-ms 300

prints the listening port, then its counters as JSON lines every --stats-every-s seconds and
once more at SIGTERM/SIGINT, when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass

#: How much link time one segment may take: small enough that pacing is smooth, large enough
#: that the event loop is not woken for every few hundred bytes on a fast link.
SEGMENT_S = 0.004
#: Segments never exceed this (a typical MSS) nor fall below the smallest useful read.
SEGMENT_MAX, SEGMENT_MIN = 1448, 64
#: The proxy's own socket buffers: a small queue of its own, so the sender's buffer holds the
#: backlog (bytes the sender has written but the link has not carried) as on a real modem.
PROXY_BUFFER_BYTES = 16384


@dataclass
class Direction:
    """What one direction of the link carried."""

    bytes: int = 0
    busy_s: float = 0.0  # seconds of serialisation: bytes * 8 / rate


class LinkEmulator:
    """Proxies connections on 127.0.0.1 to a target through a link of `rate_bps` and `rtt_s`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        rate_bps: float,
        rtt_s: float,
        *,
        down_rate_bps: float | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.rate_up = rate_bps / 8.0  # bytes per second
        self.rate_down = (down_rate_bps or rate_bps) / 8.0
        self.delay_s = rtt_s / 2.0
        self.port = 0
        self.up = Direction()
        self.down = Direction()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PROXY_BUFFER_BYTES)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def stats(self) -> dict[str, float]:
        return {
            "up_bytes": self.up.bytes,
            "up_busy_s": round(self.up.busy_s, 3),
            "down_bytes": self.down.bytes,
            "down_busy_s": round(self.down.busy_s, 3),
        }

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for w in (writer, far_writer):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PROXY_BUFFER_BYTES)
            self._writers.add(w)
        for coro in (
            self._pipe(reader, far_writer, self.rate_up, self.up),
            self._pipe(far_reader, writer, self.rate_down, self.down),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rate: float,
        seen: Direction,
    ) -> None:
        """Serialise at `rate` (the reads are paced by it), deliver each segment delay_s later."""
        loop = asyncio.get_running_loop()
        segment = max(SEGMENT_MIN, min(SEGMENT_MAX, int(rate * SEGMENT_S)))
        due: deque[tuple[float, bytes]] = deque()
        arrived = asyncio.Event()
        done = False

        async def deliver() -> None:
            while True:
                while not due:
                    if done:
                        writer.close()
                        return
                    arrived.clear()
                    await arrived.wait()
                at, data = due.popleft()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        deliverer = asyncio.create_task(deliver())
        free_at = loop.time()
        try:
            while True:
                data = await reader.read(segment)
                if not data:
                    break
                now = loop.time()
                # A sleep that overslept does not cost the link bandwidth: up to one segment
                # of lateness is made up (a bucket of one segment's depth).
                start = max(free_at, now - SEGMENT_S)
                took = len(data) / rate
                free_at = start + took
                seen.bytes += len(data)
                seen.busy_s += took
                due.append((free_at + self.delay_s, data))
                arrived.set()
                if free_at > loop.time():
                    await asyncio.sleep(free_at - loop.time())
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            arrived.set()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await deliverer


async def _serve(args: argparse.Namespace) -> None:
    link = LinkEmulator("127.0.0.1", args.target_port, args.rate_bps, args.rtt_ms / 1000.0)
    port = await link.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    started = time.monotonic()

    async def report() -> None:
        while True:
            await asyncio.sleep(args.stats_every_s)
            sys.stdout.write(json.dumps({**link.stats(), "t": time.time()}) + "\n")
            sys.stdout.flush()

    reporter = asyncio.create_task(report())
    await stopping.wait()
    reporter.cancel()
    await link.stop()
    sys.stdout.write(json.dumps({**link.stats(), "elapsed_s": time.monotonic() - started}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--rate-bps", type=float, required=True, help="bits per second")
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--stats-every-s", type=float, default=3600.0, help="print counters")
    asyncio.run(_serve(parser.parse_args(argv if argv is not None else sys.argv[1:])))


if __name__ == "__main__":
    main()
