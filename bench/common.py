"""What every benchmark needs: a private broker, the far end, a pre-filled queue, the daemon as
a child process with its RSS and CPU watched, medians, a table and a JSON file.

The daemon always runs as its own process (`gatewayd run`), as it does on a gateway: figures
then include everything it does, and nothing the benchmark itself does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatewayd.model import Sample  # noqa: E402
from gatewayd.queue.store import open_store  # noqa: E402
from gatewayd.sim.mosquitto import MosquittoBroker  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POINTS = 10
DEVICES = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": mosquitto.splitlines()[0] if mosquitto else "",
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_json(name: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    return path


def print_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Columns are (key, header); numbers are right-aligned with thousands separators."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    cells = [[cell(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [
        max(len(header), *(len(r[i]) for r in cells)) if cells else len(header)
        for i, (_, header) in enumerate(columns)
    ]
    print(f"\n{title}")
    print("  ".join(f"{h:>{w}}" for (_, h), w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(f"{c:>{w}}" for c, w in zip(r, widths, strict=True)), flush=True)


def sample(i: int, base_ms: int) -> Sample:
    """Sample i of a backlog: 10 float points, 100 sub-devices in turn, 1 ms apart."""
    points = {f"P{k}": round(i * 0.001 + k, 3) for k in range(POINTS)}
    return Sample("benchPK", f"dev{i % DEVICES:03d}", base_ms + i, points)


def prefill(path: Path, n: int, age_s: float = 3600.0, chunk: int = 50_000) -> None:
    """A queue of n samples through the daemon's own insert path (fsync off: it is set-up).

    Samples are 1 ms apart and the newest is `age_s` old when the file is built, so a backlog
    of any size lies wholly in the past (10 M samples span 2.8 hours)."""
    store = open_store(path, "off", 0)
    base = int(time.time() * 1000) - int(age_s * 1000) - n
    try:
        for start in range(0, n, chunk):
            store.insert([sample(i, base) for i in range(start, min(n, start + chunk))])
    finally:
        store.conn.close()


CACHE = Path("/var/tmp/gatewayd-bench-cache")


def template(n: int) -> Path:
    """A pre-filled queue of n samples, built once and kept in /var/tmp between runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"queue-{n}-past.db"  # "-past": older caches held samples up to 1.8 h ahead
    if not path.exists():
        started = time.monotonic()
        partial = CACHE / f"queue-{n}-past.partial.db"
        partial.unlink(missing_ok=True)
        prefill(partial, n)
        partial.rename(path)
        print(f"pre-filled {n:,} samples in {time.monotonic() - started:.0f} s", flush=True)
    open_store(path, "off", 0).conn.close()  # a cached file gets this version's migrations once
    return path


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    # /var/tmp is disk-backed on Debian; /tmp may be a RAM disk, which would flatter fsyncs.
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-", dir=base) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def broker(folder: Path) -> Iterator[MosquittoBroker]:
    # No cap on messages queued for a slow subscriber (default 1000, beyond which mosquitto
    # drops QoS 1 messages): the bare loops publish far faster than the hub can read.
    instance = MosquittoBroker(folder, extra="max_queued_messages 0\n")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


class FarEnd:
    """bench/hub.py in its own process: the hub simulator, or a bare counting subscriber."""

    def __init__(
        self, port: int, expect: int, bare: bool = False, record: Path | None = None
    ) -> None:
        args = [sys.executable, str(ROOT / "bench" / "hub.py"), "--port", str(port)]
        args += ["--expect", str(expect)] + (["--bare"] if bare else [])
        args += ["--record", str(record)] if record is not None else []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the far end did not start")

    def result(self, timeout_s: float = 3600) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.wait(timeout_s)
        result = dict(json.loads(line))
        if result.get("timed_out"):
            raise RuntimeError(f"the far end gave up waiting: {result}")
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def write_config(path: Path, sections: dict[str, dict[str, Any]], devices: str = "") -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n" + devices)
    return path


