"""TEST ONLY: inject a crash or a hang into one stage, to prove that supervision catches it.

`GATEWAYD_TEST_FAULT=<stage>:<crash|hang>` is read here and nowhere else. Never set it on a
gateway: it exists so that tests/integration/test_supervision.py can break each stage of a real
`gatewayd run` without editing code. The fault fires once, after the watchdog was first fed
(or, without a watchdog, once the daemon is up):

- in a task stage (forwarder, topology, queue-writer, clock, health, watchdog, reload) the
  stage's work is cancelled and its task raises (crash) or awaits something that never comes
  (hang);
- in `queue-writer` a hang blocks the SQLite writer thread itself (until the stop releases it);
- in `acquire` the next scheduled poll raises or never returns;
- in `metrics` the server's thread raises or blocks;
- in `uplink` paho's callback raises in its network thread (crash only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from gatewayd.errors import GatewaydError

log = logging.getLogger(__name__)

ENV = "GATEWAYD_TEST_FAULT"
STAGES = (
    "acquire",
    "queue-writer",
    "forwarder",
    "topology",
    "clock",
    "health",
    "watchdog",
    "metrics",
    "reload",
    "uplink",
)
KINDS = ("crash", "hang")


class InjectedFault(RuntimeError):
    """The test hook's crash."""


@dataclass(frozen=True)
class Fault:
    stage: str
    kind: str


def from_env(environ: dict[str, str] | None = None) -> Fault | None:
    """The fault asked for in $GATEWAYD_TEST_FAULT; a malformed value is refused, not ignored."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    if not value:
        return None
    stage, _, kind = value.partition(":")
    if stage not in STAGES or kind not in KINDS:
        raise GatewaydError(
            f"{ENV}={value!r}: expected <stage>:<crash|hang> with a stage of {', '.join(STAGES)}"
        )
    return Fault(stage, kind)


class FaultHook:
    """Arms the one configured fault; every method is a no-op for the other stages."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self.armed = asyncio.Event()
        self._thread_armed = threading.Event()
        self._release = threading.Event()  # lets a hung thread go at shutdown
        self._fired = False

    def arm(self) -> None:
        self.armed.set()
        self._thread_armed.set()

    def release(self) -> None:
        self._release.set()

    def _mine(self, stage: str) -> bool:
        return self.fault is not None and self.fault.stage == stage and not self._fired

    def _announce(self) -> str:
        assert self.fault is not None
        self._fired = True
        log.warning("test_fault_injected stage=%s kind=%s", self.fault.stage, self.fault.kind)
        return self.fault.kind

    @property
    def blocks_writer(self) -> bool:
        return self.fault == Fault("queue-writer", "hang")

    def wrap(self, stage: str, coro: Awaitable[None]) -> Awaitable[None]:
        """A task stage: unchanged, unless the fault is for it."""
        if self.blocks_writer and stage == "queue-writer":
            return coro  # hung in its thread instead (see `thread_point`)
        return self._faulty(coro) if self._mine(stage) else coro

    async def _faulty(self, coro: Awaitable[None]) -> None:
        work = asyncio.ensure_future(coro)
        armed = asyncio.ensure_future(self.armed.wait())
        try:
            await asyncio.wait({work, armed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            armed.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await self._strike()

    async def point(self, stage: str) -> None:
        """A spot inside a stage's own code (a scheduled poll) where the fault may strike."""
        if self._mine(stage) and self.armed.is_set():
            await self._strike()

    async def _strike(self) -> None:
        if self._announce() == "crash":
            raise InjectedFault("injected by GATEWAYD_TEST_FAULT")
        await asyncio.Event().wait()  # an await that never returns

    def thread_point(self, stage: str) -> None:
        """The same, inside one of our threads; a hang there lasts until `release()`."""
        if not (self._mine(stage) and self._thread_armed.is_set()):
            return
        if self._announce() == "crash":
            raise InjectedFault("injected by GATEWAYD_TEST_FAULT")
        self._release.wait()

    async def break_uplink(self, client_of: Any) -> None:
        """`uplink:crash`: once armed, paho's next on_message raises in its network thread."""
        if not self._mine("uplink"):
            return
        await self.armed.wait()
        client = client_of()
        if client is None:
            return

        def crash(*_args: Any) -> None:
            raise InjectedFault("injected by GATEWAYD_TEST_FAULT in paho's callback")

        self._announce()
        client.on_message = crash
