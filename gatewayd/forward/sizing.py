"""How large a request one sample of a device can make, worked out from its configuration.

A batch always carries at least one sample, so a device whose sample alone cannot fit
`forward.batch_max_bytes` would be refused by the broker at every attempt (it drops the
connection) and hold every other device's data behind it. `check` refuses such a device from
this bound; at run time a stored sample that is still too large is dead-lettered (replies.py).
Pure: no I/O, no configuration types (config.py calls it, so it must not import config).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

from gatewayd.enos.protocol import BATCH_ENVELOPE_BYTES

#: The longest JSON text of a number we send: a float such as -2.2250738585072014e-308 (24),
#: longer than any 64-bit integer (20). Scaled integers become floats.
NUMBER_CHARS = 24
#: `false` is the longer of the two booleans.
BOOL_CHARS = 5
#: A string register holds 2 bytes; as JSON (ASCII only) a byte can take up to 6 characters
#: (`\u0001`), and the value has its two quotes.
STRING_CHARS_PER_REGISTER = 12
#: `{"value":` + `,"quality":` + one digit + `}` around a value reported with its quality.
QUALITY_WRAPPER_CHARS = 22
#: `,"time":` with a millisecond stamp of up to 20 digits and the closing brace.
TIME_CHARS = 8 + 20 + 1


class PointShape(Protocol):
    """What sizing needs to know of a point (config.PointConfig has it)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def quality(self) -> bool: ...


def largest_value_chars(point: PointShape) -> int:
    """The longest JSON text the point's value can take on the wire."""
    if point.type == "string":
        chars = STRING_CHARS_PER_REGISTER * point.length + 2
    elif point.type == "bool":
        chars = BOOL_CHARS
    else:
        chars = NUMBER_CHARS
    return chars + (QUALITY_WRAPPER_CHARS if point.quality else 0)


def largest_element_bytes(product_key: str, device_key: str, points: Iterable[PointShape]) -> int:
    """An upper bound of one batch element (batch_element) for a sample with every point."""
    head = len(
        f'{{"productKey":{json.dumps(product_key)},"deviceKey":{json.dumps(device_key)},'
        '"measurepoints":'
    )
    body = 2  # the braces of the measurepoints object
    for index, point in enumerate(points):
        body += (1 if index else 0) + len(json.dumps(point.id)) + 1 + largest_value_chars(point)
    return head + body + TIME_CHARS


def largest_request_bytes(product_key: str, device_key: str, points: Iterable[PointShape]) -> int:
    """The largest single-sample batch request the device can make, envelope included."""
    return BATCH_ENVELOPE_BYTES + largest_element_bytes(product_key, device_key, points) + 1
