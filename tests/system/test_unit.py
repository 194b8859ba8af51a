"""The systemd unit under a real systemd, installed by following the README as written.

One boot of Debian 12's systemd 252 in a container (systemd-nspawn) sharing the host's network:
the README's systemd steps run line by line, against a mosquitto, the hub simulator and the
Modbus simulator on the host. Then what only a real service manager can show: READY=1 and
STATUS=, a reload, the watchdog, a bad config that is not restarted, a graceful stop, NTP trust
under the unit's sandbox, and the `systemd-analyze security` score the README records.

It needs root, debootstrap and systemd-nspawn; the root tree (~3 min to build) and the wheels are
cached under /var/tmp. Where they are missing the test is skipped, except in CI
(`GATEWAYD_SYSTEM_TEST=require`, set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import meter_points
from tests.support.brokers import Broker
from tests.support.daemon import write_config
from tests.system.container import Container, remove_tree
from tests.system.install import REPO, copy_checkout, readme_systemd_steps, wheelhouse
from tests.system.rootfs import cached_rootfs, clone

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

GATEWAY_SECRET = "sys-test-gateway-secret"
WHEELS_IN_CONTAINER = "/var/cache/gatewayd-wheels"
CHECKOUT_IN_CONTAINER = "/root/gatewayd"
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
# Shortened for the test (a drop-in), so a hung daemon is restarted in seconds, not 30 s.
DROP_IN = "[Service]\nWatchdogSec=4s\nTimeoutAbortSec=3s\nRestartSec=1s\n"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    missing = _missing()
    if missing:
        if os.environ.get("GATEWAYD_SYSTEM_TEST") == "require":
            pytest.fail(f"the real-systemd test cannot run here: {missing}")
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("systemd")
    # On the same file system as the cache, so the copy can share blocks where it can.
    root = Path(f"/var/tmp/gatewayd-systemtest/boot-{os.getpid()}")
    remove_tree(root)
    root.mkdir(parents=True)
    box = Container(root, base / "nspawn.log")
    try:
        clone(cached_rootfs(), root)
        shutil.copytree(wheelhouse(), root / WHEELS_IN_CONTAINER.lstrip("/"))
        copy_checkout(root / CHECKOUT_IN_CONTAINER.lstrip("/"))
        # The README's lines start with sudo; a root shell in a minimal Debian has none.
        shim = root / "usr/local/bin/sudo"
        shim.write_text('#!/bin/sh\nexec env "$@"\n')
        shim.chmod(0o755)
        box.boot()
        yield box
    finally:
        box.poweroff()
        remove_tree(root)


@pytest.fixture(scope="module")
def host_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.support.brokers import make_broker

    work = tmp_path_factory.mktemp("host")
    broker: Broker = make_broker(work)
    broker.start()
    hub = HubSimulator("127.0.0.1", broker.port)
    for unit in (1, 2):  # sub-devices must log in with their secrets, as on the real hub
        hub.register("sysSub", f"meter00{unit}", f"sys-test-meter-secret-{unit}")
    modbus_log = work / "modbus.log"
    with modbus_log.open("w") as log:  # a file, not a pipe: its logs never fill a buffer
        modbus = subprocess.Popen(
            [sys.executable, "-m", "gatewayd", "sim", "modbus", "--port", "0", "--units", "1,2"],
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    try:
        hub.start()
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline and modbus.poll() is None:
            found = re.search(r"modbus simulator on [\d.]+:(\d+)", modbus_log.read_text())
            time.sleep(0.1)
        assert found, f"the Modbus simulator did not say its port: {modbus_log.read_text()}"
        port = int(found.group(1))
        yield {"broker": broker, "hub": hub, "modbus_port": port, "work": work}
    finally:
        modbus.terminate()
        modbus.wait(10)
        hub.stop()
        broker.stop()


def operator_config(work: Path, mqtt_port: int, modbus_port: int, units: tuple[int, ...]) -> str:
    devices = [
        {
            "name": f"meter-{u}",
            "product_key": "sysSub",
            "device_key": f"meter00{u}",
            "device_secret": f"sys-test-meter-secret-{u}",
            "interval_s": 1.0,
            "modbus": {"host": "127.0.0.1", "port": modbus_port, "unit_id": u},
            "points": meter_points(),
        }
        for u in units
    ]
    data = {
        "gateway": {
            "product_key": "sysGw",
            "device_key": "gw-sys",
            "device_secret_credential": "gateway",
        },
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "reconnect_min_s": 1},
        "forward": {"reply_timeout_s": 5},
        "clock": {"trust": "ntp"},
        "devices": devices,
    }
    return write_config(work / "config.toml", data).read_text()


def install_as_the_readme_says(box: Container, config: str) -> list[str]:
    """Run the README's lines; returns them (a test of the README itself)."""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS_IN_CONTAINER}
    steps = readme_systemd_steps()
    for line in steps:
        if line.startswith("journalctl") and " -f" in line:
            continue  # follows for ever; the journal is read below
        if "systemctl enable --now" in line:
            box.sh("mkdir -p /etc/systemd/system/gatewayd.service.d")
            box.sh("cat > /etc/systemd/system/gatewayd.service.d/test.conf", stdin=DROP_IN)
        stdin = GATEWAY_SECRET + "\n" if "credentials/gateway'" in line else None
        done = box.sh(line, cwd=CHECKOUT_IN_CONTAINER, env=env, stdin=stdin, timeout=600)
        if "gatewayd check" in line:  # run as root: it must also vouch for the service user
            assert "warning" not in done.stderr, done.stderr
        if "# then edit it" in line:
            box.sh("cat > /etc/gatewayd/config.toml", stdin=config)
    return steps


