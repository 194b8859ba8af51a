"""The socket side of the MQTT session: TLS, small-packet sending, why a connection ended.

Helpers around paho's socket that hold no session state (the session, gatewayd/enos/client.py,
and its network thread, network.py, use them).
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.config import MqttConfig

log = logging.getLogger(__name__)


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """Verify the hub against `ca_file` (else the system store) and its name, always."""
    cafile = str(cfg.ca_file) if cfg.ca_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = cfg.tls_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if cfg.cert_file and cfg.key_file:
        context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return context


def no_delay(client: mqtt.Client) -> None:
    """Send small packets (PUBACKs, requests) at once: Nagle's algorithm and delayed ACKs
    together stall a request/reply exchange by tens of milliseconds, and paho leaves it on."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.debug("tcp_nodelay_unavailable error=%r", str(exc))


def disconnect_reason(from_broker: bool, reason: ReasonCode) -> str:
    """Why a connection ended, as the broker said it, without paho's invented 'Unspecified error'.

    An MQTT 3.1.1 broker says nothing: it closes the socket (mosquitto does so for a packet over
    its `max_packet_size`), which paho reports as code 128. Only a DISCONNECT packet from the
    broker carries a reason of its own.
    """
    if from_broker:
        return f"broker said: {reason}"
    if reason.value == 0:
        return "closed by us"
    return "closed by the broker or the network without a reason (MQTT 3.1.1 gives none)"
