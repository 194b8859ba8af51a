"""What the hub simulator records (deliveries, requests, logins) and the faults it plays."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]


@dataclass(frozen=True)
class Delivery:
    """One sample the hub accepted."""

    method: str
    product_key: str
    device_key: str
    ts_ms: int
    points: dict[str, Any]
    #: When the hub accepted it (wall clock, seconds), to measure how far behind the drain ran.
    received_s: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RequestLog:
    """One data request the hub saw, and how it answered (None: no answer)."""

    topic: str
    request_id: str
    method: str
    samples: int
    code: int | None
    flags: tuple[bool, bool] = (False, False)


@dataclass(frozen=True)
class LoginLog:
    """One MQTT CONNECT the front asked about, and the verdict (code 0: accepted)."""

    device: Key | None
    code: int
    reason: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Faults:
    """What the simulator should do with the next requests."""

    reply_code: int = 200  # anything but 200 replaces the answer to data requests
    drop: bool = False
    garbage: bool = False
    delay_s: float = 0.0
    #: Refuse any batch with an element carrying this point id, with this code (e.g. 1206).
    point_codes: dict[str, int] = field(default_factory=dict)


@dataclass
class GatewayState:
    topology: set[Key] = field(default_factory=set)
    online: set[Key] = field(default_factory=set)
