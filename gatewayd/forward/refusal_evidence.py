"""Whose fault is a refused lone sample: its data's (dead-letter it) or the hub's (keep it)?

A content code (1008/1204/1206/1220) for a sample sent alone says the sample is wrong, unless
the hub is saying it to everything: the chaos round saw a hub answer 1220 to every request for
a few seconds, and good data must not be dead-lettered for that. Wrong data, though, must not
hold the queue for ever either: a device whose model does not fit is refused on every attempt,
and everything queued behind it waits. The evidence, in order:

1. The hub took other samples since the batch was first refused: it answered 200 to a request
   SENT after the refused batch (each request has a send serial) and before the lone sample's
   own. Only the order of sending counts, never the order in which replies or their deletes
   land: a 200 to a request sent earlier says the hub took samples before the refusal, not
   after it, whether its delete was still being written when the refusal came or the hub
   answered it late (both dead-lettered good samples from a burst that began while several
   requests were in flight). A lone sample refused before any such 200 is asked once more,
   alone (the storm may have ended just after it).
2. The refusal persists: with no 200 and no outage in between, lone samples have been refused
   with this same code in at least PERSIST_TIMES batches over at least PERSIST_S, at least
   PERSIST_LONE_MIN of them in all. Counted over the run, whatever the batch size
   (`forward.batch_max_samples` of 1 to 3 never holds four lone samples in one bisection) and
   however many devices take part (two devices with the same wrong model meet in every
   bisection). What an operator expects: data the hub has refused for a minute straight, while
   taking nothing else, is not going to be taken by waiting, and holding it stops every later
   sample; it goes to `rejected` with the hub's code and reason, said once a run in the log
   (`refusals_persist`, whichever path dead-letters first), and `gatewayd queue
   requeue-rejected` sends it again once the model is fixed. A hub that refuses everything for
   longer than that is indistinguishable from wrong data; its samples are dead-lettered too,
   and are requeued the same way.
3. Otherwise, if the bisection left one lone refused sample and no other is held, it is held
   aside (held_refusal.py): skipped while the others flow, no backoff, and asked once more
   alone after a 200 to a request sent after its refusal (as rule 1). A live request often
   holds one sample of one device alone, refused before any 200 could be evidence; putting
   that down to a storm backed off every device's live data.
4. Otherwise it is a storm (HubStorm): the samples (the held one too) stay queued and the loop
   backs off.

A run ends at any 200 (when it arrives, not when its rows are deleted; rule 1 decides from
then on) and at any outage: a request that got no reply at all, or a new MQTT session (the
broker went away while the forwarder was backing off, with no request out to fail). Time
without replies is no refusal: a burst before an outage and one after it are two short bursts,
not one long one. The runs live in memory: a restart starts them again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gatewayd.enos.protocol import Reply
from gatewayd.logs import clip
from gatewayd.model import QueuedSample

log = logging.getLogger(__name__)

Key = tuple[str, str]
Suspect = tuple[QueuedSample, Reply]

#: Probe.refused_serial before the batch was refused.
UNSET = -1
#: A refusal persists (rule 2) after this many batches, over this long, with this many lone
#: samples refused in all, with the same code and no 200 and no outage in between. The storms
#: seen (the chaos round's 1220 bursts) lasted seconds.
PERSIST_TIMES = 3
PERSIST_S = 60.0
PERSIST_LONE_MIN = 4


class HubStorm(Exception):
    """Lone samples refused with no 200 in between, not yet for long: the hub, not the data."""


@dataclass(eq=False)
class Probe:
    """The bisection of one batch: the refused lone samples held until the evidence is in."""

    #: The send serial of its first request refused for its content (UNSET: not yet). A 200 to
    #: a request sent before it is no evidence, however late it is answered.
    refused_serial: int = UNSET
    #: The send serial of its latest lone sample refused (the one a hold waits on).
    lone_serial: int = UNSET
    #: When the batch was first refused (the handler's monotonic clock).
    refused_at: float = 0.0
    #: A suspect asked once more after the hub took others: a refusal is believed at once.
    confirming: bool = False
    #: The send serials of the requests answered 200 while the probe was open, in any order.
    oks: list[int] = field(default_factory=list)
    suspects: list[Suspect] = field(default_factory=list)
    #: Its lone refusals were added to the runs (once per batch, however often it is asked).
    counted: bool = False

    def devices(self) -> set[Key]:
        return {(row.product_key, row.device_key) for row, _ in self.suspects}

    def took_before(self, serial: int) -> bool:
        """The hub answered 200 to a request sent after the batch was refused and before the
        request with this send serial (rule 1)."""
        return any(self.refused_serial < ok < serial for ok in self.oks)

    def took_since(self) -> bool:
        """The hub answered 200 to a request sent after the batch was refused."""
        return self.refused_serial != UNSET and any(ok > self.refused_serial for ok in self.oks)


@dataclass
class Run:
    """Batches whose lone samples were refused with one code, no 200 and no outage between."""

    since: float
    times: int = 0
    lone: int = 0
    devices: set[Key] = field(default_factory=set)
    #: `refusals_persist` was logged for this run.
    announced: bool = False

    def persists(self, now: float) -> bool:
        return (
            self.times >= PERSIST_TIMES
            and self.lone >= PERSIST_LONE_MIN
            and now - self.since >= PERSIST_S
        )

    def progress(self, now: float) -> str:
        """How far the run is from rule 2, for the storm's log line."""
        return (
            f"run_batches={self.times}/{PERSIST_TIMES} run_s={now - self.since:.0f}/"
            f"{PERSIST_S:g} run_lone_samples={self.lone}/{PERSIST_LONE_MIN}"
        )


