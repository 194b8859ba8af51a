"""A seeded random fault harness around a real `gatewayd run`, and the books it keeps.

The rig is the whole path on one machine: simulated meters (pymodbus server; register 6 counts
the reads, so every sample is unique) -> the daemon as a child process -> a TCP relay -> a
private mosquitto <- the hub simulator (which records every sample it stored).

Two lanes of faults run at once, each a schedule drawn from the seed: the *link* lane kills the
daemon (-9), restarts the broker, cuts or stalls the relay, takes the Modbus server away; the
*hub* lane makes the hub drop, delay or garble replies, answer 1212 (forced, or for real by
ending a sub-device's session) or refuse samples with 1204, refuse every request with 1220 for a
while, and makes the meters answer with a Modbus exception. The link lane also plays a path that
drops the daemon's PUBLISH packets but passes its pings. Throughout the round a fourth meter is
read whose sub-device the hub never lets log in: its backlog stays parked behind the others,
who must not wait for it. The *disk* lane (long round) overwrites pages in the middle of the
live queue file, fills the queue's disk (a tmpfs) while the uplink is up, and steps the daemon's
wall clock (libfaketime, from −1 day to +50 years). Timing varies from run to run; which faults, how long and in what order does
not.

At the end the meters are switched off, the daemon drains, and the books must balance: every
sequence number a meter handed out is at the hub, or in `rejected` with the hub's reason, or was
read in the moments before a kill -9 (the open commit group) or before the Modbus server was
taken away mid-answer, or sat in the queue when its pages were overwritten (no more than the
daemon counted in `lost_corrupt`), or was read while the disk was full (no more than it counted
in `lost_disk`). Nothing else may be missing, and the queue must hold only the parked meter's
readings, none of which reached the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes

from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from gatewayd.sim.relay import Relay
from tests.support.brokers import FrontedBroker as Broker
from tests.support.child import Child
from tests.support.daemon import config_data, modbus_device, register_file, write_config
from tests.support.disk import fill_disk

METERS = (1, 2, 3)
#: A meter whose sub-device the hub refuses for the whole round (it is parked for good).
PARKED_METER = 4
INTERVAL_S = 0.2
MODBUS_TIMEOUT_S = 0.2
COMMIT_MS = 50
BATCH = 20
INFLIGHT = 2
REPLY_TIMEOUT_S = 1.5
KEEPALIVE_S = 5
GATEWAY_SECRET = "gw-secret-7f3a9c"
#: A reading taken this long before a kill may die with the daemon: the open commit group
#: (COMMIT_MS), a poll in progress, and the fsync that was under way, with room for a slow disk.
KILL_WINDOW_S = 1.0
#: A reading answered this long before the Modbus server went away may never reach the daemon.
MODBUS_WINDOW_S = 0.25

#: kind -> (lane, shortest hold, longest hold) in seconds.
FAULT_KINDS: dict[str, tuple[str, float, float]] = {
    "kill9": ("link", 0.0, 0.5),
    "broker_restart": ("link", 0.2, 2.0),
    "link_cut": ("link", 0.2, 3.0),
    "link_stall": ("link", 0.5, 8.0),  # past 1.5 x keepalive, the broker drops the client
    "link_drop_publish": ("link", 0.5, 6.0),  # pings pass, requests do not: a stalled session
    "modbus_down": ("link", 0.2, 3.0),
    "reply_drop": ("hub", 0.5, 3.0),
    "reply_delay": ("hub", 0.5, 3.0),
    "reply_garbage": ("hub", 0.5, 3.0),
    "code_1212": ("hub", 0.5, 3.0),
    "session_kick": ("hub", 0.0, 0.0),
    "code_1204": ("hub", 0.3, 1.5),
    "refuse_all": ("hub", 0.5, 3.0),  # 1220 to every data request: the hub's fault
    "modbus_exception": ("hub", 0.3, 2.0),
    "queue_damage": ("disk", 0.0, 0.0),
    "disk_full": ("disk", 0.5, 3.0),
    "clock_step": ("disk", 0.5, 3.0),
}
#: libfaketime offsets a clock step picks from (the wall clock returns to "+0" after it).
CLOCK_STEPS = ("-90s", "-1d", "+55d", "+50y")
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
DISK_BYTES = 64 << 20
#: The queue's own faults, played by the long round only: their books balance, but the
#: short CI round stays with the kinds whose timing is proven steady (see the README).
DISK_KINDS = frozenset({"queue_damage", "disk_full", "clock_step"})
#: Faults after which the hub may have stored a request whose reply never came back.
REPLY_LOSING = {"kill9", "broker_restart", "link_cut", "link_stall", "link_drop_publish"}
#: Faults that hold requests until a timeout, and so re-send once per reply timeout.
REPLY_HOLDING = {"link_stall", "link_drop_publish"}


@dataclass(frozen=True)
class Fault:
    kind: str
    gap_s: float  # quiet time before it
    hold_s: float  # how long it lasts
    detail: float = 0.0  # kind-specific: the reply delay, which meter is kicked


def schedule(seed: int, count: int, kinds: frozenset[str] | None = None) -> dict[str, list[Fault]]:
    """`count` faults drawn from the seed, split into the two lanes by kind.

    The first ones are every kind once, shuffled, so even a short round plays each of them.
    """
    rng = random.Random(seed)
    lanes: dict[str, list[Fault]] = {"link": [], "hub": [], "disk": []}
    kinds = sorted(kinds or FAULT_KINDS)
    first = rng.sample(kinds, len(kinds))
    for n in range(count):
        kind = first[n] if n < len(first) else rng.choice(kinds)
        lane, low, high = FAULT_KINDS[kind]
        if kind == "reply_delay":
            detail = rng.uniform(0.2, 0.8)
        elif kind == "clock_step":
            detail = float(rng.randrange(len(CLOCK_STEPS)))
        else:
            detail = float(rng.choice(METERS))
        lanes[lane].append(Fault(kind, rng.uniform(0.3, 1.5), rng.uniform(low, high), detail))
    return lanes


@dataclass
class Report:
    seed: int
    faults: dict[str, int]
    faults_total: int
    produced: int
    delivered: int
    duplicated: int
    duplicate_allowance: int
    rejected: int
    lost: int
    lost_at_kill: int
    lost_at_modbus_drop: int
    lost_at_damage: int
    counted_lost_corrupt: int
    lost_at_disk_full: int
    counted_lost_disk: int
    lost_unexplained: int
    queue_left: int
    parked_queued: int
    parked_delivered: int
    max_drain_lag_s: float
    daemon_starts: int
    wall_s: float
    #: Dead-lettered copies of samples the hub had already stored (its reply was lost).
    rejected_after_delivery: int = 0
    secrets_in_log: list[str] = field(default_factory=list)
    #: The first samples lost with no fault to explain it: (device, seq, read at, round start).
    unexplained_samples: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [(f"faults: {kind}", str(n)) for kind, n in sorted(self.faults.items())]
        rows += [
            ("faults injected", str(self.faults_total)),
            ("daemon starts", str(self.daemon_starts)),
            ("samples produced (meter reads)", str(self.produced)),
            ("delivered (unique)", str(self.delivered)),
            ("duplicated at the hub", f"{self.duplicated} (allowed {self.duplicate_allowance})"),
            ("rejected (1204/1220, kept with reason)", str(self.rejected)),
            ("  copies rejected after the hub stored them", str(self.rejected_after_delivery)),
            ("lost in a kill -9 window", str(self.lost_at_kill)),
            ("lost as Modbus server went away", str(self.lost_at_modbus_drop)),
            (
                "lost to queue damage (counted)",
                f"{self.lost_at_damage} ({self.counted_lost_corrupt})",
            ),
            (
                "lost to a full disk (counted)",
                f"{self.lost_at_disk_full} ({self.counted_lost_disk})",
            ),
            ("lost otherwise", str(self.lost_unexplained)),
            ("left in queue (not the parked meter's)", str(self.queue_left)),
            ("parked meter: kept in queue", str(self.parked_queued)),
            ("parked meter: reached the hub", str(self.parked_delivered)),
            ("max drain lag (s)", f"{self.max_drain_lag_s:.1f}"),
            ("wall time (s)", f"{self.wall_s:.0f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"chaos round, seed {self.seed}", "-" * (width + 12)]
        lines += [f"{name:<{width}}  {value:>9}" for name, value in rows]
        return "\n".join(lines)


@dataclass
class Books:
    """When things happened during the round, in the test process's monotonic clock."""

    kills: list[float] = field(default_factory=list)
    modbus_drops: list[float] = field(default_factory=list)
    #: Readings that were in the queue when its pages were overwritten.
    in_queue_at_damage: set[tuple[str, int]] = field(default_factory=set)
    #: When pages were overwritten (rows committed in the moment before may miss the snapshot).
    damages: list[float] = field(default_factory=list)
    #: (start, end) of each full-disk episode.
    disk_full: list[tuple[float, float]] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    duplicate_allowance: int = 0