def daemon_sections(folder: Path, broker_port: int, **forward: Any) -> dict[str, dict[str, Any]]:
    return {
        "gateway": {"product_key": "gwPK", "device_key": "gw", "device_secret": "bench"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "queue": {
            "path": str(folder / "queue.db"),
            "synchronous": "full",
            "max_bytes": 1 << 36,  # the bounds are not what is measured here
            "max_age_s": 10 * 365 * 86400,
        },
        "forward": {"reply_timeout_s": 60, **forward},
    }


@dataclass
class Usage:
    peak_rss_kb: int = 0
    rss_kb: list[int] = field(default_factory=list)
    cpu_s: float = 0.0


class Daemon:
    """`gatewayd run -c CONFIG` with READY awaited over NOTIFY_SOCKET; RSS sampled in a thread."""

    def __init__(self, config: Path, folder: Path, cgroup: Path | None = None) -> None:
        """`cgroup`: a cgroup v1 folder the daemon joins before it execs (a CPU quota)."""
        self.config = config
        self.cgroup = cgroup
        self.notify = folder / "notify.sock"
        self.usage = Usage()
        self.started_s = 0.0
        self.ready_s = 0.0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._watch: threading.Thread | None = None

    def start(self, timeout_s: float = 120) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.notify.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.notify))
        self._sock.settimeout(timeout_s)
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify)}
        self.started_s = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gatewayd", "run", "-c", str(self.config)],
            env=env,
            stderr=subprocess.DEVNULL,
            preexec_fn=self._join_cgroup if self.cgroup is not None else None,
        )
        while b"READY=1" not in self._sock.recv(4096):
            pass
        self.ready_s = time.monotonic()
        self._watch = threading.Thread(target=self._sample_usage, daemon=True)
        self._watch.start()

    def _join_cgroup(self) -> None:
        assert self.cgroup is not None
        (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _sample_usage(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.2):
            self._drain_notify()  # watchdog pings, as systemd would read them
            with contextlib.suppress(OSError):
                fields = dict(
                    line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
                )
                self.usage.rss_kb.append(int(fields["VmRSS"].split()[0]))
                self.usage.peak_rss_kb = int(fields["VmHWM"].split()[0])

    def _drain_notify(self) -> None:
        if self._sock is None:
            return
        self._sock.setblocking(False)
        with contextlib.suppress(OSError):
            while self._sock.recv(4096):
                pass

    def cpu_s(self) -> float:
        """User plus system CPU time the daemon used so far."""
        parts = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self.usage.cpu_s = self.cpu_s()
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._sock is not None:
            self._sock.close()


@contextlib.contextmanager
def cpu_quota(percent: float) -> Iterator[Path]:
    """A cgroup v1 `cpu` child capped at `percent` of one core (root only); removed after."""
    base = Path("/sys/fs/cgroup/cpu")
    if not (base / "cpu.cfs_quota_us").exists():
        raise RuntimeError("no cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    group = base / f"gatewayd-bench-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(int(percent * 1000)))
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # a process still in it goes back to the root
                (base / "cgroup.procs").write_text(pid)
        group.rmdir()


def throttled_s(group: Path) -> float:
    """Seconds the group's tasks were held back by the quota so far."""
    stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
    return int(stat.get("throttled_time", 0)) / 1e9


def copy_queue(template: Path, target: Path) -> Path:
    shutil.copyfile(template, target)
    return target


@contextlib.contextmanager
def modbus_farm(devices: int) -> Iterator[list[Any]]:
    """`devices` simulated Modbus TCP meters in a process of their own (bench/modbus_farm.py);
    yields what it prints first (their ports), stops it on the way out."""
    farm = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "modbus_farm.py"), "--devices", str(devices)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert farm.stdout is not None and farm.stdin is not None
    try:
        yield json.loads(farm.stdout.readline())
    finally:
        farm.stdin.close()
        farm.wait(30)


class LinkProcess:
    """gatewayd/sim/link.py in its own process, between a client and `target` (a broker port).

    Its counters (bytes carried per direction) are read every `stats_every_s` into `history`
    (None: only once, when it stops); `stop()` returns the last of them."""

    def __init__(
        self, target: int, rate_bps: int, rtt_ms: int, stats_every_s: float | None = 0.5
    ) -> None:
        args = ["--target-port", str(target), "--rate-bps", str(rate_bps), "--rtt-ms", str(rtt_ms)]
        if stats_every_s is not None:
            args += ["--stats-every-s", str(stats_every_s)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gatewayd.sim.link", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.history: list[dict[str, float]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.history.append(json.loads(line))

    def up_bytes_between(self, t0: float, t1: float) -> float:
        """Upstream bytes between two wall-clock times (as of the readings before each)."""

        def at(t: float) -> float:
            before = [h for h in self.history if "t" in h and h["t"] <= t]
            return before[-1]["up_bytes"] if before else 0.0

        return at(t1) - at(t0)

    def stop(self) -> dict[str, float]:
        """Stop it; its counters at the end."""
        self.proc.terminate()
        self.proc.wait(30)
        self._reader.join(5)
        return self.history[-1] if self.history else {}
