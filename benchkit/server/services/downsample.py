"""Server-side downsampling of one metric series into at most ``n`` buckets.

A chart asks for a series over a step range and gets at most ``n`` rows back whatever the number
of points, so a run with a million points draws as fast as one with a hundred. The range is cut
into equal buckets of whole steps; each bucket keeps the minimum and maximum of its finite values
(a spike survives downsampling: it widens the band), its last point (the line is drawn through
those) and how many points it holds. Zooming in asks again with the zoomed range, so the same
number of buckets covers less data: the re-bucketing happens on the server, never by thinning
what the browser already has. A chart with time on its x axis draws the same buckets at the
time of their last point.

So that a query never reads a million points, ingest also keeps *rollups*: per series and per
tier ``T`` in :data:`TIERS`, one row per block of ``T`` consecutive steps holding the block's
min, max, last and count. :func:`plan` picks the coarsest tier whose blocks are no wider than a
bucket and aligns the bucket grid to its blocks, so combining blocks (:func:`combine`) gives
exactly what bucketing the raw points would (:func:`downsample`; the tests check that both
agree). A query then reads at most about ``16 * n`` rows whatever the length of the run; below
the finest tier it reads the raw points, which are then fewer than ``16 * n`` too.

Values are floats with a ``kind``: NaN and ±Inf are kept as such (SQLite cannot even store a
NaN), their value is ``None`` and only ``kind`` says which; min and max skip them, ``last`` may
be one of them. "Last" is the point with the greatest step, and among points of one step (a
resumed run logs some steps again) the latest written (greatest ``order``, the journal time).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

#: ``kind`` of a stored value: finite, NaN, +Inf, -Inf (JSON and SQLite have no NaN)
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3
KIND_NAMES = {NAN: "nan", POS_INF: "inf", NEG_INF: "-inf"}

#: the most buckets a chart request may ask for (SERVER.md §7: ``buckets <= 2000``)
MAX_BUCKETS = 2000
DEFAULT_BUCKETS = 1000
#: block sizes (in steps) of the rollup tiers kept at ingest; each is 16 times the previous
TIERS = (16, 256, 4096, 65536)


def classify(value: float) -> tuple[float | None, int]:
    """``(stored value, kind)`` of a float: non-finite values are stored as ``None`` + kind."""
    if math.isfinite(value):
        return value, FINITE
    if math.isnan(value):
        return None, NAN
    return None, POS_INF if value > 0 else NEG_INF


def unclassify(value: float | None, kind: int) -> float:
    """The float a stored ``(value, kind)`` stands for (the inverse of :func:`classify`)."""
    if kind == FINITE:
        return float(value)  # type: ignore[arg-type]
    return {NAN: math.nan, POS_INF: math.inf, NEG_INF: -math.inf}[kind]


@dataclass(frozen=True)
class Grid:
    """``n`` buckets of ``width`` steps each, the first starting at step ``x0``; the grid
    covers ``[x0, x1]``."""

    x0: int
    x1: int
    n: int
    width: int

    def index(self, x: int) -> int:
        return (x - self.x0) // self.width


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def grid(x0: int, x1: int, n: int) -> Grid:
    """At most ``n`` equal buckets of whole steps over ``[x0, x1]``."""
    if n < 1:
        raise ValueError(f"buckets must be at least 1, got {n}")
    if x1 < x0:
        raise ValueError(f"empty step range: {x0} > {x1}")
    width = max(1, _ceil_div(x1 - x0 + 1, n))
    return Grid(x0, x1, _ceil_div(x1 - x0 + 1, width), width)


def plan(x0: int, x1: int, n: int) -> tuple[int, Grid]:
    """``(tier, grid)`` for at most ``n`` buckets over ``[x0, x1]``. Tier 1 means the raw
    points; otherwise the grid's edges fall on the tier's block edges (so its range may reach a
    little beyond ``[x0, x1]``, to whole blocks)."""
    g = grid(x0, x1, n)
    tier = max((t for t in TIERS if t <= g.width), default=1)
    if tier == 1:
        return 1, g
    gx0 = (x0 // tier) * tier
    gx1 = (x1 // tier + 1) * tier - 1
    width = _ceil_div(g.width, tier) * tier
    while _ceil_div(gx1 - gx0 + 1, width) > n:
        width += tier
    return tier, Grid(gx0, gx1, _ceil_div(gx1 - gx0 + 1, width), width)


class Point(NamedTuple):
    """One point of a series: its step, stored value and kind, and ``order`` (the journal
    time), which breaks ties between points of one step: the later write wins."""

    x: int
    value: float | None
    kind: int = FINITE
    order: float = 0.0


@dataclass
class Bucket:
    """A bucket (or rollup block): its last point, the finite min and max, the counts."""

    x: int
    value: float | None
    kind: int
    min: float | None
    max: float | None
    count: int
    nonfinite: int
    order: float = 0.0

    def add(self, other: Bucket) -> None:
        """Fold ``other`` (a point's bucket or a block of the same range) into this one."""
        self.count += other.count
        self.nonfinite += other.nonfinite
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        if (other.x, other.order) >= (self.x, self.order):
            self.x, self.value, self.kind, self.order = (
                other.x,
                other.value,
                other.kind,
                other.order,
            )


def _fold(parts: Iterable[tuple[int, Bucket]]) -> dict[int, Bucket]:
    out: dict[int, Bucket] = {}
    for i, b in parts:
        have = out.get(i)
        if have is None:
            out[i] = Bucket(b.x, b.value, b.kind, b.min, b.max, b.count, b.nonfinite, b.order)
        else:
            have.add(b)
    return out


def _fold_points(points: Iterable[Point], bucket_of: Callable[[int], int]) -> dict[int, Bucket]:
    # the ingest hot path (every point goes through it once per batch): no object per point
    out: dict[int, Bucket] = {}
    for p in points:  # a Point, or any tuple that starts like one
        x, v, kind, order = p[0], p[1], p[2], p[3]
        i = bucket_of(x)
        b = out.get(i)
        if b is None:
            finite = v if kind == FINITE else None
            out[i] = Bucket(x, v, kind, finite, finite, 1, int(kind != FINITE), order)
            continue
        b.count += 1
        if kind == FINITE:
            if b.min is None or v < b.min:  # type: ignore[operator]
                b.min = v
            if b.max is None or v > b.max:  # type: ignore[operator]
                b.max = v
        else:
            b.nonfinite += 1
        if x > b.x or (x == b.x and order >= b.order):
            b.x, b.value, b.kind, b.order = x, v, kind, order
    return out


def downsample(points: Iterable[Point], g: Grid) -> list[Bucket]:
    """The buckets of ``g`` from raw points (those outside the grid's range are left out),
    ordered by step. The reference the rollups are checked against."""
    out = _fold_points((p for p in points if g.x0 <= p[0] <= g.x1), g.index)
    return [out[i] for i in sorted(out)]


def blocks(points: Iterable[Point], tier: int) -> dict[int, Bucket]:
    """The rollup of ``points`` (``Point`` or plain tuples in its order) at ``tier``: block
    number (``step // tier``) to its block."""
    return _fold_points(points, lambda x: x // tier)


def increasing_blocks(
    steps: Sequence[int], values: Sequence[float], orders: Sequence[float], tier: int
) -> dict[int, Bucket]:
    """:func:`blocks` of finite points whose steps strictly increase (what one writer logs):
    each block is then a slice, its last point the slice's last, and ``min``/``max`` of the
    slice do in C what :func:`blocks` does point by point."""
    out: dict[int, Bucket] = {}
    i, n = 0, len(steps)
    while i < n:
        block = steps[i] // tier
        j = bisect_left(steps, (block + 1) * tier, i)
        part = values[i:j]
        out[block] = Bucket(
            steps[j - 1], values[j - 1], FINITE, min(part), max(part), j - i, 0, orders[j - 1]
        )
        i = j
    return out


def coarser(fine: dict[int, Bucket], factor: int) -> dict[int, Bucket]:
    """The next tier's blocks from this tier's (``factor`` blocks make one)."""
    return _fold((i // factor, b) for i, b in fine.items())


def combine(parts: Iterable[tuple[int, Bucket]], g: Grid, tier: int) -> list[Bucket]:
    """The buckets of ``g`` from rollup blocks ``(block number, block)`` of ``tier``; the grid's
    edges fall on block edges (as :func:`plan` makes them), so this equals :func:`downsample`
    of the points the blocks hold."""
    out = _fold((g.index(i * tier), b) for i, b in parts if g.x0 <= i * tier <= g.x1)
    return [out[i] for i in sorted(out)]


def to_columns(buckets: list[Bucket], times: bool = False) -> dict[str, list]:
    """Column arrays for a chart: ``x`` (step), ``last``, ``min``, ``max``, ``count`` and, for
    non-finite last values, ``nonfinite`` as ``[index, "nan" | "inf" | "-inf"]`` pairs."""
    out: dict[str, list] = {
        "x": [b.x for b in buckets],
        "last": [b.value for b in buckets],
        "min": [b.min for b in buckets],
        "max": [b.max for b in buckets],
        "count": [b.count for b in buckets],
        "nonfinite": [[i, KIND_NAMES[b.kind]] for i, b in enumerate(buckets) if b.kind],
    }
    if times:
        out["time"] = [b.order for b in buckets]
    return out
