"""Declaring and chunking datasets: deterministic, bounded chunks, crash-safe, named errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import benchkit as bench
from benchkit.data.declare import DeclaredDataset, datasets_in_module, parse_bytes
from benchkit.data.format import ChunkReader
from benchkit.data.index import load_index
from benchkit.data.writer import chunk_dataset, chunk_samples
from benchkit.errors import ConfigError, DataError, DatasetNotFound, SchemaError
from benchkit.registry import declared, mark
from benchkit.store import LocalStore


def make_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` files of varied sizes (1-9 KB) with random bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{'cat' if i % 2 else 'dog'}.{i:04d}.bin"
        p.write_bytes(rng.integers(0, 256, int(rng.integers(1000, 9000)), dtype=np.uint8).tobytes())
        paths.append(p)
    return paths


def read_all(root: Path, name: str) -> list:
    store = LocalStore(root)
    idx = load_index(store, name)
    out = []
    for c in idx.chunks:
        with ChunkReader(root / "datasets" / name / c.file, expected_sha256=c.sha256) as r:
            assert len(r) == c.samples
            out.extend(r[i] for i in range(len(r)))
    assert len(out) == idx.num_samples
    return out


def file_dataset(
    paths: list[Path], chunk_bytes: str | int = "20KB", name: str = "train"
) -> DeclaredDataset:
    @bench.dataset(name, chunk_bytes=chunk_bytes)
    def samples():
        for i, p in enumerate(paths):
            yield bench.File(p), i % 2, torch.full((2,), float(i))

    return samples


# --- declaring -----------------------------------------------------------------------------------


def test_decorator_returns_a_usable_object(tmp_path):
    paths = make_files(tmp_path / "f", 3)
    ds = file_dataset(paths, "1MB")
    assert isinstance(ds, DeclaredDataset) and ds.name == "train" and ds.chunk_bytes == 1_000_000
    assert ds.__benchkit_kind__ == "dataset" and ds.__benchkit_name__ == "train"
    assert ds.__name__ == "samples"
    raw = list(ds)
    assert len(raw) == 3 and raw[1][0] == bench.File(paths[1]) and raw[1][1] == 1
    assert len(list(ds())) == 3  # still callable like the original function

    @ds.transform
    def decode(image, label, t):
        return label * 10

    assert decode(None, 2, None) == 20  # the function itself comes back
    assert ds.transform_fn is decode and ds.apply_transform(raw[1]) == 10
    assert ds.chunk_class is None and ds.chunk_args == () and ds.chunk_kwargs == {}


def test_bare_decorator_and_chunk_class_arguments():
    class MyChunk:
        pass

    @bench.dataset
    def numbers():
        yield (1,)

    assert numbers.name == "numbers"

    @bench.dataset("x", chunk=MyChunk, chunk_args=[True], chunk_kwargs={"k": 1})
    def x():
        yield (1,)

    assert x.chunk_class is MyChunk and x.chunk_args == (True,) and x.chunk_kwargs == {"k": 1}


def test_sizes_and_names_are_validated():
    assert (
        parse_bytes("64MB") == 64_000_000
        and parse_bytes("1MiB") == 2**20
        and parse_bytes(500) == 500
    )
    with pytest.raises(ConfigError, match="invalid size"):
        parse_bytes("lots")
    with pytest.raises(DataError, match="invalid dataset name"):
        bench.dataset("no/slashes")(lambda: iter(()))


def test_processor_dataset_samples_are_labels_and_files(tmp_path):
    paths = make_files(tmp_path / "f", 4)

    class Folder(bench.ProcessorDataset):
        def __len__(self):
            return len(paths)

        def get_label_and_numeric_data(self, item):
            return torch.tensor([item, 1 - item])

        def get_file(self, item):
            return [str(paths[item])]

    @bench.dataset("proc", chunk_bytes="10KB")
    def proc():
        return Folder()

    assert proc.size_hint() == 4
    chunk_dataset(proc, tmp_path / "stage", workers=1)
    back = read_all(tmp_path / "stage", "proc")
    for i, (labels, files) in enumerate(back):
        assert torch.equal(labels, torch.tensor([i, 1 - i]))
        assert [f.name for f in files] == [paths[i].name] and files[0].read() == paths[
            i
        ].read_bytes()


def test_classic_main_tuples_are_found(tmp_path):
    paths = make_files(tmp_path / "f", 2)
    module = types.ModuleType("ProjectDatasets")

    class Pairs(bench.ProcessorDataset):
        def __init__(self, files):
            self.files = files

        def __len__(self):
            return len(self.files)

        def get_label_and_numeric_data(self, item):
            return item

        def get_file(self, item):
            return [str(self.files[item])]

    class Chunk:  # stands in for an IterableChunk subclass
        pass

    Pairs.__module__ = module.__name__  # as if defined in that file
    module.Pairs = Pairs
    module.main = lambda: [
        (Pairs(paths), Chunk, "train", [True], {"a": 1}),
        (Pairs(paths[:1]), Chunk, "val", [False], {}),
    ]
    found = datasets_in_module(module)
    assert list(found) == ["train", "val"]
    train = found["train"]
    assert (
        train.chunk_class is Chunk
        and train.chunk_args == (True,)
        and train.chunk_kwargs == {"a": 1}
    )
    assert [s[0] for s in train] == [0, 1] and train.size_hint() == 2

    module.main = lambda: [("not a processor", Chunk, "bad", [], {})]
    with pytest.raises(
        DataError, match=r"entry 0 \('bad'\): the first item must be a ProcessorDataset"
    ):
        datasets_in_module(module)


def test_a_training_script_main_is_never_called():
    module = types.ModuleType("train")

    def main():
        raise AssertionError("main() of an ordinary script must not run")

    class Imported(bench.ProcessorDataset):  # imported from the datasets file, not defined here
        pass

    module.main = main
    module.Imported = Imported

    @bench.dataset("d")
    def d():
        yield (1,)

    module.d = d
    assert list(datasets_in_module(module)) == ["d"]
    assert declared(module, "dataset") == {"d": d}

    # a single-file project defining its ProcessorDataset next to a @bench.train function
    Imported.__module__ = module.__name__
    module.train_fn = mark(lambda run: None, "train", "train")
    assert list(datasets_in_module(module)) == ["d"]


# --- chunking ------------------------------------------------------------------------------------


def test_round_trip_through_chunks(tmp_path):
    paths = make_files(tmp_path / "f", 25)
    stats = chunk_dataset(file_dataset(paths), tmp_path / "stage", workers=1)
    assert stats.index.num_samples == 25 and len(stats.index.chunks) > 3
    back = read_all(tmp_path / "stage", "train")
    for i, (f, label, t) in enumerate(back):
        assert f.name == paths[i].name and f.read() == paths[i].read_bytes()
        assert label == i % 2 and torch.equal(t, torch.full((2,), float(i)))
    assert stats.index.schema["items"][0] == {"kind": "file"}


def test_chunks_stay_within_chunk_bytes_and_are_filled_greedily(tmp_path):
    paths = make_files(tmp_path / "f", 40)
    limit = 20_000
    idx = chunk_dataset(file_dataset(paths, limit), tmp_path / "stage", workers=1).index
    sizes = [c.bytes for c in idx.chunks]
    assert all(s <= limit for s in sizes), sizes
    # greedy: the next chunk's first sample would not have fitted in the previous chunk
    first = 0
    for c, _nxt in zip(idx.chunks, idx.chunks[1:], strict=False):
        first += c.samples
        next_sample = os.path.getsize(paths[first]) + 100  # file + its small fields and offset
        assert c.bytes + next_sample > limit
    assert sum(c.samples for c in idx.chunks) == 40


def test_a_sample_bigger_than_chunk_bytes_gets_its_own_chunk(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 50_000)
    small = make_files(tmp_path / "f", 3)
    idx = chunk_dataset(
        file_dataset([small[0], big, small[1]], 10_000), tmp_path / "stage", workers=1
    ).index
    assert [c.samples for c in idx.chunks] == [1, 1, 1]


@pytest.mark.multiprocess
def test_chunking_is_deterministic_across_runs_and_worker_counts(tmp_path):
    paths = make_files(tmp_path / "f", 30)
    a = chunk_dataset(file_dataset(paths), tmp_path / "a", workers=1).index
    b = chunk_dataset(file_dataset(paths), tmp_path / "b", workers=2).index
    assert a.chunks == b.chunks and a.schema == b.schema and len(a.chunks) > 2
    for c in a.chunks:
        assert (tmp_path / "a/datasets/train" / c.file).read_bytes() == (
            tmp_path / "b/datasets/train" / c.file
        ).read_bytes()
    # the same destination again: same files, nothing else left behind
    c2 = chunk_dataset(file_dataset(paths), tmp_path / "a", workers=1).index
    assert c2.chunks == a.chunks
    assert sorted(p.name for p in (tmp_path / "a/datasets/train").iterdir()) == sorted(
        [c.file for c in a.chunks] + ["index.json"]
    )
    assert list((tmp_path / "a/.tmp").iterdir()) == []


def test_generator_error_names_the_sample_and_leaves_no_dataset(tmp_path):
    paths = make_files(tmp_path / "f", 30)

    @bench.dataset("train", chunk_bytes="10KB")
    def broken():
        for i, p in enumerate(paths):
            if i == 17:
                raise ValueError("bad label file")
            yield bench.File(p), i

    with pytest.raises(DataError, match=r"dataset 'train': sample 17: ValueError: bad label file"):
        chunk_dataset(broken, tmp_path / "stage", workers=2)
    assert not (tmp_path / "stage/datasets/train").exists()
    assert list((tmp_path / "stage/.tmp").iterdir()) == []
    with pytest.raises(DatasetNotFound):
        load_index(LocalStore(tmp_path / "stage"), "train")


def test_failed_rechunk_keeps_the_previous_complete_version(tmp_path):
    paths = make_files(tmp_path / "f", 10)
    good = chunk_dataset(file_dataset(paths), tmp_path / "stage", workers=1).index
    paths[5].unlink()
    with pytest.raises(DataError, match=r"sample 5: field 0: cannot read file .*cat\.0005\.bin"):
        chunk_dataset(file_dataset(paths), tmp_path / "stage", workers=1)
    assert load_index(LocalStore(tmp_path / "stage"), "train").chunks == good.chunks


def test_unsupported_value_names_dataset_sample_and_field(tmp_path):
    def gen():
        yield 1, "a"
        yield 2, "b"
        yield 3, {"x": object()}

    with pytest.raises(
        SchemaError, match=r"dataset 'odd': sample 2: field 1\['x'\] has unsupported type object"
    ):
        chunk_samples(gen(), "odd", tmp_path, chunk_bytes=1000, workers=1)
    assert not (tmp_path / "datasets/odd").exists()


def test_samples_must_keep_one_structure(tmp_path):
    def gen():
        yield torch.zeros(2), 1
        yield torch.zeros(2, dtype=torch.float64), 1

    with pytest.raises(
        DataError, match=r"sample 1 does not match the first sample: field 0 has dtype float64"
    ):
        chunk_samples(gen(), "mixed", tmp_path, chunk_bytes=1000, workers=1)


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(DataError, match="yielded no samples"):
        chunk_samples(iter(()), "empty", tmp_path, chunk_bytes=1000, workers=1)


KILLED = """
import os, signal, sys
import benchkit as bench
from benchkit.data.writer import chunk_dataset

