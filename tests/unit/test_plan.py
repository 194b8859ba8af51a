from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.acquire.plan import plan_reads
from gatewayd.config import PointConfig


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


def fewest_reads(spans: list[tuple[int, int]], limit: int, max_gap: int) -> int:
    """Brute force: the fewest contiguous groups (in address order) that satisfy the limits."""
    spans = sorted(spans)
    best = [0] + [10**9] * len(spans)
    for end in range(1, len(spans) + 1):
        for start in range(end):
            group = spans[start:end]
            reach = group[0][1]
            ok = True
            for lo, hi in group[1:]:
                if lo - reach > max_gap:
                    ok = False
                reach = max(reach, hi)
            if ok and reach - group[0][0] <= limit:
                best[end] = min(best[end], best[start] + 1)
    return best[-1]


@given(
    layout=st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from(["uint16", "float32", "float64"])),
        min_size=1,
        max_size=12,
        unique_by=lambda t: t[0],
    ),
    max_gap=st.integers(0, 10),
)
def test_the_plan_is_minimal_and_covers_every_point(
    layout: list[tuple[int, str]], max_gap: int
) -> None:
    placed = sorted(layout)
    # Drop points that would overlap their predecessor: overlapping configs are refused anyway.
    clean: list[tuple[int, str]] = []
    for address, dtype in placed:
        if (
            not clean
            or address >= clean[-1][0] + {"uint16": 1, "float32": 2, "float64": 4}[clean[-1][1]]
        ):
            clean.append((address, dtype))
    pts = points(*[("holding", a, t) for a, t in clean])
    plan = plan_reads(pts, max_gap)
    for request in plan:
        assert request.count <= 125
        for p in request.points:
            assert request.address <= p.point.address
            assert p.point.address + p.point.register_count <= request.end
            assert p.offset == p.point.address - request.address
    assert sorted(p.point.id for r in plan for p in r.points) == sorted(p.id for p in pts)
    spans = [(p.address, p.address + p.register_count) for p in pts]
    assert len(plan) == fewest_reads(spans, 125, max_gap)
