"""The downsampling algorithm: bounded buckets with min, max and last, re-bucketed by range."""

from __future__ import annotations

import math
import random

import pytest

from benchkit.server.services.downsample import (
    FINITE,
    NAN,
    NEG_INF,
    POS_INF,
    Point,
    classify,
    downsample,
    grid,
    unclassify,
)


def steps(values):
    return [Point(i, v) for i, v in enumerate(values)]


def test_never_more_buckets_than_asked_and_every_point_counted_once():
    rng = random.Random(0)
    for n_points, n in [(1, 10), (7, 3), (1000, 7), (10_001, 100), (999, 1000)]:
        pts = steps([rng.random() for _ in range(n_points)])
        g = grid(0, n_points - 1, n, integral=True)
        out = downsample(pts, g)
        assert len(out) <= n
        assert sum(b.count for b in out) == n_points


def test_a_series_shorter_than_the_buckets_comes_back_point_for_point():
    pts = steps([3.0, 1.0, 2.0])
    out = downsample(pts, grid(0, 2, 100, integral=True))
    assert [(b.x, b.value, b.min, b.max, b.count) for b in out] == [
        (0, 3.0, 3.0, 3.0, 1),
        (1, 1.0, 1.0, 1.0, 1),
        (2, 2.0, 2.0, 2.0, 1),
    ]


def test_each_bucket_keeps_min_max_and_last():
    pts = steps([5.0, -2.0, 9.0, 1.0, 4.0, 4.5])  # two buckets of three steps
    out = downsample(pts, grid(0, 5, 2, integral=True))
    assert [(b.x, b.value, b.min, b.max) for b in out] == [(2, 9.0, -2.0, 9.0), (5, 4.5, 1.0, 4.5)]


def test_a_single_spike_survives_a_hundred_thousand_to_one_hundred():
    n = 100_000
    spike = 65_432
    pts = (Point(i, 100.0 if i == spike else 0.0) for i in range(n))
    out = downsample(pts, grid(0, n - 1, 100, integral=True))
    assert len(out) == 100
    assert max(b.max for b in out) == 100.0
    assert [b for b in out if b.max == 100.0][0].x == (spike // 1000 + 1) * 1000 - 1


def test_zooming_rebuckets_the_range_with_the_same_budget():
    pts = steps([float(i) for i in range(10_000)])
    whole = downsample(pts, grid(0, 9999, 100, integral=True))
    zoomed = downsample(pts, grid(1000, 1099, 100, integral=True))
    assert whole[10].count == 100  # one bucket per 100 steps over the whole run
    assert len(zoomed) == 100 and all(b.count == 1 for b in zoomed)  # every point when zoomed
    assert [b.x for b in zoomed] == list(range(1000, 1100))


def test_points_outside_the_range_are_left_out():
    out = downsample(steps([1.0] * 50), grid(10, 19, 5, integral=True))
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
    (b,) = downsample(pts, grid(0, 4, 1, integral=True))
    assert (b.min, b.max, b.count, b.nonfinite) == (1.0, 2.0, 5, 3)
    assert (b.x, b.value, b.kind) == (4, None, NEG_INF)
    assert b.to_json() == {
        "x": 4,
        "last": None,
        "kind": "-inf",
        "min": 1.0,
        "max": 2.0,
        "count": 5,
        "nonfinite": 3,
    }


def test_a_relogged_step_shows_the_later_write():
    # a resumed run logs step 3 again; the write with the later journal time wins
    pts = [Point(3, 1.0, order=10.0), Point(3, 7.0, order=20.0), Point(2, 0.0, order=30.0)]
    (b,) = downsample(pts, grid(0, 3, 1, integral=True))
    assert (b.x, b.value) == (3, 7.0)


def test_float_x_time_axis_uses_equal_widths_and_puts_the_end_in_the_last_bucket():
    pts = [Point(100.0 + i * 0.5, float(i)) for i in range(21)]  # 100.0 .. 110.0
    out = downsample(pts, grid(100.0, 110.0, 4, integral=False))
    assert [b.count for b in out] == [5, 5, 5, 6]
    assert out[-1].x == 110.0


def test_grid_refuses_an_empty_range_or_no_buckets():
    with pytest.raises(ValueError, match="at least 1"):
        grid(0, 10, 0, integral=True)
    with pytest.raises(ValueError, match="empty x range"):
        grid(10, 0, 5, integral=True)
    assert grid(5, 5, 10, integral=True).n == 1
    assert grid(5.0, 5.0, 10, integral=False).index(5.0) == 0


@pytest.mark.parametrize("v", [0.5, -3.0, math.nan, math.inf, -math.inf])
def test_classify_roundtrips(v):
    stored, kind = classify(v)
    assert (stored is None) == (kind != FINITE)
    back = unclassify(stored, kind)
    assert (math.isnan(back) and math.isnan(v)) or back == v
