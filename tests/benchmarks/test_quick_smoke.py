"""Smoke test of BenchKit's part of the benchmarks (benchmarks/), with tiny data.

CI has no benchmarks/.venv and none of the peer libraries, so this runs only BenchKit's own
path of the pipeline in the project's environment: make 200 JPEGs with the benchmark's
generator, chunk them the way ``convert.py`` does, stream them the way ``stream.py`` does
(raw bytes and decoded) and check that every sample arrives exactly once. Never a speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import convert  # noqa: E402
import make_data  # noqa: E402
import stream  # noqa: E402

IMAGES = 200

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """200 benchmark JPEGs and their BenchKit chunks (several chunks: 4 MB each)."""
    root = tmp_path_factory.mktemp("bench-smoke")
    images = root / "images"
    manifest = make_data.make_dataset(images, IMAGES, workers=2)
    out = root / "shards"
    convert.convert_benchkit(make_data.list_samples(images), out, chunk_bytes=4 * 1024 * 1024)
    return manifest, out


def test_make_data_is_deterministic(tmp_path):
    assert make_data.image_bytes(17) == make_data.image_bytes(17)
    label, data = make_data.image_bytes(17)
    assert label == 17 % make_data.CLASSES
    assert data[:2] == b"\xff\xd8"  # a JPEG


def test_chunking_keeps_every_sample(chunked):
    manifest, out = chunked
    assert convert.count_samples("benchkit", out) == IMAGES
    chunks = list((out / "datasets" / convert.BENCHKIT_NAME).glob("*.bkc"))
    assert len(chunks) > 1


def test_raw_stream_delivers_every_byte(chunked):
    manifest, out = chunked
    loader = stream.benchkit_loader(str(out), "raw", batch_size=16, workers=2)
    n = labels = nbytes = 0
    for batch, y in loader:
        n += len(y)
        labels += int(y.sum())
        nbytes += sum(len(b) for b in batch)
    assert n == IMAGES
    assert labels == sum(i % make_data.CLASSES for i in range(IMAGES))
    assert nbytes == manifest["bytes"]


def test_decode_stream_delivers_every_image(chunked):
    _, out = chunked
    loader = stream.benchkit_loader(str(out), "decode", batch_size=16, workers=2)
    n = 0
    for x, y in loader:
        assert tuple(x.shape[1:]) == (3, stream.IMAGE_SIZE, stream.IMAGE_SIZE)
        n += len(y)
    assert n == IMAGES
