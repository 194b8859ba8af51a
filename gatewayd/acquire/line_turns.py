"""When a unit on an RTU line may be asked: after the answers it owes came, and once it is quiet.

Why apart from the endpoint: the endpoint speaks Modbus through pymodbus; this is the line's
discipline around it, and it only needs the ledger (line_ledger.py), the clock and waiting. A
unit that owes an answer is not asked (its next frame would be taken for the new request); a unit
whose last exchange went wrong, or that sent a frame nobody asked for, is asked only after it has
been quiet for a timeout; a unit that never goes quiet fails its read within two timeouts, so one
chatty device does not hold up a shared line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gatewayd.acquire.line_ledger import LineLedger

log = logging.getLogger(__name__)

#: An answer owed for longer than this many timeouts (and OWED_EXPIRY_MIN_S) is given up.
OWED_EXPIRY = 20
OWED_EXPIRY_MIN_S = 10.0


class LineTurns:
    def __init__(self, line: str, stale_s: float) -> None:
        self.line = line
        self.ledger = LineLedger(stale_s)
        self._expiry: asyncio.TimerHandle | None = None
        #: Per unit: the ledger's epoch when the unit was last known quiet, and units whose last
        #: exchange went wrong: before the next request to them, they must go quiet first.
        self._settled_epoch: dict[int, int] = {}
        self.unsettled: set[int] = set()
        #: Per unit: when the last request to it went out (its answer may come until + timeout).
        self.last_send: dict[int, float] = {}
        self._answered = asyncio.Event()  # set when an owed answer arrives

    def received(self, data: bytes, now: float) -> None:
        if self.ledger.received(data, now):
            self._answered.set()
        self._watch_pending()

    def _watch_pending(self) -> None:
        """Bytes that may start a frame wait for the rest; after a quiet spell, look again."""
        if self.ledger.splitter.pending and self._expiry is None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.ledger.splitter.stale_s, self._expire_pending)

    def _expire_pending(self) -> None:
        self._expiry = None
        if self.ledger.expire(time.monotonic()):
            self._answered.set()
        self._watch_pending()

    async def before_request(self, unit_id: int, limit_s: float) -> str:
        """Wait until `unit_id` may be asked; "" then, else why it may not (the read fails)."""
        return await self.await_owed(unit_id, limit_s) or await self.settle(unit_id, limit_s)

    async def quiet_after_last_request(self, unit_id: int, timeout_s: float) -> None:
        """Wait until the last request to `unit_id` can no longer be answered (one timeout
        after it went out): a frame from the unit before then is booked in its epoch."""
        if unit_id in self.last_send:
            wait = self.last_send[unit_id] + timeout_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def copy_or_answer(self, unit_id: int, limit_s: float) -> None:
        """A frame that looked like a copy came instead of an answer: if the real answer comes
        within a timeout, it pays (and is thrown away); if not, the frame was the answer."""
        if not await self.await_owed(unit_id, limit_s):
            return
        self.ledger.take_copy_as_answer(unit_id)

    async def await_owed(self, unit_id: int, limit_s: float) -> str:
        """Wait up to `limit_s` for an answer `unit_id` still owes; "" once nothing is owed.

        An owed answer older than OWED_EXPIRY timeouts (at least OWED_EXPIRY_MIN_S) is given
        up: the request was lost on the way (noise), or the slave dropped it."""
        ledger = self.ledger
        if not ledger.owed.get(unit_id):
            return ""
        since = ledger.owed_since.get(unit_id, time.monotonic())
        if time.monotonic() - since > max(OWED_EXPIRY * limit_s, OWED_EXPIRY_MIN_S):
            log.info(
                "owed_answer_given_up endpoint=%s unit=%d age_s=%.1f",
                self.line,
                unit_id,
                time.monotonic() - since,
            )
            ledger.give_up(unit_id)
            return ""
        deadline = time.monotonic() + limit_s
        while ledger.owed.get(unit_id):
            self._answered.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                age = time.monotonic() - since
                return (
                    f"unit {unit_id} still owes the answer to a request {age:.1f} s ago; not "
                    "asked again until it comes (a late answer would be taken for a new request)"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._answered.wait()
        self.unsettled.add(unit_id)  # a late answer may come in several copies: let it finish
        return ""

    async def settle(self, unit_id: int, limit_s: float) -> str:
        """Before asking a unit whose last exchange went wrong, or that sent a frame nobody
        asked for: wait until no frame came from it for `limit_s`; "" once it is quiet. A unit
        that keeps talking fails this read after two timeouts (the line is shared: one unit's
        chatter must not hold the others up)."""
        epoch = self.ledger.epoch.get(unit_id, 0)
        if unit_id not in self.unsettled and self._settled_epoch.get(unit_id, 0) == epoch:
            return ""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            wait = self.ledger.last_frame_at.get(unit_id, 0.0) + limit_s - now
            if wait <= 0:
                break
            if now + wait - started > 2 * limit_s:
                return f"unit {unit_id} keeps sending frames nobody asked for"
            await asyncio.sleep(wait)
        self.unsettled.discard(unit_id)
        self._settled_epoch[unit_id] = self.ledger.epoch.get(unit_id, 0)
        return ""
