"""paho's side of the MQTT session: the network thread, and callbacks that only hand over.

paho's network loop runs in a thread of ours: it connects, runs `loop()` until the connection
ends, then waits a capped, fully jittered, growing delay before the next attempt (paho's own
reconnect delay has no jitter). Nothing here keeps the session's books: every event goes to the
asyncio loop with `call_soon_threadsafe`, and the session (client.py) handles it there. Kept
apart so that what runs in paho's thread is exactly what is in this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.backoff import backoff_delay
from gatewayd.config import MqttConfig
from gatewayd.enos.transport import disconnect_reason, no_delay

# The session's lines, wherever in it they are written (`logger=gatewayd.enos.client`).
log = logging.getLogger("gatewayd.enos.client")

#: Errors of the network thread in a row, with no healthy session between, before giving up.
THREAD_ERRORS_MAX = 1


@dataclass(frozen=True)
class Handlers:
    """What the session does with each event of the thread; every one runs on the event loop."""

    connect_failed: Callable[[str], None]  # unreachable, TLS handshake, ...
    connect_refused: Callable[[int, str], None]  # the hub's CONNACK code and its text
    subscribed: Callable[[list[str]], None]  # ready; the topics refused, if any
    connection_lost: Callable[[str], None]
    progressed: Callable[[], None]  # a PUBACK came back
    delivered: Callable[[str, bytes], None]  # a message: topic, payload
    thread_failed: Callable[[str, bool], None]  # an exception escaped paho's loop; fatal?


class NetworkThread:
    """paho's network loop for one client, in a thread of ours, from `start()` to `stop()`."""

    def __init__(
        self,
        client: mqtt.Client,
        cfg: MqttConfig,
        topics: Sequence[str],
        handlers: Handlers,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """`topics`: subscribed at every connect (the session's own list, read each time)."""
        self.client = client
        self.cfg = cfg
        self.topics = topics
        self.handlers = handlers
        self._loop = loop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = False  # the current connection got as far as subscribing
        self._refused_attempt = False  # the last CONNECT was refused
        self._subscribe_mid: int | None = None
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="gatewayd-mqtt", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Say DISCONNECT (paho's loop sends it) and wait for the thread to end."""
        self._stopping.set()
        self.client.disconnect()  # thread-safe; wakes the network thread's loop() at once
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _run(self) -> None:
        """Connect, serve, and after a failure wait a jittered backoff; until stop().

        An exception escaping paho's loop (from one of our callbacks, or paho itself) would
        end this thread silently and leave a daemon that polls and queues but never forwards.
        It is a bug, not a network condition (paho reports those as return codes): the session
        gives up and sets `failed`, which stops the daemon with one critical line (exit 1; the
        service manager restarts it). Never half dead, never a loop of the same bug.
        """
        client = self.client
        failures = 0
        errors = 0
        while not self._stopping.is_set():
            self._healthy = False
            self._refused_attempt = False
            try:
                self._connect_and_serve(client)
            except Exception as exc:
                errors += 1
                self._thread_error(client, exc, errors)
                if errors >= THREAD_ERRORS_MAX:
                    return
            failures = 1 if self._healthy else failures + 1
            delay = backoff_delay(
                failures, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, random.random
            )
            if self._refused_attempt:  # asking again at once cannot help: never a tight loop
                delay = max(delay, self.cfg.reconnect_min_s)
            self._stopping.wait(delay)

    def _connect_and_serve(self, client: mqtt.Client) -> None:
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._call(self.handlers.connect_failed, f"{type(exc).__name__}: {exc}")
        else:
            no_delay(client)
            self._serve(client)

    def _thread_error(self, client: mqtt.Client, exc: Exception, errors: int) -> None:
        """Log an error of the network thread, close the connection; give up at the limit."""
        reason = f"{type(exc).__name__}: {exc}"
        fatal = errors >= THREAD_ERRORS_MAX
        log.error(
            "uplink_thread_error error=%r consecutive=%d action=%s",
            reason,
            errors,
            "stopping" if fatal else "reconnecting",
        )
        log.debug("uplink_thread_error_detail", exc_info=exc)  # the traceback, for a developer
        with contextlib.suppress(Exception):
            client.disconnect()
            client.loop(timeout=0.1)  # let paho close the socket
        self._call(self.handlers.thread_failed, reason, fatal)

    def _serve(self, client: mqtt.Client) -> None:
        """Run paho's loop until the connection ends; on stop(), say DISCONNECT first."""
        goodbye_rounds = 3
        while client.loop(timeout=1.0) == mqtt.MQTT_ERR_SUCCESS:
            if self._stopping.is_set():
                if goodbye_rounds == 0:
                    break
                goodbye_rounds -= 1
                client.disconnect()  # the next loop() sends it and paho closes the socket

    # --- paho's callbacks: hand over only ------------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            self._refused_attempt = True
            self._call(self.handlers.connect_refused, int(reason.value), str(reason))
            return
        result, mid = client.subscribe([(topic, 1) for topic in self.topics])
        if result == mqtt.MQTT_ERR_SUCCESS:
            self._subscribe_mid = mid

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if mid == self._subscribe_mid:
            self._healthy = True
            failed = [str(r) for r in reasons if r.is_failure]
            self._call(self.handlers.subscribed, failed)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        self._call(
            self.handlers.connection_lost,
            disconnect_reason(flags.is_disconnect_packet_from_server, reason),
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._call(self.handlers.progressed)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._call(self.handlers.delivered, message.topic, bytes(message.payload))
