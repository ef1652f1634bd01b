"""What a metric batch means, independent of the database: the cursor rule and the points.

Every writer (one process of one attempt of a run) numbers its journal records 0, 1, 2, ...
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


@dataclass(frozen=True)
class Row:
    """One point to insert: metric name, sequence number of its record, step, time, value."""

    key: str
    seq: int
    step: int
    ts: float
    value: float | None
    kind: int


@dataclass
class Record:
    """One journal record of a batch: the values logged by one ``log()`` call, or a message."""

    step: int
    ts: float
    values: dict[str, tuple[float | None, int]] = field(default_factory=dict)
    message: str | None = None


def parse_records(raw: Sequence[Mapping[str, Any]], first_seq: int) -> list[Record]:
    """Validate a batch's records (``{"step", "t", "values"}`` or ``{"t", "message"}``)."""
    if len(raw) > MAX_RECORDS:
        raise BatchError(f"a batch holds at most {MAX_RECORDS} records, got {len(raw)}")
    out: list[Record] = []
    points = 0
    for i, rec in enumerate(raw):
        seq = first_seq + i
        ts = rec.get("t")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise BatchError(f"record seq {seq}: 't' must be a unix time in seconds, got {ts!r}")
        step = rec.get("step", seq)
        if step is None:
            step = seq
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
            raise BatchError(f"record seq {seq}: 'step' must be an integer >= 0, got {step!r}")
        message = rec.get("message")
        if message is not None and not isinstance(message, str):
            raise BatchError(f"record seq {seq}: 'message' must be a string")
        values = rec.get("values")
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise BatchError(f"record seq {seq}: 'values' must be an object")
        parsed = {check_key(k): parse_value(k, v) for k, v in values.items()}
        points += len(parsed)
        if points > MAX_POINTS:
            raise BatchError(f"a batch holds at most {MAX_POINTS} points")
        out.append(Record(step=step, ts=float(ts), values=parsed, message=message))
    return out


def rows(records: Iterable[Record], first_seq: int) -> list[Row]:
    """The points of ``records`` (numbered from ``first_seq``), one row per logged value."""
    return [
        Row(key, first_seq + i, rec.step, rec.ts, value, kind)
        for i, rec in enumerate(records)
        for key, (value, kind) in rec.values.items()
    ]


@dataclass
class Summary:
    """Per metric of a run: its last point (the latest logged), finite min and max, count."""

    last: float | None = None
    last_kind: int = FINITE
    last_step: int = -1
    last_ts: float = -math.inf
    min: float | None = None
    max: float | None = None
    count: int = 0

    def add(self, row: Row) -> None:
        self.count += 1
        if row.kind == FINITE:
            self.min = row.value if self.min is None else min(self.min, row.value)  # type: ignore[type-var]
            self.max = row.value if self.max is None else max(self.max, row.value)  # type: ignore[type-var]
        if row.ts >= self.last_ts:
            self.last, self.last_kind = row.value, row.kind
            self.last_step, self.last_ts = row.step, row.ts


def summarize(rows_: Iterable[Row], into: dict[str, Summary] | None = None) -> dict[str, Summary]:
    """Fold ``rows_`` into per-metric summaries (updating ``into`` when given)."""
    out = into if into is not None else {}
    for row in rows_:
        s = out.get(row.key)
        if s is None:
            s = out[row.key] = Summary()
        s.add(row)
    return out
