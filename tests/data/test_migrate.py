"""Migration steps: upload (skips what is there, resumes after a kill), test, ensure_migrated."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import benchkit as bench
from benchkit.data import migrate
from benchkit.data.format import ChunkReader
from benchkit.data.index import INDEX_FILE, load_index
from benchkit.data.writer import chunk_dataset
from benchkit.errors import CorruptChunk, DataError, DatasetNotFound
from benchkit.store import LocalStore, open_store


def make_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img.{i:04d}.bin"
        p.write_bytes(rng.integers(0, 256, int(rng.integers(2000, 6000)), dtype=np.uint8).tobytes())
        paths.append(p)
    return paths


def declare(paths: list[Path], name: str = "train", chunk_bytes: int = 12_000):
    @bench.dataset(name, chunk_bytes=chunk_bytes)
    def samples():
        for i, p in enumerate(paths):
            yield bench.File(p), i

    return samples


class CountingStore(LocalStore):
    """A local store that records which keys were written."""

    def __init__(self, root):
        super().__init__(root)
        self.written: list[str] = []

    def put_file(self, key, path):
        self.written.append(key)
        super().put_file(key, path)

    def put(self, key, data):
        self.written.append(key)
        super().put(key, data)


def verify_store(store, name: str) -> int:
    """Every chunk of ``name`` in ``store`` passes its checksum; returns the sample count."""
    idx = load_index(store, name)
    n = 0
    for c in idx.chunks:
        local = store.local_path(f"datasets/{name}/{c.file}")
        with ChunkReader(local, expected_sha256=c.sha256) as r:
            n += len(r)
    assert n == idx.num_samples
    return n


@pytest.fixture
def staged(tmp_path):
    paths = make_files(tmp_path / "files", 24)
    decl = declare(paths)
    chunk_dataset(decl, tmp_path / "stage", workers=1)
    return decl, LocalStore(tmp_path / "stage"), paths


def test_upload_copies_chunks_then_index_and_an_unchanged_dataset_uploads_nothing(staged, tmp_path):
    _, staging, _ = staged
    store = CountingStore(tmp_path / "store")
    report = migrate.upload_dataset("train", staging, store)
    idx = load_index(staging, "train")
    assert report.uploaded == len(idx.chunks) > 3 and report.skipped == 0
    assert store.written[-1] == "datasets/train/" + INDEX_FILE, "index.json goes last"
    assert verify_store(store, "train") == 24

    store.written.clear()
    again = migrate.upload_dataset("train", staging, store)
    assert (again.uploaded, again.skipped, again.index_written) == (0, len(idx.chunks), False)
    assert store.written == []


def test_a_changed_dataset_uploads_only_changed_chunks_and_drops_stale_ones(staged, tmp_path):
    decl, staging, paths = staged
    store = CountingStore(tmp_path / "store")
    migrate.upload_dataset("train", staging, store)
    before = load_index(store, "train")
    paths[-1].write_bytes(b"changed" * 100)  # only the last chunk changes
    chunk_dataset(decl, staging.root, workers=1)
    store.written.clear()
    report = migrate.upload_dataset("train", staging, store)
    after = load_index(store, "train")
    changed = [c.file for c in after.chunks if c not in before.chunks]
    assert changed and len(changed) < len(after.chunks)
    assert store.written == [f"datasets/train/{f}" for f in changed] + ["datasets/train/index.json"]
    assert report.removed == len([c for c in before.chunks if c not in after.chunks])
    assert sorted(store.list("datasets/train/")) == sorted(
        [f"datasets/train/{c.file}" for c in after.chunks] + ["datasets/train/index.json"]
    )
    verify_store(store, "train")


KILLED_UPLOAD = """
import os, signal, sys
from benchkit.data.migrate import upload_dataset
from benchkit.store import LocalStore

class DiesOnThirdChunk(LocalStore):
    done = 0
    def put_file(self, key, path):
        if DiesOnThirdChunk.done == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # a real kill in the middle of the upload
        super().put_file(key, path)
        DiesOnThirdChunk.done += 1

