"""The ingest rules as pure functions: the cursor (409/skip replay), parsing, summaries."""

from __future__ import annotations

import math
import random

import pytest

from benchkit.server.services.downsample import FINITE, NAN, NEG_INF, POS_INF
from benchkit.server.services.ingest import (
    BatchError,
    SeqGap,
    Summary,
    _parse_records,
    accept,
    check_key,
    check_writer,
    parse_batch,
    parse_value,
    value_json,
)


def test_a_fresh_batch_moves_the_cursor_past_it():
    assert accept("w", 0, 0, 5).next_seq == 5
    a = accept("w", 5, 5, 3)
    assert (a.skip, a.next_seq) == (0, 8)


def test_a_replayed_batch_is_skipped_entirely():
    a = accept("w", 8, 5, 3)
    assert (a.skip, a.next_seq) == (3, 8)


def test_a_partly_replayed_batch_inserts_only_the_new_records():
    a = accept("w", 6, 5, 3)
    assert (a.skip, a.next_seq) == (1, 8)


def test_a_batch_after_a_gap_is_refused_with_the_expected_seq():
    with pytest.raises(SeqGap) as e:
        accept("w-1", 4, 6, 2)
    assert e.value.expected_seq == 4
    assert "resend from 4" in str(e.value)


def test_applying_any_split_of_a_journal_in_any_retry_order_gives_each_record_once():
    journal = list(range(20))
    batches = [(0, 7), (7, 5), (3, 9), (12, 8), (0, 20), (19, 1)]  # (first_seq, count)
    cursor, stored = 0, []
    for first, count in batches:
        try:
            a = accept("w", cursor, first, count)
        except SeqGap:
            continue
        stored += journal[first + a.skip : first + count]
        cursor = a.next_seq
    assert stored == journal


def test_values_parse_with_explicit_non_finite_tags():
    assert parse_value("a", 1) == (1.0, FINITE)
    assert parse_value("a", True) == (1.0, FINITE)
    assert parse_value("a", "NaN") == (None, NAN)
    assert parse_value("a", "Infinity") == (None, POS_INF)
    assert parse_value("a", "-Infinity") == (None, NEG_INF)
    assert value_json(None, NAN) == "NaN" and value_json(2.5, FINITE) == 2.5
    for bad in ("nan", "1.0", None, [1], {"v": 1}):
        with pytest.raises(BatchError, match="not a number"):
            parse_value("a", bad)


def test_records_parse_into_points_per_metric_and_messages():
    batch = parse_batch(
        [
            {"t": 10.0, "step": 0, "values": {"loss": 1.0, "acc": 0.5}},
            {"t": 11.0, "message": "checkpoint saved"},
            {"t": 12.0, "step": 1, "values": {"loss": "NaN"}},
            {"t": 13.0, "values": {"acc": 1}},  # no step: its seq
        ],
        first_seq=40,
    )
    assert {k: s.points() for k, s in batch.series.items()} == {
        "loss": [(0, 1.0, FINITE, 10.0, 40), (1, None, NAN, 12.0, 42)],
        "acc": [(0, 0.5, FINITE, 10.0, 40), (43, 1.0, FINITE, 13.0, 43)],
    }
    assert batch.messages == [(41, 11.0, "checkpoint saved")]
    assert batch.points == 4


@pytest.mark.parametrize(
    "rec, match",
    [
        ({"step": 0, "values": {}}, "unix time"),
        ({"t": "now", "values": {}}, "unix time"),
        ({"t": math.inf, "values": {}}, "unix time"),
        ({"t": 1.0, "step": -1, "values": {}}, "integer >= 0"),
        ({"t": 1.0, "step": 1.5, "values": {}}, "integer >= 0"),
        ({"t": 1.0, "values": []}, "must be an object"),
        ({"t": 1.0, "message": 3}, "must be a string"),
        ({"t": 1.0, "values": {"": 1}}, "not allowed"),
        ({"t": 1.0, "values": {"a\nb": 1}}, "not allowed"),
        ({"t": 1.0, "values": {"x" * 251: 1}}, "not allowed"),
        ({"t": 1.0, "step": True, "values": {}}, "integer >= 0"),
        ("not a record", "must be an object"),
    ],
)
def test_malformed_records_are_refused_with_the_reason(rec, match):
    with pytest.raises(BatchError, match=match):
        parse_batch([rec], first_seq=0)


