"""Block checksums: chunks carry a digest per block besides the whole-file sha256; readers check
each block when first read, never return bytes of a damaged block, remember a fully checked
chunk, and still read (and check whole) indexes written before block digests existed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from streamkit import make_dataset

import benchkit as bench
from benchkit.data.cache import VerifiedMarks
from benchkit.data.format import BLOCK_DIGEST_HEX, ChunkReader, encode_parts, write_records
from benchkit.data.index import dataset_prefix, load_index
from benchkit.errors import CorruptChunk

BLOCK = 4096


def _samples(n=40, size=1500):
    return [(i, bytes([i]) * size) for i in range(n)]


def _write(tmp_path: Path, block: int = BLOCK):
    records = []
    for i, s in enumerate(_samples()):
        parts, size = encode_parts(s, i)
        records.append((i, parts, size))
    return tmp_path / "c.bkc", write_records(tmp_path / "c.bkc", records, block_bytes=block)


def test_writer_records_whole_and_block_digests_of_the_same_bytes(tmp_path):
    path, w = _write(tmp_path)
    data = path.read_bytes()
    assert w.size == len(data) and w.sha256 == hashlib.sha256(data).hexdigest()
    expect = "".join(
        hashlib.sha256(data[i : i + BLOCK]).hexdigest()[:BLOCK_DIGEST_HEX]
        for i in range(0, len(data), BLOCK)
    )
    assert w.blocks == expect and len(w.blocks) // BLOCK_DIGEST_HEX == -(-len(data) // BLOCK)


def test_blocks_are_checked_when_first_read_and_a_damaged_one_is_never_returned(tmp_path):
    path, w = _write(tmp_path)
    data = bytearray(path.read_bytes())
    with ChunkReader(path, blocks=w.blocks, block_bytes=BLOCK) as r:
        last = r._offsets[len(r) - 1]
    data[last + 5] ^= 0xFF  # inside the last sample only
    path.write_bytes(bytes(data))
    done = []
    r = ChunkReader(path, blocks=w.blocks, block_bytes=BLOCK, on_verified=lambda: done.append(1))
    assert r[0] == (0, bytes([0]) * 1500)  # an intact block reads without hashing the rest
    assert not r.fully_verified
    with pytest.raises(CorruptChunk, match="checksum mismatch in block"):
        r[len(r) - 1]
    assert not done


def test_a_fully_read_chunk_calls_back_once(tmp_path):
    path, w = _write(tmp_path)
    done = []
    with ChunkReader(
        path, blocks=w.blocks, block_bytes=BLOCK, on_verified=lambda: done.append(1)
    ) as r:
        assert [s[0] for s in r] == list(range(40))
        assert r.fully_verified and done == [1]


def test_a_truncated_file_is_caught_by_the_block_count_at_open(tmp_path):
    path, w = _write(tmp_path)
    path.write_bytes(path.read_bytes()[:-BLOCK])
    with pytest.raises(CorruptChunk, match="blocks"):
        ChunkReader(path, blocks=w.blocks, block_bytes=BLOCK, label="chunk-x")


def test_dataset_index_has_blocks_and_streaming_marks_a_fully_read_chunk(tmp_path):
    url = str(tmp_path / "store")
    index = make_dataset(url, tmp_path, n=60)
    assert all(c.blocks and c.block_bytes for c in index.chunks)
    assert sorted(s[0] for s in bench.open_dataset("toy", store=url)) == list(range(60))
    path = tmp_path / "store" / dataset_prefix("toy") / index.chunks[0].file
    assert VerifiedMarks().is_verified(path, index.chunks[0].sha256, os.stat(path))


def _strip_blocks(url: str) -> None:
    key = Path(url) / dataset_prefix("toy") / "index.json"
    d = json.loads(key.read_text())
    for c in d["chunks"]:
        c.pop("blocks"), c.pop("block_bytes")
    key.write_text(json.dumps(d))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_index_without_block_digests_still_streams_and_is_checked_whole(tmp_path, workers):
    url = str(tmp_path / "store")
    index = make_dataset(url, tmp_path)
    _strip_blocks(url)
    assert not any(c.blocks for c in load_index(url, "toy").chunks)
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=2)
    loader = bench.StreamingDataLoader(ds, batch_size=4, num_workers=workers)
    assert sorted(int(x) for b in loader for x in b[0]) == list(range(len(ds)))
    path = tmp_path / "store" / dataset_prefix("toy") / index.chunks[1].file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match=index.chunks[1].file):
        list(bench.open_dataset("toy", store=url))


def test_readers_of_one_machine_share_the_blocks_they_checked(tmp_path):
    path, w = _write(tmp_path)
    marks = VerifiedMarks(tmp_path / "marks")
    st = os.stat(path)
    count = len(w.blocks) // BLOCK_DIGEST_HEX

    def reader(done):
        return ChunkReader(
            path,
            blocks=w.blocks,
            block_bytes=BLOCK,
            checked=marks.block_map(path, w.sha256, st, count),
            on_verified=lambda: done.append(1),
        )

    a_done, b_done = [], []
    a, b = reader(a_done), reader(b_done)  # say, two DataLoader workers
    for i in range(0, 20):
        a[i]
    for i in range(20, 40):
        b[i]
    assert not a_done and b_done == [1], "the second finished what the first left"
    assert reader([]).fully_verified  # a later reader checks nothing
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))  # a changed file starts with nothing checked
    with pytest.raises(CorruptChunk):
        c = ChunkReader(
            path,
            blocks=w.blocks,
            block_bytes=BLOCK,
            checked=marks.block_map(path, w.sha256, os.stat(path), count),
        )
        c[len(c) - 1]


def test_will_read_is_only_a_hint_and_checks_nothing(tmp_path):
    """The first batch's reads are issued at once (madvise) before its samples are read; the
    hint neither checks blocks nor lets a damaged one through, whatever indices it is given."""
    path, w = _write(tmp_path)
    data = bytearray(path.read_bytes())
    with ChunkReader(path, blocks=w.blocks, block_bytes=BLOCK) as r:
        last = r._offsets[len(r) - 1]
    data[last + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    r = ChunkReader(path, blocks=w.blocks, block_bytes=BLOCK)
    checked = bytes(r._checked)
    r.will_read([0, 3, len(r) - 1, len(r) + 7, -2])  # out-of-range ones are ignored
    assert bytes(r._checked) == checked and not r.fully_verified
    assert r[3] == (3, bytes([3]) * 1500)
    with pytest.raises(CorruptChunk, match="checksum mismatch in block"):
        r[len(r) - 1]
    r.close()
    r.will_read([0])  # closed: nothing happens


def test_the_prefetcher_checks_a_local_chunk_ahead_and_leaves_a_damaged_block_to_its_reader(
    tmp_path,
):
    """A local chunk's preparation checks its blocks in the shared map, so the DataLoader
    workers find them checked; a damaged block is not marked, and its reader reports it."""
    from benchkit.data.source import LocalChunks
    from benchkit.store import open_store

    url = str(tmp_path / "store")
    big = [(i, bytes([i]) * 100_000) for i in range(24)]  # chunks of several 256 KiB blocks
    index = make_dataset(url, tmp_path, samples=big, chunk_bytes=1_000_000)
    assert len(index.chunks) >= 2 and len(index.chunks[1].blocks) // BLOCK_DIGEST_HEX > 2
    source = LocalChunks(open_store(url), "toy", index)
    root = tmp_path / "store" / dataset_prefix("toy")
    good, bad = (root / c.file for c in index.chunks[:2])
    info = index.chunks[1]
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0xFF  # the last sample's bytes, in the last block
    bad.write_bytes(bytes(data))

    assert source.prepare(0) is None
    assert source.marks.is_verified(good, index.chunks[0].sha256, os.stat(good))
    with source.open(0) as r:
        assert r.fully_verified  # nothing is left for the workers to hash

    assert source.prepare(1) is None  # no error here: the reader of the block reports it
    assert not source.marks.is_verified(bad, info.sha256, os.stat(bad))
    count = len(info.blocks) // BLOCK_DIGEST_HEX
    checked = bytes(source.marks.block_map(bad, info.sha256, os.stat(bad), count))
    assert checked[:-1] == b"\x01" * (count - 1) and checked[-1:] == b"\x00"
    r = source.open(1)
    assert r[0][1] == bytes([r[0][0]]) * 100_000  # an intact block reads
    with pytest.raises(CorruptChunk, match="checksum mismatch in block"):
        r[len(r) - 1]