upload_dataset("train", LocalStore(sys.argv[1]), DiesOnThirdChunk(sys.argv[2]), threads=1)
"""


@pytest.mark.multiprocess
def test_killed_upload_resumes_and_skips_what_is_there(staged, tmp_path):
    _, staging, _ = staged
    script = tmp_path / "upload.py"
    script.write_text(textwrap.dedent(KILLED_UPLOAD))
    dest = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, str(script), str(staging.root), str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = CountingStore(dest)
    assert not store.exists("datasets/train/index.json"), "readers must not see a half upload"
    with pytest.raises(DatasetNotFound):
        load_index(store, "train")
    assert len(store.list("datasets/train/")) == 2

    report = migrate.upload_dataset("train", staging, store)
    total = len(load_index(staging, "train").chunks)
    assert (report.skipped, report.uploaded) == (2, total - 2)
    assert len(store.written) == total - 2 + 1
    assert verify_store(store, "train") == 24


def test_a_chunk_with_the_right_name_but_wrong_bytes_is_uploaded_again(staged, tmp_path):
    _, staging, _ = staged
    store = LocalStore(tmp_path / "store")
    migrate.upload_dataset("train", staging, store)
    first = load_index(staging, "train").chunks[0]
    key = f"datasets/train/{first.file}"
    data = bytearray(store.get(key))
    data[-1] ^= 0xFF
    store.put(key, bytes(data))
    store.delete("datasets/train/index.json")  # as after an interrupted upload
    report = migrate.upload_dataset("train", staging, store)
    assert report.uploaded == 1
    verify_store(store, "train")


def test_upload_of_an_unchunked_dataset_says_what_to_run(tmp_path):
    with pytest.raises(DatasetNotFound, match="migrate data --chunk"):
        migrate.upload_dataset("nope", LocalStore(tmp_path / "stage"), LocalStore(tmp_path / "s"))


@pytest.mark.s3
def test_upload_to_s3_and_resume_skip(staged, s3_store_url):
    _, staging, _ = staged
    store = open_store(s3_store_url)
    first = migrate.upload_dataset("train", staging, store, threads=4)
    assert first.uploaded == len(load_index(staging, "train").chunks)
    idx = load_index(store, "train")
    assert idx.num_samples == 24
    c = idx.chunks[0]
    assert store.stat(f"datasets/train/{c.file}").size == c.bytes
    again = migrate.upload_dataset("train", staging, store)
    assert again.uploaded == 0 and not again.index_written


# --- testing the staged dataset ------------------------------------------------------------------


def project_with(tmp_path: Path, paths: list[Path]):
    """A declared dataset whose project root is ``tmp_path/proj``."""
    root = tmp_path / "proj"
    root.mkdir()
    decl = declare(paths)
    decl.module_file = str(root / "train.py")
    return decl, root


@pytest.mark.multiprocess
def test_check_streams_every_sample_through_the_transform(tmp_path):
    paths = make_files(tmp_path / "files", 20)
    decl, root = project_with(tmp_path, paths)

    @decl.transform
    def size_and_label(f, label):
        return len(f.read()), label

    migrate.chunk(decl, workers=1)
    assert (root / ".benchkit/staging/datasets/train/index.json").is_file()
    report = migrate.check_dataset(decl)
    assert report.samples == 20 and report.streamed == 20 and report.transform
    assert report.chunks == len(load_index(migrate.staging_store(root), "train").chunks)


def test_check_names_a_corrupt_staged_chunk(tmp_path):
    paths = make_files(tmp_path / "files", 20)
    decl, root = project_with(tmp_path, paths)
    migrate.chunk(decl, workers=1)
    idx = load_index(migrate.staging_store(root), "train")
    victim = root / ".benchkit/staging/datasets/train" / idx.chunks[1].file
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match=rf"dataset 'train' chunk '{idx.chunks[1].file}'"):
        migrate.check_dataset(decl)


def test_check_reports_a_failing_transform_with_its_sample(tmp_path):
    paths = make_files(tmp_path / "files", 5)
    decl, _ = project_with(tmp_path, paths)

    @decl.transform
    def broken(f, label):
        raise KeyError("no such class")

    migrate.chunk(decl, workers=1)
    with pytest.raises(DataError, match=r"transform broken failed on sample 0: KeyError"):
        migrate.check_dataset(decl)


def test_check_before_chunking_says_what_to_run(tmp_path):
    decl, _ = project_with(tmp_path, make_files(tmp_path / "files", 2))
    with pytest.raises(DatasetNotFound, match="migrate data --chunk"):
        migrate.check_dataset(decl)


# --- for the training runner ---------------------------------------------------------------------


def test_ensure_migrated_chunks_and_uploads_once(tmp_path, capsys):
    paths = make_files(tmp_path / "files", 10)
    decl, root = project_with(tmp_path, paths)
    store = LocalStore(tmp_path / "store")
    assert migrate.ensure_migrated(decl, store, root) is True
    assert "migrating it now" in capsys.readouterr().err
    assert verify_store(store, "train") == 10
    assert migrate.ensure_migrated(decl, store, root) is False


ENSURE = """
import sys
from pathlib import Path
import benchkit as bench
from benchkit.data.migrate import ensure_migrated

files = sorted(Path(sys.argv[1]).iterdir())

@bench.dataset("train", chunk_bytes="12KB")
def samples():
    for i, p in enumerate(files):
        yield bench.File(p), i

if __name__ == "__main__":
    print("MIGRATED" if ensure_migrated(samples, sys.argv[2], sys.argv[3]) else "FOUND")
"""


@pytest.mark.multiprocess
def test_concurrent_ensure_migrated_migrates_once(tmp_path):
    """Ranks of one job calling it together: one migrates, the others find the dataset."""
    make_files(tmp_path / "files", 30)
    script = tmp_path / "ensure.py"
    script.write_text(textwrap.dedent(ENSURE))
    (tmp_path / "proj").mkdir()
    args = [str(tmp_path / "files"), str(tmp_path / "store"), str(tmp_path / "proj")]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["FOUND", "FOUND", "MIGRATED"]
    assert verify_store(LocalStore(tmp_path / "store"), "train") == 30
