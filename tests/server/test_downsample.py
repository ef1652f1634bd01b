"""The downsampling algorithm: bounded buckets with min, max and last, re-bucketed by range,
and rollup tiers that give exactly the same buckets as the raw points."""

from __future__ import annotations

import math
import random

import pytest

from benchkit.server.services.downsample import (
    FINITE,
    NAN,
    NEG_INF,
    POS_INF,
    TIERS,
    Point,
    blocks,
    classify,
    coarser,
    combine,
    downsample,
    grid,
    increasing_blocks,
    plan,
    to_columns,
    unclassify,
)


def steps(values):
    return [Point(i, v, order=float(i)) for i, v in enumerate(values)]


def test_never_more_buckets_than_asked_and_every_point_counted_once():
    rng = random.Random(0)
    for n_points, n in [(1, 10), (7, 3), (1000, 7), (10_001, 100), (999, 1000)]:
        pts = steps([rng.random() for _ in range(n_points)])
        out = downsample(pts, grid(0, n_points - 1, n))
        assert len(out) <= n
        assert sum(b.count for b in out) == n_points


def test_a_series_shorter_than_the_buckets_comes_back_point_for_point():
    out = downsample(steps([3.0, 1.0, 2.0]), grid(0, 2, 100))
    assert [(b.x, b.value, b.min, b.max, b.count) for b in out] == [
        (0, 3.0, 3.0, 3.0, 1),
        (1, 1.0, 1.0, 1.0, 1),
        (2, 2.0, 2.0, 2.0, 1),
    ]


def test_each_bucket_keeps_min_max_and_last():
    pts = steps([5.0, -2.0, 9.0, 1.0, 4.0, 4.5])  # two buckets of three steps
    out = downsample(pts, grid(0, 5, 2))
    assert [(b.x, b.value, b.min, b.max) for b in out] == [(2, 9.0, -2.0, 9.0), (5, 4.5, 1.0, 4.5)]


def test_a_single_spike_survives_twenty_thousand_to_one_hundred():
    n, spike = 20_000, 13_457
    pts = (Point(i, 100.0 if i == spike else 0.0) for i in range(n))
    out = downsample(pts, grid(0, n - 1, 100))
    assert len(out) == 100
    assert [b.x for b in out if b.max == 100.0] == [(spike // 200 + 1) * 200 - 1]


def test_zooming_rebuckets_the_range_with_the_same_budget():
    pts = steps([float(i) for i in range(10_000)])
    whole = downsample(pts, grid(0, 9999, 100))
    zoomed = downsample(pts, grid(1000, 1099, 100))
    assert whole[10].count == 100  # one bucket per 100 steps over the whole run
    assert len(zoomed) == 100 and all(b.count == 1 for b in zoomed)  # every point when zoomed
    assert [b.x for b in zoomed] == list(range(1000, 1100))


def test_points_outside_the_range_are_left_out():
    out = downsample(steps([1.0] * 50), grid(10, 19, 5))
    assert sum(b.count for b in out) == 10
    assert out[0].x == 11 and out[-1].x == 19


def test_non_finite_values_are_kept_out_of_min_and_max_but_counted():
    pts = [
        Point(0, 1.0),
        Point(1, None, NAN),
        Point(2, None, POS_INF),
        Point(3, 2.0),
        Point(4, None, NEG_INF),
    ]
    out = downsample(pts, grid(0, 4, 1))
    (b,) = out
    assert (b.min, b.max, b.count, b.nonfinite) == (1.0, 2.0, 5, 3)
    assert (b.x, b.value, b.kind) == (4, None, NEG_INF)
    assert to_columns(out) == {
        "x": [4],
        "last": [None],
        "min": [1.0],
        "max": [2.0],
        "count": [5],
        "nonfinite": [[0, "-inf"]],
    }


def test_a_relogged_step_shows_the_later_write():
    # a resumed run logs step 3 again; the write with the later journal time wins
    pts = [Point(3, 1.0, order=10.0), Point(3, 7.0, order=20.0), Point(2, 0.0, order=30.0)]
    (b,) = downsample(pts, grid(0, 3, 1))
    assert (b.x, b.value, b.order) == (3, 7.0, 20.0)
    assert to_columns([b], times=True)["time"] == [20.0]


def test_grid_refuses_an_empty_range_or_no_buckets():
    with pytest.raises(ValueError, match="at least 1"):
        grid(0, 10, 0)
    with pytest.raises(ValueError, match="empty step range"):
        grid(10, 0, 5)
    assert grid(5, 5, 10).n == 1


@pytest.mark.parametrize(
    "x0, x1, n",
    [
        (0, 99, 1000),
        (0, 999_999, 1000),
        (3, 70_001, 700),
        (12_345, 12_999, 20),
        (0, 5_000_000, 2000),
    ],
)
def test_plan_stays_within_the_budget_and_aligns_to_its_tier(x0, x1, n):
    tier, g = plan(x0, x1, n)
    assert g.n <= n
    assert g.x0 <= x0 and g.x1 >= x1
    if tier > 1:
        assert tier in TIERS and g.width % tier == 0 and g.x0 % tier == 0
        assert (g.x1 + 1) % tier == 0
        assert (g.x1 - g.x0 + 1) // tier <= 16 * n  # rows a query reads
    else:
        assert (g.x0, g.x1) == (x0, x1) and x1 - x0 + 1 < 16 * n


def test_rollups_give_exactly_the_buckets_of_the_raw_points():
    rng = random.Random(1)
    pts = []
    for i in range(40_000):  # with non-finite values and some re-logged steps
        v = rng.gauss(0, 1)
        kind = FINITE if rng.random() > 0.001 else rng.choice([NAN, POS_INF, NEG_INF])
        pts.append(Point(i, v if kind == FINITE else None, kind, order=float(i)))
    pts += [Point(s, 9.0, order=1e9 + s) for s in range(20_000, 20_050)]
    tiers = {TIERS[0]: blocks(pts, TIERS[0])}
    for fine, coarse in zip(TIERS, TIERS[1:], strict=False):
        tiers[coarse] = coarser(tiers[fine], coarse // fine)
    seen = set()
    for x0, x1, n in [(0, 39_999, 100), (0, 39_999, 5), (19_000, 22_000, 50), (5, 9_000, 40)]:
        tier, g = plan(x0, x1, n)
        want = downsample(pts, g)
        got = downsample(pts, g) if tier == 1 else combine(tiers[tier].items(), g, tier)
        assert tier > 1 and got == want, (x0, x1, n, tier)
        seen.add(tier)
    assert seen == {16, 256, 4096}


@pytest.mark.parametrize("tier", TIERS)
def test_blocks_of_increasing_steps_equal_the_point_by_point_fold(tier):
    rng = random.Random(tier)
    steps = sorted(rng.sample(range(300_000), 5_000))  # gaps, and blocks of one point
    values = [rng.gauss(0, 1) for _ in steps]
    orders = [1e9 + i for i in range(len(steps))]
    pts = [Point(s, v, FINITE, o) for s, v, o in zip(steps, values, orders, strict=True)]
    assert increasing_blocks(steps, values, orders, tier) == blocks(pts, tier)


@pytest.mark.parametrize("v", [0.5, -3.0, math.nan, math.inf, -math.inf])
def test_classify_roundtrips(v):
    stored, kind = classify(v)
    assert (stored is None) == (kind != FINITE)
    back = unclassify(stored, kind)
    assert (math.isnan(back) and math.isnan(v)) or back == v
