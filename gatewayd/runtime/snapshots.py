"""Frozen figures of every stage, taken on the event loop and read from anywhere.

The metrics thread, `/healthz`, systemd's STATUS= and the queue's `state` table read only these:
a live dict of the forwarder's reply codes read from the HTTP thread can change size under the
reader (RuntimeError), and a counter read half-way through an update is a wrong figure. The
health tick (and a scrape, through `Health.snapshot_for_scrape`) takes a new `Snapshot` on the
loop and swaps it in with one assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewayd.acquire.poller import DevicePoller
from gatewayd.enos.client import MqttSession
from gatewayd.enos.topology import Topology
from gatewayd.forward.loop import Forwarder


@dataclass(frozen=True)
class PollerStats:
    device: str
    polls: int
    failures: int
    skipped: int
    bad_values: int
    poll_seconds: float
    last_success_s: float
    failing: bool
    successes: int = 0
    discarded: int = 0
    refused_reads: int = 0
    refused_polls: int = 0
    suppressed: int = 0
    deadband_resets: int = 0  # report by exception forgot what it sent: readings were lost
    #: The device's line ("rtu:/dev/ttyUSB0") and what its books counted so far (line_ledger.py).
    endpoint: str = ""
    late_discarded: int = 0
    strays: int = 0
    doubtful: int = 0
    noise_bytes: int = 0


@dataclass(frozen=True)
class ForwarderStats:
    delivered: int = 0
    rejected: int = 0
    inflight: int = 0
    #: Replies by code, sorted ("timeout" and "no_connection" for requests that got none).
    replies: tuple[tuple[str, int], ...] = ()
    #: Batches whose refusals were put down to the hub (kept queued, sending backed off).
    storms: int = 0


@dataclass(frozen=True)
class QueueFigures:
    pending: int = 0
    oldest_ts_ms: int | None = None
    points_per_sample: float = 0.0
    buffered: int = 0
    evicted: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The daemon's figures at one health tick."""

    queue: QueueFigures = field(default_factory=QueueFigures)
    forwarder: ForwarderStats = field(default_factory=ForwarderStats)
    pollers: tuple[PollerStats, ...] = ()
    connected: bool = False
    dropped_replies: int = 0
    parked: int = 0
    rate: float = 0.0
    #: Seconds until the queue is empty at the rate it shrank lately, as of `taken_s` (the
    #: tick's monotonic time); None while it does not shrink.
    eta_s: float | None = 0.0
    taken_s: float = 0.0
    #: Sessions declared dead for want of acknowledgements or replies, then reconnected.
    uplink_stalls: int = 0
    #: Why the hub refuses our login ("" while it does not), and how often it did.
    refused: str = ""
    refusals: int = 0
    #: The uplink for people (MqttSession.status), and when it became so (wall ms).
    uplink: str = "disconnected"
    uplink_since_ms: int = 0
    #: The queue's writer thread answered the last tick's figures request in time.
    writer_ok: bool = True


def eta_now(s: Snapshot, now_s: float) -> float:
    """The snapshot's ETA as of `now_s` (monotonic): a tick's figure less the time since it was
    taken, so a scrape a second after the tick does not read a second long (+Inf: not
    shrinking)."""
    if s.eta_s is None:
        return float("inf")
    return max(0.0, s.eta_s - max(0.0, now_s - s.taken_s))


def poller_stats(p: DevicePoller) -> PollerStats:
    return PollerStats(
        device=p.device.name,
        polls=p.polls,
        failures=p.failures,
        skipped=p.skipped,
        bad_values=p.bad_values,
        poll_seconds=p.poll_seconds,
        last_success_s=p.last_success_s,
        failing=p.failing,
        successes=p.successes,
        discarded=p.discarded,
        refused_reads=p.refused_reads,
        refused_polls=p.refused_polls,
        suppressed=p.report_by_exception.suppressed,
        deadband_resets=p.report_by_exception.resets,
        endpoint=str(p.endpoint),
        late_discarded=p.endpoint.late_discarded,
        strays=p.endpoint.strays,
        doubtful=p.endpoint.doubtful,
        noise_bytes=p.endpoint.ledger.noise_bytes,
    )


def forwarder_stats(f: Forwarder) -> ForwarderStats:
    return ForwarderStats(
        delivered=f.delivered,
        rejected=f.rejected,
        inflight=f.inflight,
        replies=tuple(sorted(f.replies.items())),
        storms=f.storms,
    )


def uplink_figures(session: MqttSession, topology: Topology) -> tuple[bool, int, int]:
    """(connected, replies dropped, devices parked)."""
    return session.connected.is_set(), session.dropped_replies, len(topology.parked)