class ChaosRig:
    """Everything on the path, and the fault actions; use `run()`."""

    def __init__(
        self, workdir: Path, broker: Broker, seed: int, kinds: frozenset[str] | None = None
    ) -> None:
        self.workdir = workdir
        self.kinds = kinds or frozenset(FAULT_KINDS) - DISK_KINDS
        self.broker = broker
        self.seed = seed
        self.disk = workdir / "disk"  # a tmpfs: the queue's own small disk
        self.db = self.disk / "queue.db"
        self.clock_offset = workdir / "faketime"
        self.log_path = workdir / "gatewayd.log"
        self.meters = ModbusSimulator(unit_ids=(*METERS, PARKED_METER))
        self.relay = Relay("127.0.0.1", broker.port)
        self.hub = HubSimulator("127.0.0.1", broker.backend_port)
        broker.judge = self.hub.check_login  # the strict hub checks the gateway's CONNECT
        self.books = Books()
        self.child: Child | None = None
        self._broker_lock = asyncio.Lock()

    def _config(self, relay_port: int) -> Path:
        devices = [
            {
                **modbus_device(f"m{uid}", self.meters.port, uid, meter_points(), INTERVAL_S),
                "device_secret": f"secret-of-m{uid}",
            }
            for uid in (*METERS, PARKED_METER)
        ]
        for device in devices:
            device["modbus"]["timeout_s"] = MODBUS_TIMEOUT_S
        data = config_data(
            self.workdir,
            relay_port,
            devices,
            gateway={"device_secret": GATEWAY_SECRET},
            mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "keepalive_s": KEEPALIVE_S},
            queue={"path": str(self.db), "commit_interval_ms": COMMIT_MS},
            forward={
                "batch_max_samples": BATCH,
                "inflight": INFLIGHT,
                "reply_timeout_s": REPLY_TIMEOUT_S,
                "retry_min_s": 0.1,
                "retry_max_s": 0.5,
            },
        )
        return write_config(self.workdir / "config.toml", data)

    # --- the faults ---------------------------------------------------------------------------

    async def _broker_restart(self, hold_s: float) -> None:
        async with self._broker_lock:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.sleep(hold_s)
            await asyncio.to_thread(self.broker.start)

    async def _modbus_down(self, hold_s: float) -> None:
        self.books.modbus_drops.append(time.monotonic())
        await self.meters.stop()
        await asyncio.sleep(hold_s)
        await self.meters.start()

    async def _hub_fault(self, hold_s: float, **faults: Any) -> None:
        self.hub.set_faults(**faults)
        try:
            await asyncio.sleep(hold_s)
        finally:
            self.hub.set_faults(
                drop=False, garbage=False, delay_s=0.0, reply_code=200, point_codes={}
            )

    def _queue_rows(self) -> set[tuple[str, int]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            try:
                rows = conn.execute("SELECT device_key, points FROM samples").fetchall()
            except sqlite3.DatabaseError:
                return set()
        return {(dk, int(json.loads(points)["Seq"])) for dk, points in rows}

    def _damage_queue(self) -> None:
        """Overwrite two leaf pages of `samples` in the middle of the live file."""
        self.books.in_queue_at_damage |= self._queue_rows()
        self.books.damages.append(time.monotonic())
        # Into the file first: a page whose newer copy sits in the WAL would hide the damage.
        with (
            contextlib.closing(sqlite3.connect(self.db, timeout=5)) as conn,
            contextlib.suppress(sqlite3.Error),
        ):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            try:
                pages = [
                    row[0]
                    for row in conn.execute(
                        "SELECT pageno FROM dbstat WHERE name = 'samples'"
                        " AND pagetype = 'leaf' ORDER BY path"
                    )
                ]
            except sqlite3.DatabaseError:
                return
        size = self.db.stat().st_size // 4096
        middle = [p for p in pages[len(pages) // 3 : len(pages) // 3 + 2] if p <= size]
        rng = random.Random(self.seed + len(self.books.in_queue_at_damage))
        with self.db.open("r+b") as handle:
            for page in middle:
                handle.seek((page - 1) * 4096)
                handle.write(rng.randbytes(4096))

    async def _fill_disk(self, hold_s: float) -> None:
        filler = self.disk / "filler"
        start = time.monotonic()
        await asyncio.to_thread(fill_disk, filler)
        await asyncio.sleep(hold_s)
        filler.unlink()
        self.books.disk_full.append((start, time.monotonic()))

    async def _step_clock(self, hold_s: float, step: str) -> None:
        self.clock_offset.write_text(step + "\n")
        await asyncio.sleep(hold_s)
        self.clock_offset.write_text("+0\n")

    async def inject(self, fault: Fault) -> None:
        assert self.child is not None
        kind, hold = fault.kind, fault.hold_s
        if kind == "kill9":
            self.books.kills.append(time.monotonic())
            await self.child.kill()
            await asyncio.sleep(hold)
            await self.child.start()
        elif kind == "broker_restart":
            await self._broker_restart(hold)
        elif kind == "link_cut":
            self.relay.cut()
            await asyncio.sleep(hold)
            self.relay.restore()
        elif kind == "link_stall":
            self.relay.stall()
            await asyncio.sleep(hold)
            self.relay.restore()
        elif kind == "link_drop_publish":
            self.relay.drop_publish()
            await asyncio.sleep(hold)
            self.relay.restore()
        elif kind == "modbus_down":
            await self._modbus_down(hold)
        elif kind == "reply_drop":
            await self._hub_fault(hold, drop=True)
        elif kind == "reply_delay":
            await self._hub_fault(hold, delay_s=fault.detail)
        elif kind == "reply_garbage":
            await self._hub_fault(hold, garbage=True)
        elif kind == "code_1212":
            await self._hub_fault(hold, reply_code=1212)
        elif kind == "session_kick":
            self.hub.kick("subPK", f"m{int(fault.detail)}")
        elif kind == "code_1204":
            await self._hub_fault(hold, point_codes={"Seq": 1204})
        elif kind == "refuse_all":
            await self._hub_fault(hold, reply_code=1220)
        elif kind == "modbus_exception":
            self.meters.exception = ExcCodes.DEVICE_BUSY
            await asyncio.sleep(hold)
            self.meters.exception = None
        elif kind == "queue_damage":
            await asyncio.to_thread(self._damage_queue)
        elif kind == "disk_full":
            await self._fill_disk(hold)
        elif kind == "clock_step":
            await self._step_clock(hold, CLOCK_STEPS[int(fault.detail)])
        else:
            raise ValueError(f"unknown fault {kind}")
        self.books.injected[kind] += 1
        if kind in REPLY_LOSING:
            # In-flight requests the hub stored but whose replies were lost are sent again; a
            # stalled link times out and re-sends once per reply timeout while it lasts.
            rounds = 1 + math.ceil((hold + 1.0) / REPLY_TIMEOUT_S) if kind in REPLY_HOLDING else 1
            self.books.duplicate_allowance += rounds * BATCH * INFLIGHT

    async def _lane(self, faults: list[Fault]) -> None:
        for fault in faults:
            await asyncio.sleep(fault.gap_s)
            await self.inject(fault)

    # --- the round ----------------------------------------------------------------------------

    async def run(self, fault_count: int, drain_timeout_s: float = 90.0) -> Report:
        """The round, with the queue on its own small tmpfs (unmounted whatever happens)."""
        self.disk.mkdir(exist_ok=True)
        if "disk_full" not in self.kinds:
            return await self._round(fault_count, drain_timeout_s)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(self.disk)]
        await asyncio.to_thread(subprocess.run, mount, check=True)
        try:
            return await self._round(fault_count, drain_timeout_s)
        finally:
            await asyncio.to_thread(subprocess.run, ["umount", "-l", str(self.disk)], check=False)

    async def _round(self, fault_count: int, drain_timeout_s: float) -> Report:
        started = time.monotonic()
        self.clock_offset.write_text("+0\n")
        await self.meters.start()
        relay_port = await self.relay.start()
        await asyncio.to_thread(self.hub.start)
        config = self._config(relay_port)
        register_file(self.hub, config)  # gateway, sub-devices and model, as in the console
        self.hub.deny_login.add(("subPK", f"m{PARKED_METER}"))  # parked for good
        self.child = Child(
            config,
            self.workdir / "notify.sock",
            log_path=self.log_path,
            log_level="INFO",
            env={
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME_TIMESTAMP_FILE": str(self.clock_offset),
                "FAKETIME_CACHE_DURATION": "1",
                "DONT_FAKE_MONOTONIC": "1",
            }
            if "clock_step" in self.kinds
            else None,
        )
        lanes = schedule(self.seed, fault_count, self.kinds)
        try:
            await self.child.start()
            await asyncio.gather(*(self._lane(faults) for faults in lanes.values()))
            # Switch the meters off, so the queue can run dry, and let the daemon drain.
            await self.meters.stop()
            self.books.modbus_drops.append(time.monotonic())
            await self._wait_drained(drain_timeout_s)
            status = await self.child.stop()
            assert status == 0, f"gatewayd exited with {status}"
        finally:
            if self.child.alive:
                await self.child.stop()
            self.relay.restore()
            await self.relay.stop()
            await asyncio.to_thread(self.hub.stop)
            await self.meters.stop()
        return self._report(time.monotonic() - started)

    def _queued(self, parked: bool = False) -> int:
        """Rows in the queue of the balanced meters, or (parked=True) of the parked one."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            test = "=" if parked else "!="
            return int(
                conn.execute(
                    f"SELECT count(*) FROM samples WHERE device_key {test} ?",
                    (f"m{PARKED_METER}",),
                ).fetchone()[0]
            )

    async def _wait_drained(self, timeout_s: float) -> None:
        """Until the queue is empty, and still empty once a read that was under way when the
        meters stopped has been committed (a poll's timeout plus a few commit intervals)."""
        deadline = time.monotonic() + timeout_s
        await self._until_empty(deadline, timeout_s)
        await asyncio.sleep(MODBUS_TIMEOUT_S + 4 * COMMIT_MS / 1000)
        await self._until_empty(deadline, timeout_s)

    async def _until_empty(self, deadline: float, timeout_s: float) -> None:
        while self._queued():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self._queued()} samples still queued after {timeout_s} s")
            # Woken by the hub storing something, or re-checked at least twice a second.
            seen = self.hub.delivered_count()
            await asyncio.to_thread(self.hub.wait_for, lambda h, n=seen: len(h.deliveries) > n, 0.5)

    # --- the books ----------------------------------------------------------------------------

    def _rejected(self) -> list[tuple[str, int, int, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT device_key, points, code, message FROM rejected").fetchall()
        return [
            (dk, json.loads(points)["Seq"], code, message) for dk, points, code, message in rows
        ]

    def _counter(self, key: str) -> int:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _report(self, wall_s: float) -> Report:
        produced = {
            (f"m{uid}", seq)
            for uid, m in self.meters.meters.items()
            if uid != PARKED_METER
            for seq in range(1, m.reads + 1)
        }
        parked = f"m{PARKED_METER}"
        parked_delivered = sum(d.device_key == parked for d in self.hub.deliveries)
        deliveries = [
            d for d in self.hub.deliveries if "Seq" in d.points and d.device_key != parked
        ]
        delivered = {(d.device_key, int(d.points["Seq"])) for d in deliveries}
        rejected_rows = self._rejected()
        # Dead letters carry the code the hub was made to answer and its reason: 1204 bursts,
        # and 1220 only if refuse-everything bursts went on for 60 s with no 200 and no outage
        # in between (forward/refusal_evidence.py, PERSIST_S; the bursts here last <= 3 s).
        assert all(code in (1204, 1220) and message for _, _, code, message in rejected_rows), (
            "a rejected sample without the hub's code and reason"
        )
        # At least once: a batch the hub stored whose reply was lost is sent again, and if the
        # hub then refuses it (a 1204 burst) the copy is dead-lettered although the hub has the
        # sample. Those count as delivered, once; the overlap is shown on its own line.
        rejected_all = {(dk, seq) for dk, seq, _, _ in rejected_rows}
        rejected = rejected_all - delivered
        lost = produced - delivered - rejected
        at_kill, at_drop, at_damage, at_full, unexplained = 0, 0, 0, 0, 0
        unexplained_samples: list[str] = []
        for device, seq in sorted(lost):
            read_at = self.meters.meters[int(device[1:])].read_at[seq - 1]
            if any(k - KILL_WINDOW_S <= read_at <= k + 0.05 for k in self.books.kills):
                at_kill += 1
            elif (device, seq) in self.books.in_queue_at_damage or any(
                d - KILL_WINDOW_S <= read_at <= d + 0.05 for d in self.books.damages
            ):
                at_damage += 1
            elif any(a <= read_at <= b + 0.5 for a, b in self.books.disk_full):
                at_full += 1
            elif any(d - MODBUS_WINDOW_S <= read_at <= d + 0.05 for d in self.books.modbus_drops):
                at_drop += 1
            else:
                unexplained += 1
                if len(unexplained_samples) < 10:
                    unexplained_samples.append(f"{device} seq={seq} read_at={read_at:.3f}")
        log_text = self.log_path.read_text(errors="replace")
        secrets = [GATEWAY_SECRET] + [f"secret-of-m{uid}" for uid in METERS]
        return Report(
            seed=self.seed,
            faults=dict(self.books.injected),
            faults_total=sum(self.books.injected.values()),
            produced=len(produced),
            delivered=len(delivered & produced),
            duplicated=len(deliveries) - len(delivered),
            duplicate_allowance=self.books.duplicate_allowance,
            rejected=len(rejected),
            rejected_after_delivery=len(rejected_all & delivered),
            lost=len(lost),
            lost_at_kill=at_kill,
            lost_at_modbus_drop=at_drop,
            lost_at_damage=at_damage,
            counted_lost_corrupt=self._counter("lost_corrupt"),
            lost_at_disk_full=at_full,
            counted_lost_disk=self._counter("lost_disk"),
            lost_unexplained=unexplained,
            queue_left=self._queued(),
            parked_queued=self._queued(parked=True),
            parked_delivered=parked_delivered,
            max_drain_lag_s=max((d.received_s - d.ts_ms / 1000 for d in deliveries), default=0.0),
            daemon_starts=self.child.starts if self.child else 0,
            wall_s=wall_s,
            secrets_in_log=[s for s in secrets if s in log_text],
            unexplained_samples=unexplained_samples,
        )


def write_report(report: Report, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
