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

So a retry can neither duplicate points nor leave a gap, and the unique key
``(run, writer, seq, metric)`` in the table is a second line of defence, not the mechanism.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
#: a :class:`~.downsample.Point` plus the seq (a plain tuple: ingest makes millions of them)
Pt = tuple[int, "float | None", int, float, int]


@dataclass
class Batch:
    """A parsed batch: per metric its points, and the messages ``(seq, time, text)``."""

    series: dict[str, list[Pt]] = field(default_factory=dict)
    messages: list[tuple[int, float, str]] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.series.values())


def _bad(seq: int, what: str) -> BatchError:
    return BatchError(f"record seq {seq}: {what}")


def parse_batch(raw: Sequence[Mapping[str, Any]], first_seq: int) -> Batch:
    """Validate and parse records (``{"t", "step", "values"}`` or ``{"t", "message"}``; record
    ``i`` has seq ``first_seq + i``; a record without a step takes its seq as step)."""
    if len(raw) > MAX_RECORDS:
        raise BatchError(f"a batch holds at most {MAX_RECORDS} records, got {len(raw)}")
    out = Batch()
    series = out.series
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
            out.messages.append((seq, float(ts), message))
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
            if type(v) is float and -math.inf < v < math.inf:  # the common case, inline
                pts.append((step, v, FINITE, ts, seq))
            else:
                value, kind = parse_value(k, v)
                pts.append((step, value, kind, ts, seq))
    return out


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
    def of(cls, points: Iterable[Pt]) -> Summary:
        s = cls()
        last: Pt | None = None
        for p in points:
            step, value, kind, ts = p[0], p[1], p[2], p[3]
            s.count += 1
            if kind == FINITE:
                if s.min is None or value < s.min:  # type: ignore[operator]
                    s.min = value
                if s.max is None or value > s.max:  # type: ignore[operator]
                    s.max = value
            else:
                s.nonfinite += 1
            if last is None or ts >= last[3]:
                last = p
            if step < s.first_step:
                s.first_step = step
            if step > s.max_step:
                s.max_step = step
        if last is not None:
            s.last, s.last_kind, s.last_step, s.last_ts = last[1], last[2], last[0], last[3]
        return s
