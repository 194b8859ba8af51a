"""The supervisor: the first unexpected exception of a stage (task or thread) is the failure."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from gatewayd.errors import GatewaydError
from gatewayd.runtime.faults import Fault, FaultHook, InjectedFault, from_env
from gatewayd.runtime.supervisor import Supervisor, cancel
from gatewayd.runtime.watchdog import StageStalled


async def test_a_failing_task_is_named_and_only_the_first_failure_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()

    async def broken() -> None:
        await asyncio.sleep(0)
        raise KeyError("batch")

    async def also_broken() -> None:
        await supervisor.failed.wait()
        raise ValueError("later")

    later = supervisor.spawn("topology", also_broken())
    supervisor.spawn("forwarder", broken())
    async with asyncio.timeout(5):
        await supervisor.failed.wait()
        await asyncio.wait({later})
    assert supervisor.failure is not None
    assert supervisor.failure.stage == "forwarder"
    assert str(supervisor.failure) == "stage forwarder failed: KeyError: 'batch'"
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "stage=forwarder" in critical[0].getMessage()


async def test_cancelling_is_no_failure_but_ending_by_itself_is() -> None:
    supervisor = Supervisor()
    forever = supervisor.spawn("health", asyncio.Event().wait())
    await cancel(forever)
    assert supervisor.failure is None

    async def returns() -> None:
        return None

    supervisor.spawn("clock", returns())
    async with asyncio.timeout(5):
        await supervisor.failed.wait()
    assert supervisor.failure is not None and supervisor.failure.stage == "clock"


async def test_a_stall_reported_by_the_watchdog_names_the_silent_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()

    async def watchdog() -> None:
        raise StageStalled("queue-writer", 31.0)

    supervisor.spawn("watchdog", watchdog())
    async with asyncio.timeout(5):
        await supervisor.failed.wait()
    assert supervisor.failure is not None and supervisor.failure.stage == "queue-writer"
    assert any("stage_stalled stage=queue-writer" in r.getMessage() for r in caplog.records)


async def test_an_exception_that_ends_one_of_our_threads_reaches_the_loop() -> None:
    supervisor = Supervisor()
    before = threading.excepthook
    supervisor.watch_threads()
    try:

        def network_loop() -> None:
            raise RuntimeError("callback blew up")

        thread = threading.Thread(target=network_loop, name="gatewayd-mqtt")
        thread.start()
        thread.join()
        async with asyncio.timeout(5):
            await supervisor.failed.wait()
        assert supervisor.failure is not None and supervisor.failure.stage == "uplink"
        wrapped = supervisor.in_thread("metrics", lambda: None)
        wrapped()  # a thread that ends cleanly is no failure
    finally:
        supervisor.unwatch_threads()
    assert threading.excepthook is before


def test_the_fault_hook_is_refused_when_malformed() -> None:
    assert from_env({}) is None
    assert from_env({"GATEWAYD_TEST_FAULT": "forwarder:hang"}) == Fault("forwarder", "hang")
    for bad in ("forwarder", "nowhere:crash", "forwarder:explode"):
        with pytest.raises(GatewaydError, match="GATEWAYD_TEST_FAULT"):
            from_env({"GATEWAYD_TEST_FAULT": bad})


async def test_the_fault_strikes_only_its_stage_and_only_once_armed() -> None:
    hook = FaultHook(Fault("acquire", "crash"))
    await hook.point("acquire")  # not armed yet: nothing happens
    await hook.point("forwarder")
    hook.arm()
    with pytest.raises(InjectedFault):
        await hook.point("acquire")
    await hook.point("acquire")  # once only