def test_metric_names_may_hold_what_people_log_but_no_control_characters():
    for ok in ("loss", "val/acc", "lr-group.0", "top-1 (%)", "<script>alert(1)</script>"):
        assert check_key(ok) == ok
    for bad in (" loss", "loss ", "a\x00b", 3):
        with pytest.raises(BatchError):
            check_key(bad)
    assert check_writer("20261124-153000-run-ab12.rank0.a1") == "20261124-153000-run-ab12.rank0.a1"
    with pytest.raises(BatchError):
        check_writer("../w")


def test_summary_keeps_last_by_time_and_finite_min_max():
    batch = parse_batch(
        [
            {"t": 1.0, "step": 0, "values": {"loss": 3.0}},
            {"t": 2.0, "step": 1, "values": {"loss": "-Infinity"}},
            {"t": 3.0, "step": 2, "values": {"loss": 0.5}},
            {"t": 4.0, "step": 1, "values": {"loss": 2.0}},  # a resumed attempt re-logs step 1
        ],
        first_seq=0,
    )
    s = Summary.of(batch.series["loss"])
    assert (s.min, s.max, s.count, s.nonfinite) == (0.5, 3.0, 4, 1)
    assert (s.last, s.last_step, s.first_step, s.max_step) == (2.0, 1, 0, 2)


def test_a_batch_has_bounded_size():
    with pytest.raises(BatchError, match="at most"):
        parse_batch([{"t": 1.0, "values": {}}] * 10_001, first_seq=0)
    with pytest.raises(BatchError, match="at most 100000 points"):
        parse_batch([{"t": 1.0, "values": {f"k{i}": 1.0 for i in range(1000)}}] * 101, 0)


def _random_batch(rng: random.Random, n: int) -> list:
    """Records as real runs send them: mostly one shape, sometimes other metrics, messages,
    records without a step, ints and non-finite tags, steps logged again."""
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            out.append({"t": 100.0 + i, "message": f"line {i}"})
            continue
        values = {"loss": rng.gauss(0, 1), "acc": rng.random()}
        if r < 0.15:
            values = {"val/acc": rng.choice([1, 0.5, "NaN", "Infinity", "-Infinity"])}
        elif r < 0.2:
            values["epoch"] = i // 10
        rec = {"t": 100.0 + (i if rng.random() > 0.1 else 0), "values": values}
        if rng.random() > 0.05:
            rec["step"] = i if rng.random() > 0.05 else max(0, i - 3)
        if rng.random() < 0.02:
            rec["message"] = "and a message"
        out.append(rec)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_column_parse_equals_the_record_by_record_reference(seed):
    rng = random.Random(seed)
    raw = _random_batch(rng, rng.choice([1, 2, 50, 500]))
    want = _parse_records(raw, first_seq=7)
    got = parse_batch(raw, first_seq=7)
    assert {k: s.points() for k, s in got.series.items()} == {
        k: s.points() for k, s in want.series.items()
    }
    assert got.messages == want.messages
    for key, s in got.series.items():
        assert Summary.of(s) == Summary.of(want.series[key])


@pytest.mark.parametrize(
    "rec",
    [
        {"t": 1.0, "step": 0, "values": {"a": 10**400}},  # an int no float holds
        {"t": 1.0, "step": 0, "values": {"a": True}},  # a bool is a number, stored as 1.0
        {"t": 1, "step": 0, "values": {"a": 1.7e308}},  # finite, but the column sums to inf
    ],
)
def test_values_the_column_checks_leave_to_the_reference_parse_the_same(rec):
    raw = [rec, {"t": 2.0, "step": 1, "values": {"a": 1.7e308}}]
    try:
        want = {k: s.points() for k, s in _parse_records(raw, 1).series.items()}
    except (BatchError, OverflowError) as e:
        with pytest.raises(type(e)):
            parse_batch(raw, 1)
        return
    assert {k: s.points() for k, s in parse_batch(raw, 1).series.items()} == want
