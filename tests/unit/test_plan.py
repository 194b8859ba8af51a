from __future__ import annotations

from typing import Any

from gatewayd.config import PointConfig
from gatewayd.modbus.plan import plan_reads


def points(*specs: tuple[str, int, str]) -> list[PointConfig]:
    out = []
    for n, (table, address, dtype) in enumerate(specs):
        extra: dict[str, Any] = {"length": 2} if dtype == "string" else {}
        out.append(PointConfig(id=f"p{n}", table=table, address=address, type=dtype, **extra))  # type: ignore[arg-type]
    return out


def test_adjacent_points_coalesce_into_one_read() -> None:
    plan = plan_reads(
        points(("holding", 0, "float32"), ("holding", 2, "uint16"), ("holding", 3, "int64"))
    )
    assert [(r.table, r.address, r.count) for r in plan] == [("holding", 0, 7)]
    assert [p.offset for p in plan[0].points] == [0, 2, 3]


def test_tables_never_mix_and_gaps_split_without_max_gap() -> None:
    plan = plan_reads(
        points(
            ("holding", 0, "uint16"),
            ("input", 1, "uint16"),
            ("holding", 5, "uint16"),
            ("coil", 3, "bool"),
        )
    )
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("holding", 0, 1),
        ("holding", 5, 1),
        ("input", 1, 1),
        ("coil", 3, 1),
    ]


def test_max_gap_reads_through_small_holes() -> None:
    plan = plan_reads(points(("holding", 0, "uint16"), ("holding", 5, "uint16")), max_gap=4)
    assert [(r.address, r.count) for r in plan] == [(0, 6)]


def test_the_125_register_limit_splits_reads() -> None:
    many = points(*[("holding", a, "float64") for a in range(0, 200, 4)])
    plan = plan_reads(many)
    assert all(r.count <= 125 for r in plan)
    assert len(plan) == 2  # 200 registers need two reads, not more
    assert sum(len(r.points) for r in plan) == 50