files = sorted(os.path.join(sys.argv[1], f) for f in os.listdir(sys.argv[1]))

@bench.dataset("train", chunk_bytes="12KB")
def samples():
    for i, path in enumerate(files):
        if i == 30:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)   # a real kill, mid-run
        yield bench.File(path), i

if __name__ == "__main__":  # spawned workers import this module too
    chunk_dataset(samples, sys.argv[2], workers=int(sys.argv[3]))
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_chunking_process_leaves_no_index(tmp_path, workers):
    paths = make_files(tmp_path / "f", 40)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    stage = tmp_path / "stage"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "f"), str(stage), str(workers)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # run() returning at all means the workers exited too (they hold its stdout)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not list(stage.rglob("index.json"))
    assert not (stage / "datasets" / "train").exists()
    leftovers = list((stage / ".tmp").iterdir())
    assert leftovers, "the killed run had started writing chunks"
    if workers == 1:
        assert list(leftovers[0].glob("chunk-*.bkc")), "chunks were written before the kill"
    # the next run cleans up after the dead one and publishes a whole dataset
    idx = chunk_dataset(file_dataset(paths[:30], "12KB"), stage, workers=1).index
    assert idx.num_samples == 30
    assert list((stage / ".tmp").iterdir()) == []


@pytest.mark.multiprocess
def test_a_killed_worker_fails_the_run_and_publishes_nothing(tmp_path):
    from chunk_killer import KillerFile

    paths = make_files(tmp_path / "f", 30)

    def gen():
        for i, p in enumerate(paths):
            yield (KillerFile(p) if i == 20 else bench.File(p)), i

    with pytest.raises(
        DataError,
        match=r"dataset 'crash': a chunking worker process died .* while writing chunks \d+-\d+ \(samples \d+-\d+\)",
    ):
        chunk_samples(gen(), "crash", tmp_path / "stage", chunk_bytes=12_000, workers=2)
    assert not list((tmp_path / "stage").rglob("index.json"))
    assert not (tmp_path / "stage/datasets/crash").exists()
    assert list((tmp_path / "stage/.tmp").iterdir()) == []


