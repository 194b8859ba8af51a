"""An MQTT broker inside this process (amqtt), so the demo needs no system service."""

from __future__ import annotations

import socket
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that the OS says is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """amqtt on a loopback port, anonymous access; start and stop on the running loop."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker  # the `demo` extra; imported only when used

        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
