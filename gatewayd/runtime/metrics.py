"""Prometheus metrics and a health check over HTTP (`[metrics] listen = "127.0.0.1:9108"`).

Figures come from a snapshot (snapshots.py) the event loop takes when the scrape asks for it
(the last one if the loop does not answer within a second), so they are right while the uplink
is down (when a monitoring system needs them most) and the HTTP thread never reads a live object. `/healthz` answers 200 while every stage's heartbeat is
fresh and the queue's writer thread answers, else 503 with the stale stages named.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gatewayd.clocks import now_ms
from gatewayd.queue.store import file_bytes
from gatewayd.runtime.snapshots import PollerStats, Snapshot, eta_now

log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


#: Per line (a serial port or converter): what its books counted (acquire/line_ledger.py).
_LINE_COUNTERS = (
    ("gatewayd_late_answers_discarded", "Answers that came after their request timed out"),
    ("gatewayd_stray_frames", "Whole frames on a serial line that no request explains"),
    ("gatewayd_doubtful_answers", "Answers refused as untrustworthy (extra frames, noise, size)"),
    ("gatewayd_line_noise_bytes", "Bytes on a serial line that were no part of a whole frame"),
)


class GatewayCollector(Collector):
    """Builds every metric from the latest snapshot on each scrape (in the HTTP thread)."""

    def __init__(self, queue_path: Path, snapshot: Callable[[], Snapshot]) -> None:
        self.queue_path = queue_path
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        q, f = s.queue, s.forwarder
        yield GaugeMetricFamily("gatewayd_queue_samples", "Samples waiting in the queue", q.pending)
        yield GaugeMetricFamily(
            "gatewayd_queue_points",
            "Points waiting (estimate: samples x mean points of the newest samples)",
            round(q.pending * q.points_per_sample),
        )
        yield GaugeMetricFamily(
            "gatewayd_queue_bytes",
            "Queue database file and WAL, what queue.max_bytes bounds (not the -shm index)",
            file_bytes(self.queue_path),
        )
        age = 0.0 if q.oldest_ts_ms is None else max(0.0, (now_ms() - q.oldest_ts_ms) / 1000)
        yield GaugeMetricFamily(
            "gatewayd_queue_oldest_age_seconds", "Age of the oldest sample", age
        )
        yield GaugeMetricFamily(
            "gatewayd_queue_buffered_samples", "Samples read but not yet committed", q.buffered
        )
        yield GaugeMetricFamily(
            "gatewayd_drain_rate_samples_per_second", "Samples sent per second", s.rate
        )
        yield GaugeMetricFamily(
            "gatewayd_drain_eta_seconds",
            "Seconds until the queue is empty at the rate it shrank lately (+Inf: it does not)",
            eta_now(s, time.monotonic()),
        )
        yield GaugeMetricFamily(
            "gatewayd_uplink_connected", "1 while the MQTT session is up", int(s.connected)
        )
        yield GaugeMetricFamily(
            "gatewayd_uplink_refused",
            "1 while the hub refuses the gateway's login (see the log's uplink_refused hint)",
            1 if s.refused else 0,
        )
        yield CounterMetricFamily("gatewayd_uplink_refusals", "Logins the hub refused", s.refusals)
        yield CounterMetricFamily("gatewayd_sent_samples", "Samples the hub confirmed", f.delivered)
        yield CounterMetricFamily("gatewayd_rejected_samples", "Samples dead-lettered", f.rejected)
        yield CounterMetricFamily(
            "gatewayd_replies_dropped",
            "Messages on reply topics that were garbage, unknown or late",
            s.dropped_replies,
        )
        yield CounterMetricFamily(
            "gatewayd_uplink_stalls",
            "Sessions declared dead for want of acknowledgements or replies, then reconnected",
            s.uplink_stalls,
        )
        yield CounterMetricFamily(
            "gatewayd_hub_storms",
            "Batches whose refusals were put down to the hub (kept queued, sending backed off)",
            f.storms,
        )
        yield CounterMetricFamily(
            "gatewayd_evicted_samples", "Samples evicted by the bounds", q.evicted
        )
        replies = CounterMetricFamily("gatewayd_replies", "Replies by code", labels=["code"])
        for code, count in f.replies:
            replies.add_metric([code], count)
        yield replies
        yield from self._polls(s.pollers)

    @staticmethod
    def _polls(pollers: tuple[PollerStats, ...]) -> Iterable[Metric]:
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
        refused = CounterMetricFamily(
            "gatewayd_refused_reads",
            "Reads the device answered with a Modbus exception (unmapped address, wrong unit id)",
            labels=["device"],
        )
        line_families = [
            CounterMetricFamily(name, text, labels=["endpoint"]) for name, text in _LINE_COUNTERS
        ]
        suppressed = CounterMetricFamily(
            "gatewayd_points_suppressed",
            "Points left out by report by exception (within their deadband)",
            labels=["device"],
        )
        resets = CounterMetricFamily(
            "gatewayd_deadband_resets",
            "Times report by exception sent every point again because readings were lost",
            labels=["device"],
        )
        lines: dict[str, tuple[int, int, int, int]] = {}
        for p in pollers:
            name = p.device
            polls.add_metric([name, "ok"], p.successes - p.refused_polls)
            polls.add_metric([name, "refused"], p.refused_polls)
            polls.add_metric([name, "discarded"], p.discarded)
            polls.add_metric([name, "failed"], p.failures)
            refused.add_metric([name], p.refused_reads)
            suppressed.add_metric([name], p.suppressed)
            resets.add_metric([name], p.deadband_resets)
            lines[p.endpoint] = (p.late_discarded, p.strays, p.doubtful, p.noise_bytes)
            polls.add_metric([name, "skipped"], p.skipped)
            seconds.add_metric([name], p.poll_seconds)
            last.add_metric([name], p.last_success_s)
            up.add_metric([name], 0 if p.failing else 1)
            bad.add_metric([name], p.bad_values)
        for endpoint, counts in lines.items():
            for family, count in zip(line_families, counts, strict=True):
                family.add_metric([endpoint], count)
        yield from (polls, seconds, last, up, bad, refused, *line_families, suppressed, resets)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    #: Called by serve_forever() between requests, at least every poll interval (0.5 s).
    on_tick: Callable[[], None] = staticmethod(lambda: None)

    def service_actions(self) -> None:
        self.on_tick()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


class MetricsServer:
    """Serves /metrics and /healthz from a thread; start() and stop() from the daemon.

    `problem()` says why the daemon is unhealthy (None when it is not); `on_tick` runs in the
    server's thread between requests (the daemon beats the metrics stage's pulse there), and
    `wrap` wraps the thread's target (the daemon's supervisor: its exception stops the daemon).
    """

    def __init__(
        self,
        address: tuple[str, int],
        collector: GatewayCollector,
        problem: Callable[[], str | None],
        on_tick: Callable[[], None] = lambda: None,
        wrap: Callable[[Callable[[], None]], Callable[[], None]] = lambda fn: fn,
    ) -> None:
        self.address = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.problem = problem
        self.on_tick = on_tick
        self.wrap = wrap
        self._metrics_app = make_wsgi_app(self.registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            problem = self.problem()
            start_response(
                "200 OK" if problem is None else "503 Service Unavailable",
                [("Content-Type", "text/plain")],
            )
            return [b"ok\n" if problem is None else f"{problem}\n".encode()]
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    def start(self) -> None:
        host, port = self.address
        self._server = make_server(host, port, self.app, _Server, handler_class=_QuietHandler)
        self._server.on_tick = self.on_tick
        self._thread = threading.Thread(
            target=self.wrap(self._server.serve_forever), name="gatewayd-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics_listening address=%s:%d", host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Blocks until the server's thread ended: call it off the event loop (`aclose`)."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None and self._thread.is_alive():
                server.shutdown()
            server.server_close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)
