"""Prometheus metrics and a health check over HTTP (`[metrics] listen = "127.0.0.1:9108"`).

Figures are read from the running parts at scrape time, so they are right while the uplink is
down (when a monitoring system needs them most). `/healthz` answers 200 while the event loop
ticks and the queue's writer thread answers, 503 otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gatewayd.acquire.poller import DevicePoller
from gatewayd.enos.client import MqttSession
from gatewayd.forward.loop import Forwarder
from gatewayd.queue.store import SampleQueue, file_bytes
from gatewayd.runtime.health import Health

log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class GatewayCollector(Collector):
    """Builds every metric from the live objects on each scrape."""

    def __init__(
        self,
        queue: SampleQueue,
        session: MqttSession,
        forwarder: Forwarder,
        health: Health,
        pollers: Callable[[], list[DevicePoller]],
    ) -> None:
        self.queue = queue
        self.session = session
        self.forwarder = forwarder
        self.health = health
        self.pollers = pollers

    def collect(self) -> Iterator[Metric]:
        h, f = self.health, self.forwarder
        yield GaugeMetricFamily("gatewayd_queue_samples", "Samples waiting in the queue", h.pending)
        yield GaugeMetricFamily(
            "gatewayd_queue_points",
            "Points waiting (estimate: samples x mean points of the newest samples)",
            round(h.pending * h.points_per_sample),
        )
        yield GaugeMetricFamily(
            "gatewayd_queue_bytes", "Queue file size with WAL", file_bytes(self.queue.path)
        )
        age = 0.0 if h.oldest_ts_ms is None else max(0.0, time.time() - h.oldest_ts_ms / 1000)
        yield GaugeMetricFamily(
            "gatewayd_queue_oldest_age_seconds", "Age of the oldest sample", age
        )
        yield GaugeMetricFamily(
            "gatewayd_queue_buffered_samples",
            "Samples read but not yet committed",
            self.queue.buffered,
        )
        yield GaugeMetricFamily(
            "gatewayd_drain_rate_samples_per_second", "Samples sent per second", h.rate
        )
        yield GaugeMetricFamily(
            "gatewayd_uplink_connected",
            "1 while the MQTT session is up",
            1 if self.session.connected.is_set() else 0,
        )
        yield GaugeMetricFamily(
            "gatewayd_uplink_refused",
            "1 while the hub refuses the gateway's login (see the log's uplink_refused hint)",
            1 if self.session.refused else 0,
        )
        yield CounterMetricFamily(
            "gatewayd_uplink_refusals", "Logins the hub refused", self.session.refusals
        )
        yield CounterMetricFamily("gatewayd_sent_samples", "Samples the hub confirmed", f.delivered)
        yield CounterMetricFamily("gatewayd_rejected_samples", "Samples dead-lettered", f.rejected)
        yield CounterMetricFamily(
            "gatewayd_replies_dropped",
            "Messages on reply topics that were garbage, unknown or late",
            self.session.dropped_replies,
        )
        yield CounterMetricFamily(
            "gatewayd_evicted_samples", "Samples evicted by the bounds", self.queue.evicted
        )
        replies = CounterMetricFamily("gatewayd_replies", "Replies by code", labels=["code"])
        for code, count in sorted(f.replies.items()):
            replies.add_metric([code], count)
        yield replies
        yield from self._polls()

    def _polls(self) -> Iterable[Metric]:
        polls = CounterMetricFamily(
            "gatewayd_polls", "Polls by device and result", labels=["device", "result"]
        )
        seconds = CounterMetricFamily(
            "gatewayd_poll_seconds", "Time in successful polls", labels=["device"]
        )
        last = GaugeMetricFamily(
            "gatewayd_poll_last_success_timestamp_seconds", "Last good poll", labels=["device"]
        )
        up = GaugeMetricFamily(
            "gatewayd_device_up", "1 unless the device is failing", labels=["device"]
        )
        bad = CounterMetricFamily(
            "gatewayd_bad_values",
            "Point values not sent as read (NaN/inf, undecodable, exception response)",
            labels=["device"],
        )
        for p in self.pollers():
            name = p.device.name
            polls.add_metric([name, "ok"], p.polls - p.failures)
            polls.add_metric([name, "failed"], p.failures)
            polls.add_metric([name, "skipped"], p.skipped)
            seconds.add_metric([name], p.poll_seconds)
            last.add_metric([name], p.last_success_s)
            up.add_metric([name], 0 if p.failing else 1)
            bad.add_metric([name], p.bad_values)
        yield from (polls, seconds, last, up, bad)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


class MetricsServer:
    """Serves /metrics and /healthz from a thread; start() and stop() from the daemon."""

    def __init__(
        self, address: tuple[str, int], collector: GatewayCollector, health: Health
    ) -> None:
        self.address = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.health = health
        self._metrics_app = make_wsgi_app(self.registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = self.health.alive()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"ok\n" if ok else b"stalled\n"]
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    def start(self) -> None:
        host, port = self.address
        self._server = make_server(host, port, self.app, _Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gatewayd-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics_listening address=%s:%d", host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
