"""Batches of stored files: through DataLoader workers as references to the mapped chunk (no
copy), else packed in shared memory; zero-copy without workers; a replaced chunk is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from streamkit import make_dataset

import benchkit as bench
from benchkit.data import batch as batch_mod
from benchkit.data.batch import FileBatch, collate
from benchkit.data.loader import StreamingDataLoader
from benchkit.data.sample import ChunkFile
from benchkit.errors import CorruptChunk

N = 30


@pytest.fixture(scope="module")
def files_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    (tmp / "f").mkdir()
    samples = []
    for i in range(N):
        p = tmp / "f" / f"{i}.bin"
        p.write_bytes(bytes([i % 251]) * (100 + 37 * i))
        samples.append((bench.File(p), i))
    url = str(tmp / "store")
    make_dataset(url, tmp, name="files", samples=samples, chunk_bytes=3000)
    return url


def expected(i: int) -> bytes:
    return bytes([i % 251]) * (100 + 37 * i)


@pytest.mark.multiprocess
@pytest.mark.parametrize("workers", [0, 2])
def test_file_fields_arrive_as_file_batches_with_every_byte(files_url, workers):
    ds = bench.open_dataset("files", store=files_url, shuffle=True, seed=1)
    seen = 0
    for files, labels in StreamingDataLoader(ds, batch_size=4, num_workers=workers):
        assert isinstance(files, FileBatch) and len(files) == len(labels)
        for f, i in zip(files, labels.tolist(), strict=True):
            assert (
                isinstance(f, ChunkFile) and f.read() == expected(i) and len(f) == len(expected(i))
            )
            assert f.origin is not None, "a view of the mapped chunk, not a copy"
        assert [bytes(t.numpy()) for t in files.tensors()] == [expected(i) for i in labels.tolist()]
        seen += len(labels)
    assert seen == N


def test_files_without_a_chunk_are_packed_into_one_buffer():
    files = [ChunkFile(b"abc", "a.txt"), ChunkFile(b"", "e"), ChunkFile(b"hello", "h")]
    packed = FileBatch.pack(files)
    assert packed.offsets.tolist() == [0, 3, 3, 8] and bytes(packed.data.numpy()) == b"abchello"
    back = pickle.loads(pickle.dumps(packed))
    assert [f.read() for f in back] == [b"abc", b"", b"hello"] and back.names == ["a.txt", "e", "h"]
    assert isinstance(collate([(f, 1) for f in files])[0], FileBatch)


def test_a_reference_to_a_replaced_chunk_file_is_refused(files_url, tmp_path):
    ds = bench.open_dataset("files", store=files_url)
    f = next(iter(ds))[0]
    refs = FileBatch.for_transfer([f])
    wire = pickle.dumps(refs)  # what a worker sends: the reference, not the bytes
    assert len(wire) < 300
    path = Path(f.origin[0])
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    batch_mod._mapped.clear()
    os.replace(copy, path)  # same bytes, another file
    with pytest.raises(CorruptChunk, match="replaced"):
        pickle.loads(wire)