def deliveries_from(hub: HubSimulator, device: str, after: int = 0) -> int:
    with hub._cond:
        return sum(1 for d in hub.deliveries[after:] if d.device_key == device)


def test_the_unit_under_a_real_systemd(container: Container, host_side: dict[str, Any]) -> None:
    box, hub = container, host_side["hub"]
    work, mqtt_port, modbus_port = (
        host_side["work"],
        host_side["broker"].port,
        host_side["modbus_port"],
    )
    box.sh(f"rm -f {TIMESYNC_FLAG}")  # not synchronised: with trust = "ntp" readings are held

    steps = install_as_the_readme_says(box, operator_config(work, mqtt_port, modbus_port, (1,)))
    assert any("enable --now gatewayd" in s for s in steps)

    # Type=notify: "active" only after READY=1; STATUS= shows in systemctl status.
    box.wait_for("gatewayd", 60, ActiveState="active", SubState="running")
    shown = box.show("gatewayd", "StatusText", "MainPID", "NRestarts", "User")
    assert shown["StatusText"], shown
    assert shown["User"] == "gatewayd"
    # Polled and connected, yet nothing sent: held while the clock is not known to be in sync.
    deadline = time.monotonic() + 60
    while not re.search(r"pending=([3-9]|\d\d+) uplink=connected", shown["StatusText"]):
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
        shown = box.show("gatewayd", "StatusText", "MainPID", "NRestarts", "User")
    assert deliveries_from(hub, "meter001") == 0, shown
    # timesyncd's flag is what the daemon reads where ProtectClock= refuses adjtimex.
    box.sh(f"mkdir -p {Path(TIMESYNC_FLAG).parent} && touch {TIMESYNC_FLAG}")
    assert hub.wait_for(lambda h: deliveries_from(h, "meter001") >= 3, 60), box.journal("gatewayd")

    # `check` runs as root, which reads anything: it says when the service user could not.
    box.sh("chgrp root /etc/gatewayd")
    seen = box.sh("/opt/gatewayd/venv/bin/gatewayd check -c /etc/gatewayd/config.toml")
    box.sh("chgrp gatewayd /etc/gatewayd")
    assert "the service user 'gatewayd' cannot enter /etc/gatewayd" in seen.stderr, seen.stderr

    # A reload applies a device change without a restart.
    box.sh(
        "cat > /etc/gatewayd/config.toml",
        stdin=operator_config(work, mqtt_port, modbus_port, (1, 2)),
    )
    box.sh("systemctl reload gatewayd")
    assert hub.wait_for(lambda h: deliveries_from(h, "meter002") >= 2, 60), box.journal("gatewayd")
    assert box.show("gatewayd", "MainPID")["MainPID"] == shown["MainPID"]

    # A hung daemon (SIGSTOP) stops its heartbeat: systemd restarts it after WatchdogSec.
    box.sh(f"kill -STOP {shown['MainPID']}")
    box.wait_for("gatewayd", 60, NRestarts="1", ActiveState="active", SubState="running")
    after = box.show("gatewayd", "MainPID")
    assert after["MainPID"] != shown["MainPID"]
    assert "watchdog" in box.journal("gatewayd").lower()

    # A graceful stop, well within TimeoutStopSec.
    started = time.monotonic()
    box.sh("systemctl stop gatewayd", timeout=60)
    took = time.monotonic() - started
    stopped = box.show("gatewayd", "Result", "ExecMainStatus", "TimeoutStopUSec")
    assert stopped["Result"] == "success" and stopped["ExecMainStatus"] == "0", stopped
    assert took < 30, took
    assert "stopped pending=" in box.journal("gatewayd")

    # A bad config ends in exit 78, and is not restarted.
    box.sh(
        "cat > /etc/gatewayd/config.toml",
        stdin=operator_config(work, mqtt_port, modbus_port, (1,)).replace('"float32"', '"f32"', 1),
    )
    box.sh("systemctl start gatewayd", check=False)
    box.wait_for("gatewayd", 30, ActiveState="failed", ExecMainStatus="78")
    failed = box.show("gatewayd", "NRestarts")
    time.sleep(3)  # RestartSec is 1 s in the drop-in: a restart would have happened by now
    again = box.show("gatewayd", "ActiveState", "NRestarts")
    assert again["ActiveState"] == "failed" and again["NRestarts"] == failed["NRestarts"], again
    assert "devices[0] (meter-1).points[0] (Power).type" in box.journal("gatewayd")

    # The sandbox's score, as the README records it.
    score = box.sh("systemd-analyze security gatewayd --no-pager", check=False).stdout
    found = re.search(r"Overall exposure level for gatewayd\.service: ([\d.]+) (\w+)", score)
    assert found, score
    readme = (REPO / "README.md").read_text()
    exposed = "\n".join(line for line in score.splitlines() if "✗" in line)
    recorded = f"`systemd-analyze security gatewayd`: {found.group(1)} {found.group(2)}"
    assert recorded in readme, f"{recorded}, not in the README; exposed:\n{exposed}"
