"""A booted systemd in a container: systemd-nspawn on a private copy of the cached root tree.

The container shares the host's network (no `--private-network`), so the daemon inside reaches
the broker and the Modbus simulator the test runs on the host's loopback. Commands run inside
through `nsenter` into the container's namespaces, as root, as an operator's shell would.
`--system-call-filter=@clock` lets the container's own services use the clock calls (nspawn
filters them otherwise), so what the unit's `ProtectClock=` does is the unit's doing alone.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path


class Container:
    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout_s: float = 120) -> None:
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    f"--directory={self.root}",
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--system-call-filter=@clock",
                    "--console=passive",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while not self.leader:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"container did not start: {self.log.read_text()[-2000:]}")
            # nspawn forks helpers first; the container's PID 1 is the child that runs systemd.
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
            with contextlib.suppress(OSError, ValueError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        self.leader = int(pid)
            time.sleep(0.1)
        # systemctl answers once PID 1 listens on its socket; until then it fails at once.
        while True:
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout_s)
            if state.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state.stdout.strip() not in ("running", "degraded"):
            raise RuntimeError(
                f"boot ended {state.stdout.strip()!r} {state.stderr}: {self.failed_units()}"
            )

    def sh(
        self,
        script: str,
        *,
        check: bool = True,
        timeout: float = 60,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str = "/",
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell line inside the container as root; output as text."""
        assert self.leader, "boot() first"
        env_args = [f"{k}={v}" for k, v in (env or {}).items()]
        result = subprocess.run(
            [
                "nsenter",
                f"--target={self.leader}",
                "--all",
                f"--wdns={cwd}",
                "--",
                "/usr/bin/env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "HOME=/root",
                *env_args,
                "/bin/sh",
                "-c",
                script,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{script}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit: str, timeout_s: float, **wanted: str) -> dict[str, str]:
        """Poll `systemctl show` until every property has the wanted value."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.show(unit, *wanted)
            if all(found.get(k) == v for k, v in wanted.items()):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{unit}: wanted {wanted}, have {found}\n{self.journal(unit)}")
            time.sleep(0.2)

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -u {unit} --no-pager -o cat", check=False).stdout

    def failed_units(self) -> str:
        return self.sh("systemctl --failed --no-legend", check=False).stdout

    def poweroff(self, timeout_s: float = 60) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and self.leader:
            with contextlib.suppress(subprocess.SubprocessError):
                self.sh("systemctl poweroff", check=False, timeout=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn halts the container
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._proc = None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