class RefusalRuns:
    """The runs of refusals in progress, one per code: no I/O but a log line; the caller's clock."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        #: When the runs last ended: a batch refused before that (still being split when the
        #: outage came) counts from then on, not from its own first refusal.
        self._ended_at = float("-inf")
        #: The probes of the batches being sent, which hear of every 200 (rule 1).
        self._open: list[Probe] = []
        #: The MQTT sessions made so far, as last seen (MqttSession.connections).
        self._sessions = 0

    def end(self, now: float) -> None:
        """A 200, or an outage: every run ends here."""
        self._runs.clear()
        self._ended_at = now

    @contextmanager
    def watching(self, probe: Probe) -> Iterator[Probe]:
        """Tell the probe of every 200 while its batch is being sent."""
        self._open.append(probe)
        try:
            yield probe
        finally:
            self._open.remove(probe)

    def accepted(self, serial: int, now: float) -> None:
        """A 200 to the request with this send serial, as it arrives (before its rows are
        deleted: the evidence never waits on the disk)."""
        for probe in self._open:
            probe.oks.append(serial)
        self.end(now)

    def sending(self, sessions: int, now: float) -> None:
        """A request goes out on the `sessions`-th MQTT session: if the session was made again
        since the last one, the broker went away meanwhile, and the runs end (an outage)."""
        if sessions != self._sessions:
            self._sessions = sessions
            self.end(now)

    def evidence(self, probe: Probe, reply: Reply, serial: int, now: float) -> str | None:
        """Why a lone sample refused in this probe is the data's fault (rules 1 and 2, the
        word the log gives), or None: hold it. `serial`: the send serial of its request."""
        if probe.confirming:
            return "refused_again"
        if probe.took_before(serial):
            return "hub_took_others"
        run = self.persisting(reply.code, now)
        if run is None:
            return None
        announce_persisting(run, reply, now)
        return "refusal_persists"

    def storm(self, probe: Probe, now: float, note: str) -> HubStorm:
        """The storm its held suspects make: the refusal, and how far its run is from rule 2."""
        _row, reply = probe.suspects[0]
        run = self._runs.get(reply.code)
        return HubStorm(
            f"code={reply.code} message={clip(reply.message)!r}"
            f" lone_samples_refused={len(probe.suspects)} devices={len(probe.devices())}"
            f" note={note!r}{f' {run.progress(now)}' if run else ''}"
            f" dead_lettered_after='the same code in {PERSIST_TIMES} batches over"
            f" {PERSIST_S:g} s, {PERSIST_LONE_MIN} lone samples, no 200 and no outage between'"
        )

    def persisting(self, code: int, now: float) -> Run | None:
        """The run of this code if it has persisted long enough to be the data's fault."""
        run = self._runs.get(code)
        return run if run is not None and run.persists(now) else None

    def count(self, probe: Probe) -> None:
        """Add one batch's lone refusals to the runs of their codes, once per batch."""
        if probe.counted or not probe.suspects:
            return
        probe.counted = True
        for code in {reply.code for _, reply in probe.suspects}:
            rows = [row for row, reply in probe.suspects if reply.code == code]
            since = max(probe.refused_at, self._ended_at)
            run = self._runs.setdefault(code, Run(since=since))
            run.since = min(run.since, since)
            run.times += 1
            run.lone += len(rows)
            run.devices.update((row.product_key, row.device_key) for row in rows)

    def take_persisting(self, probe: Probe, now: float) -> list[Suspect]:
        """Count the batch, then take from its suspects those whose refusal persists (the
        first time a run persists, the log says so)."""
        self.count(probe)
        taken: list[Suspect] = []
        kept: list[Suspect] = []
        for row, reply in probe.suspects:
            run = self.persisting(reply.code, now)
            if run is None:
                kept.append((row, reply))
                continue
            announce_persisting(run, reply, now)
            taken.append((row, reply))
        probe.suspects = kept
        return taken


def announce_persisting(run: Run, reply: Reply, now: float) -> None:
    """Say once per run that its samples are dead-lettered, and how to get them back."""
    if run.announced:
        return
    run.announced = True
    log.warning(
        "refusals_persist code=%d message=%r batches=%d over_s=%.0f lone_samples=%d devices=%d"
        " action='lone refused samples dead-lettered as the data's fault while this lasts;"
        " once the model or the data is fixed: gatewayd queue requeue-rejected --code %d'",
        reply.code,
        clip(reply.message),
        run.times,
        now - run.since,
        run.lone,
        len(run.devices),
        reply.code,
    )


class StormLog:
    """Counts the batches put down to a storm; logs the first of a series, and its end, once
    each (on flash storage a line per retry would be a fault of its own)."""

    def __init__(self) -> None:
        self.count = 0
        self._on = False

    def storm(self, exc: HubStorm) -> None:
        self.count += 1
        if not self._on:
            self._on = True
            log.warning("hub_refuses_everything %s action='samples stay queued; backing off'", exc)

    def accepted(self) -> None:
        """A 200: the hub takes samples again."""
        if self._on:
            self._on = False
            log.info("hub_accepts_again storms=%d", self.count)
