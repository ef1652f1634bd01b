"""The metric journal and its sender: CRC frames that tolerate a torn tail, seqs per writer,
segments trimmed once acknowledged, batches retried with the same key, readers that keep a
record once."""

from __future__ import annotations

import json

import pytest

from benchkit.store import open_store
from benchkit.training import journal as journal_mod
from benchkit.training import runs
from benchkit.training.journal import Journal, find_journals
from benchkit.training.sender import Sender, StoreSink, send_pending


def make(tmp_path, n: int) -> Journal:
    j = Journal.create("run-1", "w1", str(tmp_path / "store"), root=tmp_path / "journal")
    j.append([{"step": i, "values": {"x": float(i)}} for i in range(n)])
    j.sync()
    return j


def seqs(records):
    return [r.seq for r in records]


@pytest.mark.parametrize("memory", [True, False], ids=["from-memory", "from-disk"])
def test_records_get_consecutive_seqs_and_read_back_in_batches(tmp_path, monkeypatch, memory):
    if not memory:
        monkeypatch.setattr(journal_mod, "MEMORY_BYTES", 1)
    j = make(tmp_path, 25)
    assert j.last_seq == 25 and j.last_written() == 25
    first = j.read(0, 10, 1 << 20)
    assert seqs(first) == list(range(1, 11))
    assert json.loads(first[0].payload) == {"step": 0, "values": {"x": 0.0}, "seq": 1}
    assert seqs(j.read(10, 100, 1 << 20)) == list(range(11, 26))
    j.ack(20)
    assert seqs(j.read(20, 100, 1 << 20)) == [21, 22, 23, 24, 25] and j.unsent() == 5
    # another process (benchkit sync) reads the same journal from disk
    other = Journal.open(j.dir)
    assert other.acked() == 20 and seqs(other.read(20, 100, 1 << 20)) == [21, 22, 23, 24, 25]


def test_a_torn_or_corrupt_tail_is_ignored(tmp_path):
    j = make(tmp_path, 5)
    j.close()
    [(_, seg)] = j.segments()
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])  # killed while appending the 5th record
    assert seqs(Journal.open(j.dir).read(0, 100, 1 << 20)) == [1, 2, 3, 4]
    flipped = bytearray(data)
    flipped[-2] ^= 0xFF  # a flipped byte in the 5th record's payload
    seg.write_bytes(bytes(flipped))
    assert seqs(Journal.open(j.dir).read(0, 100, 1 << 20)) == [1, 2, 3, 4]


def test_segments_roll_over_and_acknowledged_ones_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "SEGMENT_BYTES", 200)
    monkeypatch.setattr(journal_mod, "MEMORY_BYTES", 1)
    j = make(tmp_path, 30)
    segs = j.segments()
    assert len(segs) > 3 and segs[0][0] == 1
    assert seqs(j.read(0, 100, 1 << 20)) == list(range(1, 31))
    j.ack(segs[2][0] - 1)  # everything in the first two segments
    assert [first for first, _ in j.segments()] == [first for first, _ in segs[2:]]
    assert seqs(j.read(segs[2][0] - 1, 100, 1 << 20))[0] == segs[2][0]


def test_a_refused_batch_is_kept_and_sent_again_with_the_same_key(tmp_path, switchable_store):
    j = Journal.create("run-1", "w1", str(switchable_store.path), root=tmp_path / "journal")
    j.append([{"step": i, "values": {"x": float(i)}} for i in range(10)])
    store = open_store(switchable_store.path)
    (switchable_store.real / "runs" / "run-1").mkdir(parents=True)
    sender = Sender(j, StoreSink(store))
    switchable_store.read_only()
    assert sender.step() is False and sender.failures == 1 and j.acked() == 0
    j.append([{"step": 10, "values": {"x": 10.0}}])  # logged while the store was refusing
    switchable_store.writable()
    sender.retry_at = 0
    assert sender.step() is True  # exactly the refused batch, records 1-10
    assert store.list("runs/run-1/metrics/") == [runs.metric_part_key("run-1", "w1", 1, 10)]
    assert sender.step() is True and j.acked() == 11
    # a crash between a write and its acknowledgement: `benchkit sync` sends again, overlapping
    j.ack(5)
    assert send_pending(Journal.open(j.dir), StoreSink(store), timeout=10) == (6, 0)
    events = runs.read_events(store, "run-1")
    assert [e["values"]["x"] for e in events] == [float(i) for i in range(11)]  # each once


def test_find_journals_lists_writers_of_a_run(tmp_path):
    root = tmp_path / "journal"
    Journal.create("run-a", "w1", "s", root=root)
    Journal.create("run-a", "w2", "s", root=root)
    Journal.create("run-b", "w1", "s", root=root)
    assert [(j.run_id, j.writer) for j in find_journals(root=root)] == [
        ("run-a", "w1"),
        ("run-a", "w2"),
        ("run-b", "w1"),
    ]
    assert [j.writer for j in find_journals("run-a", root=root)] == ["w1", "w2"]
