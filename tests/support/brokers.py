"""MQTT brokers the tests can stop and restart: mosquitto, or in-process amqtt where it is missing."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Protocol

from gatewayd.sim.broker import EmbeddedBroker, free_port
from gatewayd.sim.mosquitto import MosquittoBroker, wait_for_port


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


def make_broker(workdir: Path) -> Broker:
    if shutil.which("mosquitto"):
        return MosquittoBroker(workdir)
    return ThreadedAmqttBroker(workdir)
