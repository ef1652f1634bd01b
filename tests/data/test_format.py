"""The chunk format: every field type round-trips, bad values and damaged chunks are named."""

from __future__ import annotations

import io
import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from benchkit.data.format import (
    FORMAT_VERSION,
    ChunkReader,
    check_schema,
    decode_sample,
    encode_sample,
    sample_schema,
    write_chunk,
)
from benchkit.data.index import ChunkInfo, DatasetIndex, dataset_prefix, load_index
from benchkit.data.sample import ChunkFile, File
from benchkit.errors import CorruptChunk, DataError, DatasetNotFound, SchemaError
from benchkit.store import LocalStore


def _jpeg(path: Path, color=(200, 100, 0)) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 6), color).save(path, format="JPEG")
    return path


def _same(a, b) -> None:
    """Deep equality that also compares tensor/array dtype and shape."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=False):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


def _roundtrip(sample, tmp_path):
    rec = encode_sample(sample, 0)
    size, sha = write_chunk(tmp_path / "c.bkc", [rec])
    assert size == (tmp_path / "c.bkc").stat().st_size
    with ChunkReader(tmp_path / "c.bkc", expected_sha256=sha) as r:
        assert len(r) == 1
        return r[0]


SCALARS = [
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**80,
    -(2**90) - 7,
    0.0,
    -2.5,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "héllo wörld ✓ 猫 🐈",
    b"",
    b"\x00\xff\x10",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalar_fields_round_trip(value, tmp_path):
    _same(_roundtrip((value,), tmp_path), (value,))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(3.25),  # 0-d
        torch.tensor(7, dtype=torch.int64),
        torch.randn(3, 4).to(torch.bfloat16),
        torch.randn(2, 3, 4, dtype=torch.float16),
        torch.arange(12, dtype=torch.int32).reshape(3, 4).t(),  # non-contiguous
        torch.tensor([True, False, True]),
        torch.randn(3, dtype=torch.complex64),
        torch.zeros(0, 5),
        torch.arange(5, dtype=torch.uint8),
        torch.randn(2, 2, requires_grad=True),
    ],
    ids=lambda t: f"{t.dtype}-{tuple(t.shape)}",
)
def test_tensors_round_trip_with_dtype_and_shape(tensor, tmp_path):
    out = _roundtrip((tensor,), tmp_path)[0]
    _same(out, tensor.detach().contiguous())
    out.add_(0) if out.dtype != torch.bool else None  # decoded tensors are writable


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.int16).reshape(2, 3),
        np.linspace(0, 1, 7, dtype=np.float32),
        np.array(3.5),  # 0-d
        np.zeros((0, 4), dtype=np.float64),
        np.array([1, 2, 3], dtype=">u4"),  # big-endian stays big-endian
        np.array(["ab", "ü"]),
        np.arange(12, dtype=np.uint8).reshape(3, 4)[:, ::2],  # non-contiguous
        np.array([True, False]),
        np.array(["2024-01-02"], dtype="datetime64[D]"),
    ],
    ids=lambda a: f"{a.dtype.str}-{a.shape}",
)
def test_numpy_arrays_round_trip(array, tmp_path):
    out = _roundtrip((array,), tmp_path)[0]
    _same(out, np.ascontiguousarray(array) if array.ndim else array)
    assert out.flags.writeable


def test_numpy_scalars_round_trip_as_numpy_scalars(tmp_path):
    sample = (np.float32(1.5), np.int64(-3), np.bool_(True))
    out = _roundtrip(sample, tmp_path)
    for a, b in zip(out, sample, strict=False):
        assert type(a) is type(b) and a == b


def test_nested_containers_and_dict_samples_round_trip(tmp_path):
    sample = {
        "empty": [],
        "empty_tuple": (),
        "empty_dict": {},
        "nested": {"a": [1, (2.5, "x"), {"b": [None, b"y"]}], 3: (False,)},
        "t": torch.ones(2, dtype=torch.float64),
    }
    _same(_roundtrip(sample, tmp_path), sample)
    _same(_roundtrip([1, "list sample"], tmp_path), [1, "list sample"])


def test_file_field_keeps_bytes_and_name_and_opens_with_pil(tmp_path):
    from PIL import Image
    from torchvision.io import decode_image

    path = _jpeg(tmp_path / "cat.001.jpg")
    out = _roundtrip((File(path), 1), tmp_path)
    f, label = out
    assert isinstance(f, ChunkFile) and label == 1
    assert f.name == "cat.001.jpg"
    assert f.read() == path.read_bytes()
    f.seek(0)
    assert Image.open(f).convert("RGB").size == (8, 6)
    assert tuple(decode_image(f.tensor()).shape) == (3, 6, 8)
    p = f.path()
    assert p.endswith(".jpg") and Path(p).read_bytes() == path.read_bytes()
    assert tuple(decode_image(p).shape) == (3, 6, 8)
    with pytest.raises(io.UnsupportedOperation):
        f.write(b"x")
    # DataLoader workers pickle samples to the main process
    g = pickle.loads(pickle.dumps(f))
    assert g.name == f.name and g.bytes() == f.bytes()
    del f, out
    import gc

    gc.collect()
    assert not Path(p).exists(), "the temporary path is removed with its ChunkFile"


def test_empty_file_field(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    f = _roundtrip((File(tmp_path / "empty.txt"),), tmp_path)[0]
    assert f.read() == b"" and f.tensor().numel() == 0


class Opaque:
    pass


@pytest.mark.parametrize(
    "sample, field, tname",
    [
        ((1, Opaque()), "field 1", "Opaque"),
        ({"img": {1, 2}}, "field 'img'", "set"),
        ((1, [2, {"deep": 3j}]), "field 1[1]['deep']", "complex"),
        ((np.array([object(), 1], dtype=object),), "field 0", "numpy.ndarray"),
        ((torch.ones(2).to_sparse(),), "field 0", "torch.Tensor"),
    ],
)
def test_unsupported_values_are_rejected_naming_field_type_and_index(sample, field, tname):
    with pytest.raises(SchemaError) as e:
        encode_sample(sample, 17)
    msg = str(e.value)
    assert "sample 17" in msg and field in msg and tname in msg
    assert "supported" in msg and "bench.File" in msg and "torch.Tensor" in msg


def test_non_container_sample_is_rejected():
    with pytest.raises(SchemaError, match=r"sample 4 is a int; a sample is a tuple or a dict"):
        encode_sample(5, 4)


def test_dict_keys_must_be_str_or_int():
    with pytest.raises(SchemaError, match=r"sample 2: .*dict with a tuple key"):
        encode_sample({(1, 2): 3}, 2)


def test_missing_file_is_named():
    with pytest.raises(DataError, match=r"sample 3: field 0: cannot read file .*nope\.jpg"):
        encode_sample((File("/nonexistent/nope.jpg"),), 3)


def test_no_pickle_in_format_module():
    src = Path(__import__("benchkit.data.format").data.format.__file__).read_text()
    assert "pickle" not in src.replace("No pickle", "")


def test_decode_rejects_unknown_tags():
    with pytest.raises(ValueError, match="unknown type tag"):
        decode_sample(b"t\x01\x00\x00\x00Z")


# --- chunk files ---------------------------------------------------------------------------------


def _chunk(tmp_path: Path, n: int = 5) -> tuple[Path, str, list]:
    samples = [(torch.full((3,), float(i)), i, f"s{i}") for i in range(n)]
    path = tmp_path / "chunk-000000.bkc"
    _, sha = write_chunk(path, [encode_sample(s, i) for i, s in enumerate(samples)])
    return path, sha, samples


def test_chunk_random_access_and_raw_slices(tmp_path):
    path, sha, samples = _chunk(tmp_path, 20)
    r = ChunkReader(path, expected_sha256=sha)
    assert len(r) == 20
    for i in (13, 0, 19, 7, -1):
        _same(r[i], samples[i])
        _same(decode_sample(bytes(r.raw(i))), samples[i])
    with pytest.raises(IndexError):
        r[20]
    r.close()
    r.close()  # idempotent


def test_empty_chunk(tmp_path):
    _, sha = write_chunk(tmp_path / "e.bkc", [])
    assert len(ChunkReader(tmp_path / "e.bkc", expected_sha256=sha)) == 0


def test_write_chunk_is_deterministic(tmp_path):
    recs = [encode_sample((torch.arange(4), "x", {"k": 1.0}), i) for i in range(3)]
    a = write_chunk(tmp_path / "a.bkc", recs)
    b = write_chunk(tmp_path / "b.bkc", recs)
    assert a == b
    assert (tmp_path / "a.bkc").read_bytes() == (tmp_path / "b.bkc").read_bytes()


def test_flipped_byte_is_detected_and_named(tmp_path):
    path, sha, _ = _chunk(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match=r"dataset 'train' chunk 'chunk-000000.bkc'.*checksum"):
        ChunkReader(path, expected_sha256=sha, label="dataset 'train' chunk 'chunk-000000.bkc'")


def test_truncated_chunk_is_detected_with_and_without_checksum(tmp_path):
    path, sha, _ = _chunk(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CorruptChunk, match=r"chunk-000000.bkc"):
        ChunkReader(path, expected_sha256=sha)
    with pytest.raises(CorruptChunk, match="truncated"):
        ChunkReader(path, label="chunk-000000.bkc")
    path.write_bytes(data[:10])
    with pytest.raises(CorruptChunk, match="truncated"):
        ChunkReader(path)


def test_bad_magic_is_detected(tmp_path):
    path, _, _ = _chunk(tmp_path)
    data = bytearray(path.read_bytes())
    data[0:8] = b"NOTACHNK"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match="bad magic"):
        ChunkReader(path, label="x.bkc")


def test_damaged_record_raises_corrupt_chunk_not_garbage(tmp_path):
    path, _, _ = _chunk(tmp_path)
    data = bytearray(path.read_bytes())
    r = ChunkReader(path)
    start = len(data) - len(r.raw(4))
    r.close()
    data[start] = ord("Z")  # unknown tag for the last sample; no checksum given
    path.write_bytes(bytes(data))
    r = ChunkReader(path, label="lbl")
    with pytest.raises(CorruptChunk, match=r"lbl: sample 4 cannot be decoded"):
        r[4]


def test_newer_format_version_is_refused(tmp_path):
    path, _, _ = _chunk(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:12] = (FORMAT_VERSION + 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match="upgrade benchkit"):
        ChunkReader(path)


# --- schema --------------------------------------------------------------------------------------


def test_schema_describes_structure_kinds_and_dtypes(tmp_path):
    s = sample_schema((File(tmp_path), torch.zeros(2, 3, dtype=torch.bfloat16), {"y": 1}))
    assert s == {
        "kind": "tuple",
        "items": [
            {"kind": "file"},
            {"kind": "tensor", "dtype": "bfloat16", "ndim": 2},
            {"kind": "dict", "fields": {"y": {"kind": "int"}}},
        ],
    }
    json.dumps(s)
    assert (
        check_schema(s, (File(tmp_path), torch.ones(5, 5, dtype=torch.bfloat16), {"y": 2.5}))
        is None
    )
    assert "field 1 has dtype float32" in check_schema(
        s, (File(tmp_path), torch.ones(5, 5), {"y": 2})
    )
    assert "has 2 items" in check_schema(s, (1, 2))


# --- index ---------------------------------------------------------------------------------------


def test_index_round_trips_and_keeps_extra_fields():
    idx = DatasetIndex(
        name="train",
        num_samples=3,
        chunks=[ChunkInfo("chunk-000000.bkc", 3, 100, "ab" * 32)],
        schema={"kind": "tuple", "items": []},
        format_version=FORMAT_VERSION,
        created="2026-01-01T00:00:00Z",
        chunk_bytes=64_000_000,
        extra={"future": OrderedDict(a=1)},
    )
    back = DatasetIndex.from_json(idx.to_json())
    assert back == DatasetIndex.from_json(back.to_json())
    assert back.extra == {"future": {"a": 1}} and back.chunks == idx.chunks
    assert json.loads(idx.to_json())["future"] == {"a": 1}


def test_index_rejects_inconsistent_counts():
    d = {
        "name": "x",
        "num_samples": 5,
        "chunks": [{"file": "c", "samples": 3, "bytes": 1, "sha256": "0"}],
        "schema": {},
        "format_version": 1,
    }
    with pytest.raises(DataError, match="inconsistent"):
        DatasetIndex.from_dict(d)


def test_load_index_of_missing_dataset_names_store_and_command(tmp_path):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetNotFound) as e:
        load_index(store, "train")
    assert store.url in str(e.value) and "python -m benchkit migrate data" in str(e.value)
    assert dataset_prefix("train") == "datasets/train/"
    with pytest.raises(DataError, match="invalid dataset name"):
        dataset_prefix("../etc")


def test_a_damaged_tensor_header_raises_corrupt_chunk(tmp_path):
    rec = bytearray(encode_sample((torch.zeros(2, 3),), 0))
    dim0 = 1 + 4 + 1 + 1 + len(b"float32") + 1  # tuple tag, count, tensor tag, dtype, ndim
    assert int.from_bytes(rec[dim0 : dim0 + 8], "little") == 2
    rec[dim0 : dim0 + 8] = (5).to_bytes(8, "little")  # shape no longer matches the data
    write_chunk(tmp_path / "t.bkc", [bytes(rec)])
    with pytest.raises(CorruptChunk, match="sample 0 cannot be decoded"):
        ChunkReader(tmp_path / "t.bkc", label="t")[0]
