"""A reload signal while `gatewayd run` is still starting must not kill it (issue 15).

systemd's `ExecReload` or an operator's `kill -HUP` can land in the first second, while Python
is still importing; SIGHUP's default action ends the process.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from gatewayd.sim.broker import free_port
from tests.support.brokers import Broker
from tests.support.daemon import (
    config_data,
    modbus_device,
    start_gatewayd,
    stop_gatewayd,
    write_config,
)

#: On this project's machines the old code installed its SIGHUP handler 2 s after the spawn.
EARLY_S = 0.5


def hup_handled(pid: int) -> bool:
    """SIGHUP is caught or ignored by the process (from /proc, no guessing)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    mask = int(fields["SigCgt"], 16) | int(fields["SigIgn"], 16)
    return bool(mask & (1 << (signal.SIGHUP - 1)))


async def test_sighup_in_the_first_second_is_a_reload_not_a_kill(
    tmp_path: Path, broker: Broker
) -> None:
    device = modbus_device("m1", free_port(), 1, [{"id": "P", "address": 0}], 1.0)
    config = write_config(tmp_path / "c.toml", config_data(tmp_path, broker.port, [device]))
    proc = await start_gatewayd("run", "-c", str(config))
    try:
        spawned = time.monotonic()
        while not hup_handled(proc.pid) and time.monotonic() - spawned < EARLY_S:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # a /proc field has nothing to await
        proc.send_signal(signal.SIGHUP)
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, f"gatewayd ended (code {await proc.wait()}) after an early SIGHUP"
                if " reloaded " in line:
                    break
        assert proc.returncode is None
    finally:
        await stop_gatewayd(proc)
