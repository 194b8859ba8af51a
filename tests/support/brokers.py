"""MQTT brokers the tests can stop and restart: mosquitto, or in-process amqtt where it is missing.

`make_broker` puts the hub simulator's authenticating front (gatewayd/sim/front.py) before the
broker, as the real hub has one: `port` is where gateways connect (their CONNECT is checked
by `judge`, which the `hub` fixture sets to the simulator's), `backend_port` is the bare broker
that the simulator itself and the tests' own tools use.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gatewayd.sim.broker import EmbeddedBroker, free_port
from gatewayd.sim.front import AuthFront, ThreadedFront
from gatewayd.sim.login import ConnectPacket, LoginVerdict, check_login
from gatewayd.sim.mosquitto import MosquittoBroker, wait_for_port

__all__ = ["Broker", "FrontedBroker", "MosquittoBroker", "make_broker", "wait_for_port"]


class Broker(Protocol):
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...


class ThreadedAmqttBroker:
    """amqtt on its own event loop thread, for machines without mosquitto."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: EmbeddedBroker | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        self._broker = EmbeddedBroker(self.port)
        asyncio.run_coroutine_threadsafe(self._broker.start(), loop).result(10)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None


class FrontedBroker:
    """A broker behind the authenticating front; stop() and start() take both down and up
    (same ports), so a stopped broker refuses connections as a dead hub does."""

    def __init__(self, backend: Broker) -> None:
        self.backend = backend
        self.backend_port = backend.port
        #: Until a hub simulator takes over, any well-formed login is let in.
        self.judge: Callable[[ConnectPacket], LoginVerdict] = lambda c: check_login(c, None)
        self._front = ThreadedFront(AuthFront("127.0.0.1", backend.port, self._judge))
        self.port = 0

    def _judge(self, connect: ConnectPacket) -> LoginVerdict:
        return self.judge(connect)

    def start(self) -> None:
        self.backend.start()
        self.port = self._front.start()

    def stop(self) -> None:
        self._front.stop()
        self.backend.stop()

    def stop_front(self) -> None:
        """The broker goes away as gateways see it (every session through the front dropped,
        new ones refused), while the hub simulator, connected to the broker directly, stays:
        the hub answers the first request after the gateway is back, not a reconnect later."""
        self._front.stop()

    def start_front(self) -> None:
        self.port = self._front.start()

    def close(self) -> None:
        self.stop()
        self._front.close()


def make_broker(workdir: Path) -> FrontedBroker:
    backend: Broker
    backend = (
        MosquittoBroker(workdir) if shutil.which("mosquitto") else ThreadedAmqttBroker(workdir)
    )
    return FrontedBroker(backend)
