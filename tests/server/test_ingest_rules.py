"""The ingest rules as pure functions: the cursor (409/skip replay), parsing, summaries."""

from __future__ import annotations

import math

import pytest

from benchkit.server.services.downsample import FINITE, NAN, NEG_INF, POS_INF
from benchkit.server.services.ingest import (
    BatchError,
    SeqGap,
    accept,
    check_key,
    check_writer,
    parse_records,
    parse_value,
    rows,
    summarize,
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


def test_records_parse_and_flatten_into_one_row_per_value():
    recs = parse_records(
        [
            {"t": 10.0, "step": 0, "values": {"loss": 1.0, "acc": 0.5}},
            {"t": 11.0, "message": "checkpoint saved"},
            {"t": 12.0, "step": 1, "values": {"loss": "NaN"}},
        ],
        first_seq=40,
    )
    got = [(r.key, r.seq, r.step, r.value, r.kind) for r in rows(recs, 40)]
    assert got == [
        ("loss", 40, 0, 1.0, FINITE),
        ("acc", 40, 0, 0.5, FINITE),
        ("loss", 42, 1, None, NAN),
    ]
    assert recs[1].message == "checkpoint saved" and recs[1].step == 41  # no step: its seq


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
    ],
)
def test_malformed_records_are_refused_with_the_reason(rec, match):
    with pytest.raises(BatchError, match=match):
        parse_records([rec], first_seq=0)


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
    recs = parse_records(
        [
            {"t": 1.0, "step": 0, "values": {"loss": 3.0}},
            {"t": 2.0, "step": 1, "values": {"loss": "-Infinity"}},
            {"t": 3.0, "step": 2, "values": {"loss": 0.5}},
            {"t": 4.0, "step": 1, "values": {"loss": 2.0}},  # a resumed attempt re-logs step 1
        ],
        first_seq=0,
    )
    s = summarize(rows(recs, 0))["loss"]
    assert (s.min, s.max, s.count) == (0.5, 3.0, 4)
    assert (s.last, s.last_step) == (2.0, 1)
