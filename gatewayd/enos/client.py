"""The MQTT session with the hub: signed login, reconnects, and request/reply with time limits.

paho's network loop runs in a thread of ours (network.py), whose callbacks never touch shared
state: they hand each event to the asyncio loop, and all bookkeeping happens here, on the loop.
A request is answered by the message on its `_reply` topic carrying the same `id`; anything else
on a reply topic (garbage, unknown or late ids) is logged and dropped.

A session can be connected and useless: a path that loses PUBLISH packets but carries pings
keeps the keepalive happy while paho's window of unacknowledged QoS 1 messages fills, after which
paho sends nothing at all (MQTT 3.1.1 resends only on a new connection). So the session watches
its own progress: when requests time out and no PUBACK and no reply arrived for
`STALL_FACTOR` reply timeouts, it is declared dead, counted in `stalls`, logged once, and
reconnected.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.clocks import now_ms
from gatewayd.config import GatewayConfig, MqttConfig
from gatewayd.enos.network import Handlers, NetworkThread
from gatewayd.enos.protocol import (
    Command,
    Reply,
    command_reply,
    device_credentials,
    is_reply_topic,
    parse_command,
    parse_reply,
    reply_topic,
)
from gatewayd.enos.refusals import connack_refusal
from gatewayd.enos.transport import tls_context
from gatewayd.errors import ReplyFormatError, ReplyTimeout, UplinkDown
from gatewayd.logs import clip

log = logging.getLogger(__name__)

#: No acknowledgement and no reply for this many reply timeouts, with requests timing out: the
#: session is dead even if pings still pass.
STALL_FACTOR = 2.0


class MqttSession:
    """One MQTT connection for the gateway, kept up for the life of the daemon."""

    def __init__(self, mqtt_cfg: MqttConfig, gateway: GatewayConfig, topics: Sequence[str]) -> None:
        """`topics`: the reply topics of every request we make, and the command topics we obey."""
        self.cfg = mqtt_cfg
        self.gateway = gateway
        self.topics = list(topics)
        #: Answers a downstream command with a reply code; set by whoever owns the commands.
        self.command_handler: Callable[[str, Command], int] | None = None
        self.connect_failures = 0
        #: Set when a connection attempt fails (refused, TLS handshake, unreachable).
        self.connect_failed = asyncio.Event()
        #: Why the hub refuses our login ("" while it does not): a wrong secret never fixes itself.
        self.refused = ""
        self.refusals = 0
        self._refusal_reported = False  # event loop: the connection now ending was refused
        self.connected = asyncio.Event()
        #: The complement of `connected`, so that a waiter can await an outage too.
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        #: `status` as last noted, and since when (wall ms): the time of the event itself, which
        #: `queue stats` shows; the health tick that writes it down comes up to 2 s later.
        self._status = self.status
        self.status_since_ms = now_ms()
        #: Sessions made so far (counted when ready): one more than a request saw before means
        #: the broker went away in between, even with no request out to fail (an outage ends a
        #: run of refusals: forward/refusal_evidence.py).
        self.connections = 0
        self._client: mqtt.Client | None = None
        self._pending: dict[tuple[str, str], asyncio.Future[Reply]] = {}
        # Ids must not repeat across restarts either: a late reply to a previous process's request
        # must never confirm this one's rows. A random 40-bit start makes that collision unlikely.
        self._ids = itertools.count(secrets.randbits(40))
        self.dropped_replies = 0
        self._was_connected = False
        self._network: NetworkThread | None = None
        #: Sessions declared dead for want of acknowledgements or replies (then reconnected).
        self.stalls = 0
        #: Exceptions that escaped paho's loop in the network thread (logged, then reconnected).
        self.thread_errors = 0
        #: Set when the network thread gave up (THREAD_ERRORS_MAX errors in a row); why in `failure`.
        self.failed = asyncio.Event()
        self.failure = ""
        #: Since when requests have gone unanswered with no PUBACK or reply (monotonic), or None.
        self._silent_since: float | None = None

    @property
    def status(self) -> str:
        """The uplink for people: connected, disconnected, or why the hub refuses our login."""
        if self.connected.is_set():
            return "connected"
        return f"refused: {self.refused}" if self.refused else "disconnected"

    def _note_status(self) -> None:
        """Date a change of `status` by now: every handler that may change it ends here."""
        if self.status != self._status:
            self._status, self.status_since_ms = self.status, now_ms()

    def next_id(self) -> str:
        return str(next(self._ids))

    async def start(self) -> None:
        """Begin connecting in the background; `connected` is set once reply topics are subscribed."""
        creds = device_credentials(
            self.gateway.product_key,
            self.gateway.device_key,
            self.gateway.secret(),
            now_ms(),
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=creds.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(creds.username, creds.password)
        if self.cfg.tls:
            client.tls_set_context(tls_context(self.cfg))
        handlers = Handlers(
            connect_failed=self._connect_failed,
            connect_refused=self._connect_refused,
            subscribed=self._ready,
            connection_lost=self._connection_lost,
            progressed=self._progressed,
            delivered=self._deliver,
            thread_failed=self._count_thread_error,
        )
        self._client = client
        self._network = NetworkThread(
            client, self.cfg, self.topics, handlers, asyncio.get_running_loop()
        )
        self._network.start()

    async def stop(self) -> None:
        """Disconnect and stop paho's thread; requests still waiting fail with UplinkDown."""
        network, self._network = self._network, None
        self._client = None
        if network is None:
            return
        self._was_connected = False  # our own disconnect is not an outage worth a warning
        await network.stop()
        self._connection_lost("session stopped")

    async def request(self, topic: str, request_id: str, payload: bytes, timeout_s: float) -> Reply:
        """Publish a request (QoS 1) and wait for its reply; raise UplinkDown or ReplyTimeout."""
        if self._client is None or not self.connected.is_set():
            raise UplinkDown("not connected")
        key = (reply_topic(topic), request_id)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise UplinkDown(f"publish failed: {mqtt.error_string(info.rc)}")
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            self._timed_out(timeout_s)
            raise ReplyTimeout(request_id, timeout_s) from None
        finally:
            self._pending.pop(key, None)

    def _timed_out(self, timeout_s: float) -> None:
        """A request got no reply: if nothing at all came back for long enough, reconnect."""
        now = time.monotonic()
        if self._silent_since is None:
            self._silent_since = now - timeout_s  # the request went out timeout_s ago
            return
        silent_s = now - self._silent_since
        if silent_s < STALL_FACTOR * timeout_s or self._client is None:
            return
        self.stalls += 1
        self._silent_since = None
        log.warning(
            "uplink_stalled silent_s=%.1f unacknowledged=%d action=reconnect"
            " note='no PUBACK and no reply while requests timed out'",
            silent_s,
            len(self._pending),
        )
        self._client.disconnect()  # thread-safe; the network thread connects again

    def _progressed(self) -> None:
        self._silent_since = None

    # --- what paho's thread hands over (network.py), on the event loop ------------------------

    def _count_thread_error(self, reason: str, fatal: bool) -> None:
        self.thread_errors += 1
        self._connection_lost(f"network thread error: {reason}")
        if fatal:
            self.failure = reason
            self.failed.set()

    def _connect_failed(self, reason: str = "") -> None:
        self.refused = ""  # failing otherwise (unreachable, TLS) ends a streak of refusals
        self._note_status()
        self.connect_failures += 1
        self.connect_failed.set()
        if self.connect_failures == 1 or self.connect_failures % 100 == 0:
            log.warning(
                "uplink_connect_failed host=%s port=%d attempts=%d reason=%r",
                self.cfg.host,
                self.cfg.port,
                self.connect_failures,
                reason,
            )

    def _connect_refused(self, code: int, text: str) -> None:
        """The hub answered CONNECT with a refusal: said once per streak (and when it changes)."""
        reason, hint = connack_refusal(code)
        self.refusals += 1
        if reason != self.refused:
            log.error(
                "uplink_refused reason=%s hint=%r host=%s port=%d code=%d text=%r "
                "note='readings stay queued; retried with backoff'",
                reason,
                hint,
                self.cfg.host,
                self.cfg.port,
                code,
                text,
            )
        self.refused = reason
        self._note_status()
        self._refusal_reported = True
        self.connect_failed.set()

    def _ready(self, failed: list[str]) -> None:
        if failed:
            log.error("uplink_subscribe_refused topics=%d reasons=%s", len(failed), failed)
        log.info("uplink_connected host=%s port=%d", self.cfg.host, self.cfg.port)
        if self.refused:
            log.info("uplink_accepted_after_refusals refusals=%d", self.refusals)
            self.refused = ""
        self._was_connected = True
        self._silent_since = None
        self.connections += 1
        self.disconnected.clear()
        self.connected.set()
        self._note_status()

    def _connection_lost(self, reason: str) -> None:
        if self._was_connected:
            log.warning("uplink_lost reason=%r waiting_replies=%d", reason, len(self._pending))
        elif self._client is not None and not self._refusal_reported:
            # Ended before it was ready (e.g. a client certificate refused after the TLS 1.3
            # handshake): that is a failed attempt, not an outage. (A refused CONNECT was
            # reported by _connect_refused already.)
            self._connect_failed(reason)
        self._refusal_reported = False
        self._was_connected = False
        self.connected.clear()
        self.disconnected.set()
        self._note_status()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(UplinkDown(f"connection lost: {reason}"))

    def _deliver(self, topic: str, payload: bytes) -> None:
        if not is_reply_topic(topic):
            self._obey(topic, payload)
            return
        try:
            reply = parse_reply(payload)
        except ReplyFormatError as exc:
            self.dropped_replies += 1
            log.warning("reply_dropped topic=%s reason=%r bytes=%d", topic, str(exc), len(payload))
            return
        future = self._pending.get((topic, reply.id))
        if future is None or future.done():
            self.dropped_replies += 1
            log.info(
                "reply_unmatched topic=%s id=%s code=%d", topic, clip(reply.id, 64), reply.code
            )
            return
        self._silent_since = None
        future.set_result(reply)

    def _obey(self, topic: str, payload: bytes) -> None:
        try:
            command = parse_command(payload)
        except ReplyFormatError as exc:
            log.warning("command_dropped topic=%s reason=%r", topic, str(exc))
            return
        code = self.command_handler(topic, command) if self.command_handler else 1101
        if self._client is not None:
            self._client.publish(reply_topic(topic), command_reply(command.id, code), qos=1)
