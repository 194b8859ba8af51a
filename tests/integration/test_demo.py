"""`gatewayd demo` as a person runs it: a real subprocess, read line by line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


def start_demo(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "gatewayd", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.fixture
def demo_proc():  # type: ignore[no-untyped-def]
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        procs.append(start_demo(*args))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.timeout(90)
def test_demo_shows_an_outage_and_a_full_drain(demo_proc) -> None:  # type: ignore[no-untyped-def]
    proc = demo_proc("--outage-s", "3")
    out, _ = proc.communicate(timeout=80)
    assert proc.returncode == 0, out
    assert "uplink cut" in out and "uplink restored" in out
    assert "no reading lost" in out
    assert "Traceback" not in out
    # The queue really grew during the outage and was drained afterwards.
    queued = [
        int(line.split("queued=")[1].split()[0]) for line in out.splitlines() if "queued=" in line
    ]
    assert max(queued) >= 6 and queued[-1] == 0


@pytest.mark.timeout(60)
def test_ctrl_c_ends_the_demo_cleanly(demo_proc) -> None:  # type: ignore[no-untyped-def]
    proc = demo_proc()
    assert proc.stdout is not None
    for line in proc.stdout:
        if "uplink cut" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(15) == 130
    assert "interrupted" in rest and "Traceback" not in rest
