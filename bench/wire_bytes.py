"""Bytes on the wire per point: how readings are written as JSON text in a backlog request.

A float32 reading used to go out as its float64 expansion (23.414709091186523) and a scaled
integer as 229.70000000000002. This prints what a full backlog request costs per point for
three kinds of meter, with the raw expansion ("before") and with the shortest text that is the
same float32 / the decimals the scale implies ("now"); then how many points report by exception
sends of a slowly varying signal. Pure computation: no broker, no daemon.

    .venv/bin/python bench/wire_bytes.py
"""

from __future__ import annotations

import json
import math
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatewayd.acquire.decode import point_decoder  # noqa: E402
from gatewayd.config import PointConfig  # noqa: E402
from gatewayd.enos.protocol import batch_element, batch_request  # noqa: E402
from gatewayd.model import QueuedSample  # noqa: E402

DEVICES = 100
POINTS = 10
SAMPLES = 500  # one backlog request's worth (batch_max_samples)


def float32_words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [raw[0] << 8 | raw[1], raw[2] << 8 | raw[3]]


def float32_meter(t: int, p: int) -> tuple[PointConfig, list[int]]:
    value = 230.0 + 10 * math.sin(t / 50 + p) + random.random()
    return PointConfig(id=f"P{p}", address=2 * p, type="float32"), float32_words(value)


def scaled_meter(t: int, p: int) -> tuple[PointConfig, list[int]]:
    raw = 2300 + int(100 * math.sin(t / 50 + p))
    return PointConfig(id=f"P{p}", address=p, type="uint16", scale=0.1), [raw]


def integer_meter(t: int, p: int) -> tuple[PointConfig, list[int]]:
    return PointConfig(id=f"P{p}", address=p, type="uint16"), [1000 + (t * 7 + p) % 500]


def raw_value(point: PointConfig, words: list[int]) -> float | int:
    """What the decoder gave before: the plain arithmetic on the raw number."""
    if point.type == "float32":
        return float(struct.unpack(">f", struct.pack(">HH", *words))[0])
    value = words[0]
    return value * point.scale + point.offset if point.scale != 1.0 else value


def bytes_per_point(meter: Callable[[int, int], tuple[PointConfig, list[int]]], now: bool) -> float:
    random.seed(7)
    elements = []
    for n in range(SAMPLES):
        device, t = n % DEVICES, n // DEVICES
        points = {}
        for p in range(POINTS):
            point, words = meter(t, p)
            points[point.id] = point_decoder(point)(words) if now else raw_value(point, words)
        row = QueuedSample(n, "subProductKey", f"meter{device:04d}", 1795600000000 + n, "")
        elements.append(batch_element(row._replace(points_json=json.dumps(points))))
    body = batch_request("123456789012", "thing.measurepoint.resume.batch", elements)
    return len(body) / (SAMPLES * POINTS)


def deadband_saving(band: float, hours: float = 1.0) -> tuple[int, int]:
    """Points sent in an hour of 1 s polls of a slow 230 V ± 10 wave (period 20 min) with
    ±0.05 V noise: with no deadband, and with `band` volts (heartbeat 300 s)."""
    from gatewayd.acquire.deadband import ExceptionFilter

    random.seed(11)
    flt = ExceptionFilter([PointConfig(id="U", address=0, deadband=band, heartbeat_s=300)])
    seconds = int(hours * 3600)
    for t in range(seconds):
        value = 230 + 10 * math.sin(2 * math.pi * t / 1200) + random.uniform(-0.05, 0.05)
        flt.apply({"U": round(value, 2)}, float(t))
    return seconds, seconds - flt.suppressed


def main() -> None:
    meters = {
        "float32 (230 V ± 10, noisy)": float32_meter,
        "uint16 × 0.1": scaled_meter,
        "uint16 plain": integer_meter,
    }
    print(f"{'meter':<30} {'before B/pt':>12} {'now B/pt':>10} {'saved':>7}")
    for name, meter in meters.items():
        before, now = bytes_per_point(meter, False), bytes_per_point(meter, True)
        print(f"{name:<30} {before:>12.1f} {now:>10.1f} {1 - now / before:>6.0%}")
    print()
    print(f"{'deadband (V)':<14} {'points read':>12} {'points sent':>12} {'saved':>7}")
    for band in (0.1, 0.5, 1.0):
        read, sent = deadband_saving(band)
        print(f"{band:<14} {read:>12} {sent:>12} {1 - sent / read:>6.0%}")


if __name__ == "__main__":
    main()
