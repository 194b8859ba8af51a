"""Readings lost after the pollers handed them on, as one serial number report by exception reads.

Report by exception (acquire/deadband.py) leaves a point out while it stays within its band of
the value last *sent*, and a value counts as sent once the queue took it. But the queue or the
hub may lose it after that: evicted by the queue's bounds, dropped while the disk refused
writes, dead-lettered (refused by the hub, too large, held past a reboot under
`held_policy = "reject"`), lost with a damaged file, or purged by an operator. The hub's last
value is then an older one, and leaving out readings within the band of the lost value would
show the older one as current, for ever when the point has no `heartbeat_s`.

So whatever loses readings calls `lost`, which bumps `serial`; each filter compares it on every
reading and, when it moved, forgets every value it sent, so that the next reading of every
point goes out in full. Losses are rare, one full sample per device after one is cheap, and no
per-row bookkeeping of which value went where is needed. A dead letter names its device, and
only that device's filter forgets: a device whose every full sample the hub refuses (a point
missing from its model) would otherwise make every device send in full every few seconds.
Used on the event loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: A device as the queue names it: (product key, device key).
DeviceKey = tuple[str, str]


class Losses:
    """A count of loss events (`serial`) and of the samples lost, by reason, since the start."""

    def __init__(self) -> None:
        self.serial = 0
        #: Reason -> samples lost since the start (a purge by another process included).
        self.samples: dict[str, int] = {}
        self._everyone = 0  # the serial of the last loss that may concern any device
        self._by_device: dict[DeviceKey, int] = {}  # of the last loss of each named device
        self._unannounced: dict[str, int] = {}
        self._announced = 0
        self._totals: dict[str, int] = {}

    def lost(self, reason: str, samples: int, devices: Iterable[DeviceKey] | None = None) -> None:
        """`samples` readings handed on will never reach the hub (nothing happens for 0);
        `devices`: the only devices they were of (None: any device's, unknown which)."""
        if samples <= 0:
            return
        self.serial += 1
        if devices is None:
            self._everyone = self.serial
        else:
            self._by_device.update(dict.fromkeys(devices, self.serial))
        self.samples[reason] = self.samples.get(reason, 0) + samples
        self._unannounced[reason] = self._unannounced.get(reason, 0) + samples

    def lost_since(self, device: DeviceKey, serial: int) -> bool:
        """Were readings that `device` may count on lost after `serial`?"""
        return max(self._everyone, self._by_device.get(device, 0)) > serial

    def total(self, reason: str, total: int) -> None:
        """A running total kept elsewhere (the queue file's `purged`, which `gatewayd queue
        purge` adds to from another process): a rise since the last call is a loss; the first
        call only takes the starting point."""
        before = self._totals.get(reason)
        self._totals[reason] = total
        if before is not None:
            self.lost(reason, total - before)

    def announce(self) -> None:
        """A filter forgot what it sent because of the losses up to `serial`: one line for them
        all, however many devices forget (the first to notice says it)."""
        if self._announced == self.serial:
            return
        self._announced = self.serial
        reasons, self._unannounced = self._unannounced, {}
        log.info(
            "deadband_reset reason=%s samples=%d note='the next reading of every point is sent'",
            ",".join(sorted(reasons)),
            sum(reasons.values()),
        )