@pytest.mark.multiprocess
def test_the_generator_never_runs_more_than_two_chunks_per_worker_ahead(tmp_path):
    """Memory stays bounded: samples wait in the main process only for chunks in flight."""
    from chunk_killer import SlowFile

    (tmp_path / "f").mkdir()
    paths = [tmp_path / "f" / f"{i:03d}.bin" for i in range(80)]
    for p in paths:
        p.write_bytes(b"x" * 8000)
    stage = tmp_path / "stage"
    ahead = []

    def gen():
        for i, p in enumerate(paths):
            written = len(list((stage / ".tmp").glob("*/chunk-*.bkc")))
            ahead.append(i // 2 - written)  # two samples per chunk: chunks started minus written
            yield SlowFile(p), i

    idx = chunk_samples(gen(), "bounded", stage, chunk_bytes=20_000, workers=2).index
    assert all(c.samples == 2 for c in idx.chunks[:-1])
    # 2 workers x 2 chunks in flight, plus the chunk being filled
    assert max(ahead) <= 2 * 2 + 1, max(ahead)


@pytest.mark.multiprocess
def test_every_chunk_is_fsynced_before_the_index_is_written(tmp_path, monkeypatch):
    """Workers leave the fsync to the main process; nothing is published before it is done."""
    import benchkit.data.writer as writer

    synced: list[tuple[str, bool]] = []
    real = writer.sync_file

    def spy(path):
        real(path)
        synced.append((Path(path).name, (Path(path).parent / "index.json").exists()))

    monkeypatch.setattr(writer, "sync_file", spy)
    paths = make_files(tmp_path / "f", 30)
    idx = chunk_dataset(file_dataset(paths), tmp_path / "stage", workers=2).index
    assert sorted(name for name, _ in synced) == sorted(c.file for c in idx.chunks)
    assert not any(index_there for _, index_there in synced)


@pytest.mark.multiprocess
def test_a_chunk_that_cannot_reach_the_disk_fails_the_run_and_publishes_nothing(
    tmp_path, monkeypatch
):
    import errno

    import benchkit.data.writer as writer

    def failing(path):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(writer, "sync_file", failing)
    paths = make_files(tmp_path / "f", 30)
    with pytest.raises(
        DataError,
        match=r"dataset 'train': chunk chunk-\d{6}-[0-9a-f]{16}\.bkc could not be written to disk "
        r".*Input/output error\. Nothing was published",
    ):
        chunk_dataset(file_dataset(paths), tmp_path / "stage", workers=2)
    assert not (tmp_path / "stage/datasets/train").exists()
    assert list((tmp_path / "stage/.tmp").iterdir()) == []


def test_chunk_writer_asks_for_each_file_once_a_bounded_way_ahead(tmp_path, monkeypatch):
    """Cold reads overlap the writing: files are advised before they are read, each once,
    never more than READ_AHEAD_BYTES (plus one record) ahead of the record being written."""
    import benchkit.data.format as fmt
    from benchkit.data.sample import File

    monkeypatch.setattr(fmt, "READ_AHEAD_BYTES", 20_000)
    paths = make_files(tmp_path / "f", 40)
    records = [(i, *fmt.encode_parts((File(p), i), i)) for i, p in enumerate(paths)]
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(fmt, "advise_willneed", lambda p: events.append(("advise", str(p))))
    real_read = File.read_bytes
    monkeypatch.setattr(
        File, "read_bytes", lambda self: events.append(("read", str(self.path))) or real_read(self)
    )
    fmt.write_records(tmp_path / "c.bkc", records)
    advised = [p for kind, p in events if kind == "advise"]
    assert advised == [str(p) for p in paths]
    for k, p in enumerate(paths):
        at = events.index(("read", str(p)))
        assert ("advise", str(p)) in events[:at]
        ahead = [q for kind, q in events[:at] if kind == "advise"]
        ahead_bytes = sum(Path(q).stat().st_size for q in ahead[k + 1 :])
        assert ahead_bytes <= 20_000 + 9_100
    with ChunkReader(tmp_path / "c.bkc") as r:
        assert [r[i][1] for i in range(len(r))] == list(range(40))
