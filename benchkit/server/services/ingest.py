"""What a metric batch means, independent of the database: the cursor rule and the points.

Every writer (one process of one attempt of a run) numbers its journal records 1, 2, 3, ...
and sends them in batches ``(writer, first_seq, records)``; record ``i`` of a batch has sequence
number ``first_seq + i``. The server keeps, per (run, writer), the next sequence number it
expects (the ingest cursor) and applies a batch all or nothing:

* ``first_seq > next_seq``: records are missing in between, the batch is refused with 409 and
  ``expected_seq`` (the client rewinds its journal and resends from there);
* records below ``next_seq`` were stored by an earlier try (a retried batch, a second ``sync``)
  and are skipped;
* the rest is inserted and the cursor moves to ``first_seq + len(records)``.

So a retry can neither duplicate points nor leave a gap, and the points' primary key
``(series, step, writer, seq)`` (a series is one metric of one run; a record's step never
changes) is a second line of defence, not the mechanism.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import le
from typing import Any

from benchkit.server.services.downsample import FINITE, NAN, NEG_INF, POS_INF, classify

#: the seq of a writer's first record (the client's journal counts from 1)
FIRST_SEQ = 1
#: limits of one batch and one run (SERVER.md §7)
MAX_RECORDS = 10_000
MAX_POINTS = 100_000
MAX_KEY_CHARS = 250
MAX_KEYS_PER_RUN = 10_000
MAX_STEP = 2**63 - 1
WRITER_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")
#: metric names: what people log (``loss``, ``val/acc``, ``lr-group.0``, ``top-1 (%)``);
#: no control characters, no leading/trailing space. Rendering escapes them anyway.
KEY_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,250}$")

#: the JSON spellings of the non-finite values (JSON has no NaN; JavaScript's Number() reads
#: these three, Python's float() too)
NONFINITE = {"NaN": NAN, "Infinity": POS_INF, "-Infinity": NEG_INF}
NONFINITE_JSON = {v: k for k, v in NONFINITE.items()}


class BatchError(ValueError):
    """A batch is malformed (400/422): the message says which record and what is wrong."""


class SeqGap(Exception):
    """The batch starts after the next expected sequence number (409 with ``expected_seq``)."""

    def __init__(self, writer: str, expected_seq: int, first_seq: int) -> None:
        self.writer = writer
        self.expected_seq = expected_seq
        self.first_seq = first_seq
        super().__init__(
            f"writer {writer}: batch starts at seq {first_seq} but the server expects "
            f"{expected_seq}; resend from {expected_seq}"
        )


@dataclass(frozen=True)
class Accepted:
    """How a batch applies to a cursor: skip the first ``skip`` records, then move the cursor
    to ``next_seq``."""

    skip: int
    next_seq: int


def accept(writer: str, next_seq: int, first_seq: int, count: int) -> Accepted:
    """Apply the cursor rule (see the module docstring) to a batch of ``count`` records."""
    if first_seq > next_seq:
        raise SeqGap(writer, next_seq, first_seq)
    skip = min(count, next_seq - first_seq)
    return Accepted(skip=skip, next_seq=max(next_seq, first_seq + count))


def parse_value(key: str, value: Any) -> tuple[float | None, int]:
    """``(stored value, kind)`` of a JSON value: a number, or ``"NaN"``/``"Infinity"``/
    ``"-Infinity"``. Anything else is a :class:`BatchError`."""
    if type(value) is float and math.isfinite(value):  # the common case, first
        return value, FINITE
    if isinstance(value, bool):
        return float(value), FINITE
    if isinstance(value, (int, float)):
        return classify(float(value))
    if isinstance(value, str) and value in NONFINITE:
        return None, NONFINITE[value]
    raise BatchError(
        f"metric {key!r}: value {value!r} is not a number (send numbers, or the strings "
        '"NaN", "Infinity", "-Infinity")'
    )


def value_json(value: float | None, kind: int) -> float | str:
    """The JSON form of a stored value (the inverse of :func:`parse_value`)."""
    return value if kind == FINITE else NONFINITE_JSON[kind]  # type: ignore[return-value]


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key) or key != key.strip():
        raise BatchError(
            f"metric name {key!r} is not allowed: 1 to {MAX_KEY_CHARS} characters, no control "
            "characters, no leading or trailing space"
        )
    return key


def check_writer(writer: Any) -> str:
    if not isinstance(writer, str) or not WRITER_RE.match(writer):
        raise BatchError(
            f"writer id {writer!r} is not allowed: 1 to 120 characters of A-Z a-z 0-9 _ . : -"
        )
    return writer


#: one point of one metric: ``(step, stored value, kind, journal time, seq of its record)``,
#: a :class:`~.downsample.Point` plus the seq
Pt = tuple[int, "float | None", int, float, int]


@dataclass
class Series:
    """The points of one metric in a batch as columns, in record order (ingest handles
    millions of points: columns let the C loops of ``min``, ``zip`` and ``executemany`` do
    the work that a tuple per point would leave to Python). ``kinds`` is None when every
    value is finite."""

    steps: list[int]
    values: list[float | None]
    kinds: list[int] | None
    ts: list[float]
    seqs: list[int]

    def __len__(self) -> int:
        return len(self.steps)

    def points(self) -> list[Pt]:
        kinds = self.kinds if self.kinds is not None else repeat(FINITE)
        return list(zip(self.steps, self.values, kinds, self.ts, self.seqs, strict=False))

    @classmethod
    def of_points(cls, points: Sequence[Pt]) -> Series:
        steps, values, kinds, ts, seqs = [list(c) for c in zip(*points, strict=False)] or [
            [],
            [],
            [],
            [],
            [],
        ]
        return cls(steps, values, kinds if any(kinds) else None, ts, seqs)


@dataclass
class Batch:
    """A parsed batch: per metric its points, and the messages ``(seq, time, text)``."""

    series: dict[str, Series] = field(default_factory=dict)
    messages: list[tuple[int, float, str]] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.series.values())


def _bad(seq: int, what: str) -> BatchError:
    return BatchError(f"record seq {seq}: {what}")


def parse_batch(raw: Sequence[Mapping[str, Any]], first_seq: int) -> Batch:
    """Validate and parse records (``{"t", "step", "values"}`` or ``{"t", "message"}``; record
    ``i`` has seq ``first_seq + i``; a record without a step takes its seq as step).

    Whole columns are checked at once (:func:`_parse_columns`); a batch that fails any of
    those checks is parsed record by record (:func:`_parse_records`), which either accepts
    what the bulk checks were too strict for or names the record at fault."""
    if len(raw) > MAX_RECORDS:
        raise BatchError(f"a batch holds at most {MAX_RECORDS} records, got {len(raw)}")
    batch = _parse_columns(raw, first_seq)
    return batch if batch is not None else _parse_records(raw, first_seq)


_NUMBER_TYPES = {float, int}


def _finite(col: Sequence[float | int]) -> bool:
    """Whether a column of numbers is finite, all at once (a sum that overflows says no too:
    the caller then looks at each item)."""
    try:
        return math.isfinite(sum(col))
    except OverflowError:  # an int too large for a float
        return False


def _finite_numbers(col: Sequence[Any]) -> bool:
    """Whether every item is a float or int (not a bool) and every one is finite."""
    return set(map(type, col)) <= _NUMBER_TYPES and _finite(col)


def _parse_columns(raw: Sequence[Any], first_seq: int) -> Batch | None:
    """The batch parsed a column at a time, or None when a record is not plainly valid."""
    n = len(raw)
    if not n or set(map(type, raw)) != {dict}:
        return None
    ts = [r.get("t") for r in raw]
    if not _finite_numbers(ts):
        return None
    seqs = list(range(first_seq, first_seq + n))
    steps = [r.get("step") for r in raw]
    if None in steps:
        steps = [q if s is None else s for s, q in zip(steps, seqs, strict=False)]
    if set(map(type, steps)) != {int} or min(steps) < 0 or max(steps) > MAX_STEP:
        return None
    out = Batch()
    texts = [r.get("message") for r in raw]
    if texts.count(None) != n:
        if not set(map(type, texts)) <= {str, type(None)}:
            return None
        out.messages = [
            (q, float(t), m) for q, t, m in zip(seqs, ts, texts, strict=False) if m is not None
        ]
    values = [r.get("values") for r in raw]
    rows = [i for i, v in enumerate(values) if v is not None]
    if len(rows) < n:
        values = [values[i] for i in rows]
    if set(map(type, values)) - {dict}:
        return None
    if sum(map(len, values)) > MAX_POINTS:
        raise BatchError(f"a batch holds at most {MAX_POINTS} points")
    for key, (idx, col) in _columns(rows, values).items():
        check_key(key)
        out.series[key] = _series(key, idx, col, steps, ts, seqs, n)
    return out


def _columns(rows: list[int], values: list[dict]) -> dict[str, tuple[list[int], Sequence]]:
    """Per metric, the indexes of the records holding it and its values there: records with
    the same metrics in the same order are transposed at once (``zip(*...)``)."""
    shapes: dict[tuple, list[int]] = dict.fromkeys(map(tuple, values))  # type: ignore[arg-type]
    if len(shapes) > 1:
        shapes = {}
        for pos, v in enumerate(values):
            shape = tuple(v)
            have = shapes.get(shape)
            if have is None:
                shapes[shape] = [pos]
            else:
                have.append(pos)
    out: dict[str, tuple[list[int], Sequence]] = {}
    for shape, where in shapes.items():
        if len(shapes) == 1:
            idx, cols = rows, zip(*map(dict.values, values), strict=False)
        else:
            idx = [rows[p] for p in where]
            cols = zip(*(values[p].values() for p in where), strict=False)
        for key, col in zip(shape, cols, strict=False):
            have = out.get(key)
            if have is None:
                out[key] = (idx, col)
            else:  # the metric is in records of several shapes: merge them in record order
                merged = sorted(zip((*have[0], *idx), (*have[1], *col), strict=False))
                out[key] = ([i for i, _ in merged], [v for _, v in merged])
    return out


def _series(
    key: str,
    idx: list[int],
    col: Sequence[Any],
    steps: list[int],
    ts: list,
    seqs: list[int],
    n: int,
) -> Series:
    """The series of one metric from its values ``col`` in records ``idx`` (of ``n``)."""
    if len(idx) < n:
        steps, ts, seqs = (list(map(c.__getitem__, idx)) for c in (steps, ts, seqs))
    types = set(map(type, col))
    if types <= _NUMBER_TYPES and _finite(col):
        return Series(steps, list(col if types == {float} else map(float, col)), None, ts, seqs)
    parsed = [parse_value(key, v) for v in col]
    return Series(steps, [v for v, _ in parsed], [k for _, k in parsed], ts, seqs)


def _parse_records(raw: Sequence[Mapping[str, Any]], first_seq: int) -> Batch:
    """:func:`parse_batch` one record at a time: the reference, with the precise errors."""
    series: dict[str, list[Pt]] = {}
    messages: list[tuple[int, float, str]] = []
    n_points = 0
    for seq, rec in enumerate(raw, first_seq):
        if type(rec) is not dict and not isinstance(rec, Mapping):
            raise _bad(seq, "a record must be an object")
        ts = rec.get("t")
        if type(ts) not in (float, int) or not math.isfinite(ts):
            raise _bad(seq, f"'t' must be a unix time in seconds, got {ts!r}")
        step = rec.get("step")
        if step is None:
            step = seq
        elif type(step) is not int or not 0 <= step <= MAX_STEP:
            raise _bad(seq, f"'step' must be an integer >= 0, got {step!r}")
        message = rec.get("message")
        if message is not None:
            if not isinstance(message, str):
                raise _bad(seq, "'message' must be a string")
            messages.append((seq, float(ts), message))
        values = rec.get("values")
        if values is None:
            continue
        if type(values) is not dict and not isinstance(values, Mapping):
            raise _bad(seq, "'values' must be an object")
        n_points += len(values)
        if n_points > MAX_POINTS:
            raise BatchError(f"a batch holds at most {MAX_POINTS} points")
        for k, v in values.items():
            pts = series.get(k)
            if pts is None:
                pts = series[check_key(k)] = []
            value, kind = parse_value(k, v)
            pts.append((step, value, kind, ts, seq))
    return Batch({k: Series.of_points(p) for k, p in series.items()}, messages)


@dataclass
class Summary:
    """Per metric of a run: its last point (the latest logged, by journal time), the finite min
    and max, the number of points and of non-finite ones, and the step range."""

    last: float | None = None
    last_kind: int = FINITE
    last_step: int = -1
    last_ts: float = -math.inf
    min: float | None = None
    max: float | None = None
    count: int = 0
    nonfinite: int = 0
    first_step: int = MAX_STEP
    max_step: int = -1

    @classmethod
    def of(cls, series: Series) -> Summary:
        n = len(series)
        s = cls(count=n, first_step=min(series.steps), max_step=max(series.steps))
        values = series.values
        if series.kinds is not None:
            values = [v for v, k in zip(values, series.kinds, strict=False) if k == FINITE]
            s.nonfinite = n - len(values)
        if values:
            s.min, s.max = min(values), max(values)
        ts = series.ts
        # the latest logged; of equal times, the later record
        i = n - 1 if all(map(le, ts, ts[1:])) else max(zip(ts, range(n), strict=False))[1]
        s.last, s.last_step, s.last_ts = series.values[i], series.steps[i], ts[i]
        s.last_kind = FINITE if series.kinds is None else series.kinds[i]
        return s
