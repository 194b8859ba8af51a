"""Every long-running stage runs under one supervisor: a stage that fails stops the daemon.

A stage is a task the daemon spawns here (forwarder, topology, committer, clock guard, health,
watchdog, metrics, reloads), a scheduled poll, or one of our threads (paho's network loop, the
metrics server). Cancellation is how the daemon stops them; anything else a stage raises is a
failure: it is logged as one critical line naming the stage, the daemon's stop is triggered
(the exit stack then closes everything in order, the queue last), and `Daemon.run` ends with
StageFailed, which the CLI turns into exit 1 so that systemd restarts the service.

An exception in one of our threads reaches the event loop through `threading.excepthook`; the
SQLite writer's exceptions already arrive in the coroutine that awaited the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from gatewayd.errors import GatewaydError
from gatewayd.runtime.watchdog import StageStalled

log = logging.getLogger(__name__)

#: Our threads, by name prefix, and the stage each belongs to.
THREAD_STAGES = {"gatewayd-mqtt": "uplink", "gatewayd-metrics": "metrics", "gatewayd-db": "queue"}


class StageFailed(GatewaydError):
    """A stage raised something unexpected (or stalled); the daemon stopped because of it."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"stage {stage} failed: {reason}")


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Owns the stage tasks; records the first failure and sets `failed`."""

    def __init__(self) -> None:
        self.failure: StageFailed | None = None
        self.failed = asyncio.Event()
        #: Set by the daemon once it stops on purpose: a stage that ends then is no failure.
        self.stopping = False
        self._tasks: dict[asyncio.Task[None], str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_hook: Callable[[threading.ExceptHookArgs], Any] | None = None

    def spawn(self, stage: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def supervised() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except StageStalled as exc:  # raised by the watchdog, about another stage
                self.fail(exc.stage, exc, kind="stage_stalled")
            except Exception as exc:
                self.fail(stage, exc)

        task = asyncio.create_task(supervised(), name=f"gatewayd-{stage}")
        self._tasks[task] = stage
        task.add_done_callback(lambda done: self._ended(done, coro))
        return task

    def _ended(self, task: asyncio.Task[None], coro: Awaitable[None]) -> None:
        if inspect.iscoroutine(coro):
            coro.close()  # cancelled before it ever ran: not "never awaited"
        stage = self._tasks.pop(task, "?")
        if not task.cancelled() and self.failure is None and not self.stopping:
            self.fail(stage, RuntimeError("the stage ended by itself"))

    def fail(self, stage: str, exc: BaseException, kind: str = "stage_failed") -> None:
        """Record a stage's failure (first one wins) and trigger the daemon's stop."""
        if self.failure is not None:
            log.info("stage_failed_too stage=%s error=%r", stage, describe(exc))
            return
        self.failure = StageFailed(stage, describe(exc))
        log.critical(
            "%s stage=%s error=%r action='stopping the daemon'", kind, stage, describe(exc)
        )
        log.debug("stage_failure_detail", exc_info=exc)
        self.failed.set()

    # --- threads -------------------------------------------------------------------------------

    def watch_threads(self) -> None:
        """Route an exception that ends one of our threads to `fail`, on the event loop."""
        self._loop = asyncio.get_running_loop()
        self._previous_hook = threading.excepthook
        threading.excepthook = self._thread_died

    def unwatch_threads(self) -> None:
        if self._previous_hook is not None:
            if threading.excepthook == self._thread_died:  # not if someone hooked in after us
                threading.excepthook = self._previous_hook
            self._previous_hook = None

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        stage = next((s for prefix, s in THREAD_STAGES.items() if name.startswith(prefix)), None)
        loop = self._loop
        if stage is None or loop is None or loop.is_closed() or args.exc_value is None:
            if self._previous_hook is not None:
                self._previous_hook(args)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self.fail, stage, args.exc_value)

    def in_thread(self, stage: str, fn: Callable[[], None]) -> Callable[[], None]:
        """Wrap a thread's target so that its exception is this stage's failure.

        May be called from any thread, after `watch_threads()`.
        """
        loop = self._loop
        assert loop is not None, "watch_threads() first"

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(self.fail, stage, exc)

        return run


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it is gone."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
