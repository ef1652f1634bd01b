"""Server-side downsampling of one metric series into at most ``n`` buckets.

A chart asks for a series over an x range (the step, or the wall time) and gets at most ``n``
rows back whatever the number of points, so a run with a million points draws as fast as one
with a hundred. The range ``[x0, x1]`` is cut into ``n`` equal buckets; each bucket keeps the
minimum and maximum of its finite values (a spike survives downsampling: it widens the band),
its last point (the line is drawn through those) and how many points it holds. Zooming in asks
again with the zoomed range, so the same number of buckets covers less data: the re-bucketing
happens on the server, never by thinning what the browser already has.

The grid is defined so that SQL can compute the same bucket index as Python
(``metrics.chart_buckets`` does it with ``GROUP BY`` in the database; the tests check that both
agree): integral x (steps) uses an integer bucket width, so bucket edges fall on whole steps;
float x (unix time) uses ``(x1 - x0) / n``. Values are floats with a ``kind``: NaN and ±Inf are
kept as such (SQLite cannot even store a NaN), their value is ``None`` and only ``kind`` says
which; min and max skip them, ``last`` may be one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: ``kind`` of a stored value: finite, NaN, +Inf, -Inf (JSON and SQLite have no NaN)
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3
KIND_NAMES = {NAN: "nan", POS_INF: "inf", NEG_INF: "-inf"}
KINDS_BY_NAME = {v: k for k, v in KIND_NAMES.items()}

#: the most buckets a chart request may ask for (SERVER.md §7: ``buckets <= 2000``)
MAX_BUCKETS = 2000
DEFAULT_BUCKETS = 1000


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
    """``n`` equal buckets over ``[x0, x1]``; ``integral`` for steps (integer width)."""

    x0: float
    x1: float
    n: int
    width: float
    integral: bool

    def index(self, x: float) -> int:
        """The bucket of ``x`` (which lies in ``[x0, x1]``)."""
        if self.integral:
            return int((x - self.x0) // self.width)
        return min(self.n - 1, int((x - self.x0) / self.width))


def grid(x0: float, x1: float, n: int, integral: bool) -> Grid:
    """The bucket grid for ``[x0, x1]`` and at most ``n`` buckets."""
    if n < 1:
        raise ValueError(f"buckets must be at least 1, got {n}")
    if x1 < x0:
        raise ValueError(f"empty x range: {x0} > {x1}")
    if integral:
        x0, x1 = math.floor(x0), math.floor(x1)
        width = max(1, -(-(int(x1) - int(x0) + 1) // n))  # ceil((span) / n)
        count = -(-(int(x1) - int(x0) + 1) // width)
        return Grid(x0, x1, count, width, True)
    width = (x1 - x0) / n if x1 > x0 else 1.0
    return Grid(x0, x1, n, width, False)


@dataclass(frozen=True)
class Point:
    """One point of a series: x (step or time), stored value and kind, and ``order`` which
    breaks ties between points of equal x (the later write wins: its journal time)."""

    x: float
    value: float | None
    kind: int = FINITE
    order: float = 0.0


@dataclass
class Bucket:
    """What a chart draws for one bucket: the last point, the finite min and max, the counts."""

    x: float
    value: float | None
    kind: int
    min: float | None
    max: float | None
    count: int
    nonfinite: int
    _order: float = 0.0

    def to_json(self) -> dict:
        out = {
            "x": self.x,
            "last": self.value,
            "min": self.min,
            "max": self.max,
            "count": self.count,
        }
        if self.kind != FINITE:
            out["kind"] = KIND_NAMES[self.kind]
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        return out


def downsample(points: Iterable[Point], g: Grid) -> list[Bucket]:
    """At most ``g.n`` buckets of the points with x in ``[g.x0, g.x1]``, ordered by x.

    The reference implementation: linear in the number of points, memory bounded by the number
    of buckets. The database computes the same with one ``GROUP BY``.
    """
    out: dict[int, Bucket] = {}
    for p in points:
        if p.x < g.x0 or p.x > g.x1:
            continue
        i = g.index(p.x)
        b = out.get(i)
        finite = p.kind == FINITE
        if b is None:
            out[i] = Bucket(
                p.x,
                p.value,
                p.kind,
                p.value if finite else None,
                p.value if finite else None,
                1,
                0 if finite else 1,
                p.order,
            )
            continue
        b.count += 1
        if finite:
            b.min = p.value if b.min is None else min(b.min, p.value)  # type: ignore[type-var]
            b.max = p.value if b.max is None else max(b.max, p.value)  # type: ignore[type-var]
        else:
            b.nonfinite += 1
        if (p.x, p.order) >= (b.x, b._order):
            b.x, b.value, b.kind, b._order = p.x, p.value, p.kind, p.order
    return [out[i] for i in sorted(out)]
