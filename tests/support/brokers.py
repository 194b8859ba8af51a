"""MQTT brokers the tests can stop and restart: mosquitto, or in-process amqtt where it is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from gatewayd.sim.broker import EmbeddedBroker, free_port


class Broker(Protocol):
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until something accepts TCP connections on the loopback port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


class MosquittoBroker:
    """A private mosquitto on a free loopback port (the system one on 1883 is left alone)."""

    def __init__(self, workdir: Path, extra: str = "") -> None:
        """`extra`: more listener options, e.g. TLS files."""
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # As root, mosquitto drops to its own user, which cannot read pytest's private tmp dirs.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest none\n" + extra
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


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
