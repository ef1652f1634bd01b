"""The chunk file format: typed sample records behind an offsets table. No pickle.

A chunk file is::

    header     8s magic b"BENCHKIT", u32 format version, u32 flags (0), u64 sample count
    offsets    (count + 1) x u64, absolute file offsets; sample i is bytes [off[i], off[i+1])
    records    one encoded sample after another; off[count] is the file size

All integers are little-endian. A record is one tagged value, recursively:

    ====  ==========================================================================
    tag   payload
    ====  ==========================================================================
    N     None
    T/F   True / False
    i     i64
    I     an int that does not fit in i64, as u32 length + decimal ASCII
    f     f64
    s     str: u32 length + UTF-8
    b     bytes: u64 length + raw bytes
    R     bench.File: u16 name length + UTF-8 name + u64 length + the file's bytes
    P     torch tensor: u8 length + dtype name, u8 ndim, ndim x u64 shape, u64 nbytes, data
    A     numpy array: u8 length + dtype.str, u8 ndim, ndim x u64 shape, u64 nbytes, data
    a     numpy scalar: as A with ndim 0; decodes to a numpy scalar
    t/l   tuple / list: u32 count + items
    d     dict: u32 count + (key, value) pairs; keys are str or int values
    ====  ==========================================================================

Decoding a sample touches only its own slice, so a reader memory-maps the chunk and reads any
sample without parsing the others. Tensors and arrays are raw buffers with dtype and shape:
decoding copies them out of the chunk once (so the mapping can be closed) and runs no code.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.data.sample import ChunkFile, File
from benchkit.errors import CorruptChunk, DataError, SchemaError
from benchkit.fsutil import advise_willneed, atomic_file

__all__ = [
    "BLOCK_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "ChunkDigest",
    "ChunkReader",
    "WrittenChunk",
    "check_schema",
    "decode_sample",
    "encode_parts",
    "encode_sample",
    "iter_parts",
    "join_parts",
    "sample_schema",
    "write_chunk",
    "write_records",
]

FORMAT_VERSION = 1
#: chunks are checksummed per block of this size too (index.json ``blocks``), see ChunkDigest.
#: 256 KiB: a cold epoch's first batch reads and hashes the blocks its samples touch, and at
#: 1 MiB that was most of its time (docs/BENCHMARKS.md); readers use each dataset's own size
BLOCK_BYTES = 1 << 18
BLOCK_DIGEST_HEX = 32
MAGIC = b"BENCHKIT"
_HEADER = struct.Struct("<8sIIQ")
HEADER_SIZE = _HEADER.size  # 24

SUPPORTED = (
    "bench.File, torch.Tensor, numpy.ndarray (not object dtype), numpy scalars, int, float, "
    "bool, str, bytes, None, and lists, tuples and dicts (str or int keys) of these"
)

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

# tags as ints (what indexing a memoryview gives)
N, T, F, INT, BIGINT, FLOAT, STR, BYTES, FILE, TENSOR, ARRAY, NPSCALAR, TUPLE, LIST, DICT = (
    ord(c) for c in "NTFiIfsbRPAatld"
)


# --- encoding ------------------------------------------------------------------------------------


def _where(path: tuple) -> str:
    if not path:
        return "the sample itself"
    head, rest = path[0], path[1:]
    text = f"field {head!r}" if isinstance(head, str) else f"field {head}"
    return text + "".join(f"[{k!r}]" for k in rest)


def _reject(value: Any, path: tuple, index: int, why: str = "") -> SchemaError:
    t = type(value)
    tname = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return SchemaError(
        f"sample {index}: {_where(path)} has unsupported type {tname}{why}; supported: {SUPPORTED}"
    )


def _shape_bytes(shape: Sequence[int]) -> bytes:
    return _U8.pack(len(shape)) + b"".join(_U64.pack(int(d)) for d in shape)


def _encode_tensor(t: Any, out: list, path: tuple, index: int) -> None:
    import torch

    if t.layout != torch.strided or t.is_quantized:
        raise _reject(t, path, index, f" (a {t.layout} tensor; convert it with .to_dense())")
    try:
        t = t.detach().cpu().resolve_conj().resolve_neg().contiguous()
    except Exception as e:  # meta tensors and the like
        raise _reject(t, path, index, f" ({e})") from e
    if t.ndim > 255:
        raise _reject(t, path, index, " (more than 255 dimensions)")
    name = str(t.dtype).removeprefix("torch.").encode()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    out.append(
        bytes((TENSOR, len(name))) + name + _shape_bytes(t.shape) + _U64.pack(len(data)) + data
    )


def _encode_array(a: Any, out: list, path: tuple, index: int, tag: int) -> None:
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise _reject(
            a, path, index, f" (dtype {a.dtype}: object and structured dtypes cannot be stored)"
        )
    if a.ndim > 255:
        raise _reject(a, path, index, " (more than 255 dimensions)")
    name = a.dtype.str.encode()
    data = a.tobytes(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    out.append(bytes((tag, len(name))) + name + _shape_bytes(a.shape) + _U64.pack(len(data)) + data)


def _encode(value: Any, out: list, sizes: list, path: tuple, index: int) -> None:
    t = type(value)
    if t is int:
        if _I64_MIN <= value <= _I64_MAX:
            out.append(b"i" + _I64.pack(value))
        else:
            digits = str(value).encode()
            out.append(b"I" + _U32.pack(len(digits)) + digits)
    elif t is float:
        out.append(b"f" + _F64.pack(value))
    elif t is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s" + _U32.pack(len(data)) + data)
    elif value is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if value else b"F")
    elif t is tuple or t is list:
        out.append((b"t" if t is tuple else b"l") + _U32.pack(len(value)))
        for k, item in enumerate(value):
            _encode(item, out, sizes, path + (k,), index)
    elif t is dict:
        out.append(b"d" + _U32.pack(len(value)))
        for k, item in value.items():
            if type(k) is not str and type(k) is not int:
                raise SchemaError(
                    f"sample {index}: {_where(path)} is a dict with a {type(k).__name__} key {k!r}; "
                    f"dict keys must be str or int. Supported values: {SUPPORTED}"
                )
            _encode(k, out, sizes, path, index)
            _encode(item, out, sizes, path + (k,), index)
    elif t is bytes or t is bytearray or t is memoryview:
        data = bytes(value)
        out.append(b"b" + _U64.pack(len(data)) + data)
    elif isinstance(value, File):
        try:
            size = value.size()
        except OSError as e:
            raise DataError(
                f"sample {index}: {_where(path)}: cannot read file {value.path}: {e.strerror or e}"
            ) from e
        name = value.name.encode("utf-8", "surrogatepass")
        if len(name) > 0xFFFF:
            raise SchemaError(f"sample {index}: {_where(path)}: file name longer than 65535 bytes")
        out.append(b"R" + _U16.pack(len(name)) + name + _U64.pack(size))
        out.append(value)
        sizes.append(size)
    elif "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor):
        _encode_tensor(value, out, path, index)
    elif "numpy" in sys.modules and isinstance(value, sys.modules["numpy"].ndarray):
        _encode_array(value, out, path, index, ARRAY)
    elif "numpy" in sys.modules and isinstance(value, sys.modules["numpy"].generic):
        import numpy as np

        _encode_array(np.asarray(value), out, path, index, NPSCALAR)
    elif isinstance(value, bool):  # bool subclasses (rare) before int
        out.append(b"T" if value else b"F")
    elif isinstance(value, int) and not isinstance(value, bool):  # IntEnum and friends
        _encode(int(value), out, sizes, path, index)
    elif isinstance(value, float):
        _encode(float(value), out, sizes, path, index)
    elif isinstance(value, str):
        _encode(str(value), out, sizes, path, index)
    else:
        raise _reject(value, path, index)


def encode_parts(sample: Any, index: int) -> tuple[list[bytes | File], int]:
    """Encode a sample without reading its files: byte runs with the ``File`` objects between them.

    Returns the parts and the exact encoded size (files counted by ``os.stat``).
    :func:`join_parts` turns the parts into the record. The chunk writer uses this split so the
    main process knows every record's size up front and workers do the file reading.
    """
    if type(sample) not in (tuple, dict, list):
        raise SchemaError(
            f"sample {index} is a {type(sample).__name__}; a sample is a tuple or a dict of fields, "
            f"e.g. `yield bench.File(path), label`. Field values may be: {SUPPORTED}"
        )
    out: list[Any] = []
    sizes: list[int] = []
    _encode(sample, out, sizes, (), index)
    parts: list[bytes | File] = []
    run: list[bytes] = []
    total = 0
    for p in out:
        if type(p) is bytes:
            run.append(p)
            total += len(p)
        else:
            parts.append(b"".join(run))
            run = []
            parts.append(p)
    parts.append(b"".join(run))
    return parts, total + sum(sizes)


def iter_parts(parts: Sequence[bytes | File], index: int = -1) -> Iterator[bytes]:
    """The byte runs of a record from :func:`encode_parts`, reading each file when its turn comes.

    Raises :class:`DataError` if a file changed size since it was measured.
    """
    prev = b""
    for p in parts:
        if type(p) is bytes:
            prev = p
            yield p
            continue
        expected = _U64.unpack_from(prev, len(prev) - 8)[0]
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(f"sample {index}: cannot read file {p.path}: {e.strerror or e}") from e
        if len(data) != expected:
            raise DataError(
                f"sample {index}: file {p.path} changed while chunking "
                f"({expected} bytes when listed, {len(data)} when read); run the migration again"
            )
        yield data


def join_parts(parts: Sequence[bytes | File], index: int = -1) -> bytes:
    """The record for parts from :func:`encode_parts`, reading the files now."""
    return b"".join(iter_parts(parts, index))


def encode_sample(sample: Any, index: int) -> bytes:
    """One sample as a record. Raises :class:`SchemaError` for unsupported values."""
    return join_parts(encode_parts(sample, index)[0], index)


# --- decoding ------------------------------------------------------------------------------------

_torch_dtypes: dict[bytes, Any] = {}
_np_dtypes: dict[bytes, Any] = {}


def _torch_dtype(name: bytes) -> Any:
    dt = _torch_dtypes.get(name)
    if dt is None:
        import torch

        dt = getattr(torch, name.decode("ascii"), None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"unknown torch dtype {name!r}")
        _torch_dtypes[name] = dt
    return dt


def _np_dtype(name: bytes) -> Any:
    dt = _np_dtypes.get(name)
    if dt is None:
        import numpy as np

        dt = np.dtype(name.decode("ascii"))
        if dt.hasobject:
            raise ValueError(f"refusing object dtype {name!r}")
        _np_dtypes[name] = dt
    return dt


def _decode_buffer(buf: memoryview, pos: int) -> tuple[bytes, tuple[int, ...], bytearray, int]:
    n = buf[pos]
    name = bytes(buf[pos + 1 : pos + 1 + n])
    pos += 1 + n
    ndim = buf[pos]
    shape = struct.unpack_from(f"<{ndim}Q", buf, pos + 1)
    pos += 1 + 8 * ndim
    (nbytes,) = _U64.unpack_from(buf, pos)
    pos += 8
    end = pos + nbytes
    if end > len(buf):
        raise ValueError("buffer runs past the record")
    return name, shape, bytearray(buf[pos:end]), end


def _decode(buf: memoryview, pos: int, origin: Any = None) -> tuple[Any, int]:
    tag = buf[pos]
    pos += 1
    if tag in (TUPLE, LIST):
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        items = []
        for _ in range(n):
            v, pos = _decode(buf, pos, origin)
            items.append(v)
        return (tuple(items) if tag == TUPLE else items), pos
    if tag == INT:
        return _I64.unpack_from(buf, pos)[0], pos + 8
    if tag == FILE:
        (n,) = _U16.unpack_from(buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + n]).decode("utf-8", "surrogatepass")
        pos += 2 + n
        (size,) = _U64.unpack_from(buf, pos)
        pos += 8
        if pos + size > len(buf):
            raise ValueError("file runs past the record")
        where = None if origin is None else (origin[0], origin[1], origin[2] + pos)
        return ChunkFile(buf[pos : pos + size], name, where), pos + size
    if tag == TENSOR:
        import torch

        name, shape, data, pos = _decode_buffer(buf, pos)
        dtype = _torch_dtype(name)
        if not data:
            return torch.empty(shape, dtype=dtype), pos
        return torch.frombuffer(data, dtype=dtype).reshape(shape), pos
    if tag in (ARRAY, NPSCALAR):
        import numpy as np

        name, shape, data, pos = _decode_buffer(buf, pos)
        arr = np.frombuffer(data, dtype=_np_dtype(name)).reshape(shape)
        return (arr[()] if tag == NPSCALAR else arr), pos
    if tag == FLOAT:
        return _F64.unpack_from(buf, pos)[0], pos + 8
    if tag == STR:
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise ValueError("string runs past the record")
        return str(buf[pos : pos + n], "utf-8", "surrogatepass"), pos + n
    if tag == N:
        return None, pos
    if tag == T:
        return True, pos
    if tag == F:
        return False, pos
    if tag == BYTES:
        (n,) = _U64.unpack_from(buf, pos)
        pos += 8
        if pos + n > len(buf):
            raise ValueError("bytes run past the record")
        return bytes(buf[pos : pos + n]), pos + n
    if tag == DICT:
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        d = {}
        for _ in range(n):
            k, pos = _decode(buf, pos, origin)
            d[k], pos = _decode(buf, pos, origin)
        return d, pos
    if tag == BIGINT:
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        return int(bytes(buf[pos : pos + n])), pos + n
    raise ValueError(f"unknown type tag {tag} at byte {pos - 1}")


def decode_sample(buf: memoryview | bytes, origin: tuple[str, int, int] | None = None) -> Any:
    """The sample a record encodes (tuple, list or dict as written).

    Raises ``ValueError`` or ``struct.error`` on a malformed record; :class:`ChunkReader` turns
    those into :class:`CorruptChunk` naming the chunk.
    """
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    value, end = _decode(mv, 0, origin)
    if end != len(mv):
        raise ValueError(f"record has {len(mv) - end} trailing bytes")
    return value


# --- schema --------------------------------------------------------------------------------------


def _field_schema(value: Any) -> dict[str, Any]:
    t = type(value)
    if value is None:
        return {"kind": "none"}
    if t is bool:
        return {"kind": "bool"}
    if t is int or (isinstance(value, int) and not isinstance(value, bool)):
        return {"kind": "int"}
    if t is float or isinstance(value, float):
        return {"kind": "float"}
    if t is str or isinstance(value, str):
        return {"kind": "str"}
    if t in (bytes, bytearray, memoryview):
        return {"kind": "bytes"}
    if isinstance(value, (File, ChunkFile)):
        return {"kind": "file"}
    if t is tuple:
        return {"kind": "tuple", "items": [_field_schema(v) for v in value]}
    if t is list:
        out: dict[str, Any] = {"kind": "list"}
        if value:
            out["item"] = _field_schema(value[0])
        return out
    if t is dict:
        return {"kind": "dict", "fields": {str(k): _field_schema(v) for k, v in value.items()}}
    if "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor):
        return {
            "kind": "tensor",
            "dtype": str(value.dtype).removeprefix("torch."),
            "ndim": value.ndim,
        }
    if "numpy" in sys.modules:
        np = sys.modules["numpy"]
        if isinstance(value, np.ndarray):
            return {"kind": "ndarray", "dtype": value.dtype.str, "ndim": value.ndim}
        if isinstance(value, np.generic):
            return {"kind": "npscalar", "dtype": value.dtype.str}
    return {"kind": t.__name__}


def sample_schema(sample: Any) -> dict[str, Any]:
    """A JSON-able description of a sample: its structure, field kinds and tensor dtypes.

    ``{"kind": "tuple", "items": [{"kind": "file"}, {"kind": "int"}]}`` for ``(File, 3)``.
    Shapes are not part of it (images of different sizes share a schema); ``ndim`` is.
    """
    return _field_schema(sample)


def _mismatch(expected: dict, actual: dict, path: tuple) -> str | None:
    ek, ak = expected.get("kind"), actual.get("kind")
    if ek == "none" or ak == "none":
        return None  # optional fields
    if {ek, ak} <= {"int", "float"}:
        return None
    if ek != ak:
        return f"{_where(path)} is {ak}, expected {ek}"
    if ek in ("tensor", "ndarray", "npscalar"):
        for key in ("dtype", "ndim"):
            if key in expected and expected.get(key) != actual.get(key):
                return f"{_where(path)} has {key} {actual.get(key)}, expected {expected.get(key)}"
    if ek == "tuple":
        e, a = expected["items"], actual["items"]
        if len(e) != len(a):
            return f"{_where(path)} has {len(a)} items, expected {len(e)}"
        for k, (x, y) in enumerate(zip(e, a, strict=False)):
            m = _mismatch(x, y, path + (k,))
            if m:
                return m
    if ek == "list" and "item" in expected and "item" in actual:
        return _mismatch(expected["item"], actual["item"], path + (0,))
    if ek == "dict":
        e, a = expected["fields"], actual["fields"]
        if set(e) != set(a):
            return f"{_where(path)} has keys {sorted(a)}, expected {sorted(e)}"
        for k in e:
            m = _mismatch(e[k], a[k], path + (k,))
            if m:
                return m
    return None


def check_schema(expected: dict[str, Any], sample: Any) -> str | None:
    """None when ``sample`` fits ``expected`` (a :func:`sample_schema`), else what differs.

    ``None`` values fit any field, ints and floats mix, and list items are compared by
    their first element only.
    """
    return _mismatch(expected, sample_schema(sample), ())


# --- chunk files ---------------------------------------------------------------------------------


class ChunkDigest:
    """The sha256 of a whole chunk file and of each of its ``block_bytes`` blocks, in one pass.

    The whole-file digest is what ``index.json`` has always held (and ``datasets verify``
    checks); the block digests (the first 16 bytes of each block's sha256, in hex, one after the
    other) let a reader verify a block the first time it touches it instead of hashing the
    whole chunk before its first sample.
    """

    def __init__(self, block_bytes: int = BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self._whole = hashlib.sha256()
        self._block = hashlib.sha256()
        self._in_block = 0
        self._blocks: list[str] = []

    def update(self, data: bytes | memoryview) -> None:
        self._whole.update(data)
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.block_bytes - self._in_block)
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == self.block_bytes:
                self._close_block()

    def _close_block(self) -> None:
        self._blocks.append(self._block.hexdigest()[:BLOCK_DIGEST_HEX])
        self._block = hashlib.sha256()
        self._in_block = 0

    def finish(self) -> tuple[str, str]:
        """``(sha256 hex of the whole file, block digests)``."""
        if self._in_block:
            self._close_block()
        return self._whole.hexdigest(), "".join(self._blocks)


def block_digest(data: bytes | memoryview) -> str:
    """What :class:`ChunkDigest` records for one block."""
    return hashlib.sha256(data).hexdigest()[:BLOCK_DIGEST_HEX]


@dataclass(frozen=True)
class WrittenChunk:
    """What :func:`write_records` wrote: size, whole-file sha256, block digests."""

    size: int
    sha256: str
    blocks: str
    block_bytes: int
    samples: int


def write_records(
    path: str | os.PathLike[str],
    records: Sequence[tuple[int, Sequence[bytes | File], int]],
    *,
    block_bytes: int = BLOCK_BYTES,
    durable: bool = True,
) -> WrittenChunk:
    """Write records as one chunk file, atomically, straight from their parts.

    ``records`` are ``(sample index, parts, record size)`` with parts from
    :func:`encode_parts`: each file is read when its turn comes and its bytes go to the file
    and the digests directly (no record is assembled in memory first). The files of the next
    :data:`READ_AHEAD_BYTES` of records are handed to the kernel to read meanwhile
    (``POSIX_FADV_WILLNEED``), so cold reads overlap the hashing and writing. With
    ``durable=False`` the file is not fsynced: the caller must (``fsutil.sync_file``) before it
    publishes anything that refers to it.
    """
    n = len(records)
    offsets = [0] * (n + 1)
    pos = HEADER_SIZE + 8 * (n + 1)
    for k, (_, _, size) in enumerate(records):
        offsets[k] = pos
        pos += size
    offsets[n] = pos
    digest = ChunkDigest(block_bytes)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, n) + struct.pack(f"<{n + 1}Q", *offsets)
    written = 0
    ahead = _ReadAhead(records, offsets)
    with atomic_file(path, fsync=durable) as f:
        digest.update(head)
        f.write(head)
        written += len(head)
        for k, (index, parts, size) in enumerate(records):
            ahead.advance(k)
            start = written
            for block in iter_parts(parts, index):
                digest.update(block)
                f.write(block)
                written += len(block)
            if written - start != size:
                raise DataError(
                    f"sample {index}: its record is {written - start} bytes, not {size}"
                )
    sha, blocks = digest.finish()
    return WrittenChunk(pos, sha, blocks, block_bytes, n)


#: How far ahead of the record being written :func:`write_records` asks for its files.
READ_AHEAD_BYTES = 8 << 20


class _ReadAhead:
    """Hands the files of the records ahead of the one being written to the kernel to read."""

    def __init__(
        self, records: Sequence[tuple[int, Sequence[bytes | File], int]], offsets: list[int]
    ):
        self.records = records
        self.offsets = offsets
        self.next = 0  # first record not yet advised

    def advance(self, k: int) -> None:
        """Record ``k`` is about to be written: advise up to READ_AHEAD_BYTES past its start."""
        limit = self.offsets[k] + READ_AHEAD_BYTES
        self.next = max(self.next, k)
        while self.next < len(self.records) and self.offsets[self.next] < limit:
            for p in self.records[self.next][1]:
                if type(p) is not bytes:
                    advise_willneed(p.path)
            self.next += 1


def write_chunk(path: str | os.PathLike[str], encoded_samples: Sequence[bytes]) -> tuple[int, str]:
    """Write records as one chunk file, atomically; returns (size in bytes, sha256 hex)."""
    w = write_records(path, [(i, [rec], len(rec)) for i, rec in enumerate(encoded_samples)])
    return w.size, w.sha256


class ChunkReader:
    """Random access to the samples of one chunk file, memory-mapped.

    With ``expected_sha256`` the whole file is checked first. With ``blocks`` (the chunk's block
    digests from ``index.json``, ``block_bytes`` each) every block is instead checked the first
    time a sample in it is read (the header and offsets table at once), so the first sample
    costs one block's hash rather than the whole chunk's. ``checked`` (a writable buffer of one
    byte per block, 1 = checked) may be shared with other readers of the same file, which then
    skip what another has checked; ``on_verified`` is called once every block has been checked. A mismatch, a truncated file or a bad header raises
    :class:`CorruptChunk` naming ``label`` (say, the dataset, chunk and store), and no byte of a
    failing block is ever returned.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        expected_sha256: str | None = None,
        blocks: str | None = None,
        block_bytes: int = BLOCK_BYTES,
        checked: Any = None,
        on_verified: Callable[[], None] | None = None,
        label: str = "",
    ) -> None:
        self.path = Path(path)
        self.label = label or str(self.path)
        self._mm: mmap.mmap | None = None
        self._buf: memoryview | None = None
        self._unchecked: memoryview | None = None  # per block: 1 once checked (lazy mode only)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_SIZE:
                    raise self._corrupt(
                        f"the file is truncated ({size} bytes, smaller than a header)"
                    )
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._ident = (str(self.path), os.fstat(f.fileno()).st_ino)
        except FileNotFoundError as e:
            raise CorruptChunk(f"chunk {self.label}: file {self.path} is missing") from e
        self._buf = memoryview(self._mm)
        if expected_sha256 is not None:
            actual = hashlib.sha256(self._buf).hexdigest()
            if actual != expected_sha256:
                self.close()
                raise self._corrupt(
                    f"checksum mismatch (sha256 {actual[:16]}..., the index says "
                    f"{expected_sha256[:16]}...); the file is damaged or was changed"
                )
        elif blocks:
            self._start_lazy(size, blocks, block_bytes, checked, on_verified)
            self._verify(0, HEADER_SIZE)
        magic, version, _flags, count = _HEADER.unpack_from(self._buf, 0)
        if magic != MAGIC:
            self.close()
            raise self._corrupt("not a BenchKit chunk (bad magic bytes)")
        if version > FORMAT_VERSION:
            self.close()
            raise CorruptChunk(
                f"chunk {self.label} has format version {version}, newer than this BenchKit "
                f"({FORMAT_VERSION}); upgrade benchkit"
            )
        table_end = HEADER_SIZE + 8 * (count + 1)
        if table_end > size:
            self.close()
            raise self._corrupt(
                f"the file is truncated ({size} bytes, the offsets table needs {table_end})"
            )
        self._verify(0, table_end)
        if sys.byteorder == "little":
            self._offsets: Any = self._buf[HEADER_SIZE:table_end].cast("Q")
        else:  # pragma: no cover
            self._offsets = struct.unpack_from(f"<{count + 1}Q", self._buf, HEADER_SIZE)
        if self._offsets[count] != size:
            end = self._offsets[count]
            self.close()
            raise self._corrupt(
                f"the file is {'truncated' if end > size else 'longer than its table says'} "
                f"({size} bytes, expected {end})"
            )
        if count and self._offsets[0] != table_end:
            self.close()
            raise self._corrupt("the offsets table is damaged")
        self._count = count

    def _start_lazy(
        self,
        size: int,
        blocks: str,
        block_bytes: int,
        checked: Any,
        on_verified: Callable[[], None] | None,
    ) -> None:
        count = len(blocks) // BLOCK_DIGEST_HEX
        if block_bytes < 1 or count != -(-size // block_bytes):
            self.close()
            raise self._corrupt(
                f"the file is {size} bytes, but the index lists {count} blocks of {block_bytes} "
                "bytes (truncated, or longer than when it was written)"
            )
        self._digests, self._block_bytes = blocks, block_bytes
        if checked is None or len(checked) != count:
            checked = bytearray(count)
        self._checked = checked
        self._unchecked = memoryview(checked)  # not None: lazy mode
        self._on_verified = on_verified
        self._all_checked()

    def _all_checked(self) -> bool:
        if self._checked.find(b"\x00") >= 0:
            return False
        self._unchecked = None
        if self._on_verified is not None:
            self._on_verified()
            self._on_verified = None
        return True

    def _verify(self, start: int, end: int) -> None:
        """Check every block overlapping bytes ``[start, end)`` that no reader has checked yet."""
        checked = self._unchecked
        if checked is None or end <= start:
            return
        bb = self._block_bytes
        buf = self._buf
        assert buf is not None
        fresh = False
        for b in range(start // bb, min(len(checked), (end - 1) // bb + 1)):
            if checked[b]:
                continue
            lo, hi = b * bb, min(len(buf), (b + 1) * bb)
            want = self._digests[b * BLOCK_DIGEST_HEX : (b + 1) * BLOCK_DIGEST_HEX]
            if block_digest(buf[lo:hi]) != want:
                self.close()
                raise self._corrupt(
                    f"checksum mismatch in block {b} (bytes {lo}-{hi}); the file is damaged or "
                    "was changed"
                )
            checked[b] = 1
            fresh = True
        if fresh:
            self._all_checked()

    def verify_all(self) -> None:
        """Check, in file order, every block no reader has checked yet (a prefetcher's work,
        ahead of the readers, who then find the blocks checked)."""
        if self._buf is not None:
            self._verify(0, len(self._buf))

    @property
    def fully_verified(self) -> bool:
        """False while some blocks have not been checked yet (lazy mode)."""
        return self._unchecked is None

    def _corrupt(self, what: str) -> CorruptChunk:
        return CorruptChunk(
            f"corrupt chunk {self.label}: {what}. Check and repair the dataset with "
            "`python -m benchkit datasets verify <dataset> --repair` (a cached copy: delete it)"
        )

    def __len__(self) -> int:
        return self._count

    def raw(self, i: int) -> memoryview:
        """The record of sample ``i``: a view into the mapping (valid until :meth:`close`)."""
        if not 0 <= i < self._count:
            if -self._count <= i < 0:
                i += self._count
            else:
                raise IndexError(f"sample {i} out of range: chunk {self.label} holds {self._count}")
        if self._buf is None:
            raise ValueError(f"chunk {self.label} is closed")
        start, end = self._offsets[i], self._offsets[i + 1]
        if not start <= end <= len(self._buf):
            raise self._corrupt(f"bad offsets for sample {i}")
        if self._unchecked is not None:
            self._verify(start, end)
        return self._buf[start:end]

    def will_read(self, indices: Iterable[int]) -> None:
        """Ask the kernel to start reading the bytes samples ``indices`` need (their records,
        widened to whole blocks while those are unchecked) in the background, all at once, so
        the reads that follow find them in the page cache instead of faulting them in one at a
        time. A hint: errors are ignored, nothing is checked here."""
        buf, mm = self._buf, self._mm
        if buf is None or mm is None or not hasattr(mm, "madvise"):
            return
        bb = self._block_bytes if self._unchecked is not None else 0
        spans = []
        for i in indices:
            if not 0 <= i < self._count:
                continue
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            if bb:
                lo, hi = lo - lo % bb, min(len(buf), -(-hi // bb) * bb)
            spans.append((lo - lo % mmap.PAGESIZE, hi))
        spans.sort()
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        for lo, hi in merged:
            if hi > lo:
                with contextlib.suppress(OSError, ValueError):
                    mm.madvise(mmap.MADV_WILLNEED, lo, hi - lo)

    def __getitem__(self, i: int) -> Any:
        rec = self.raw(i)
        # where the record sits in the file: a stored file's bytes can then be shared with
        # another process as (file, inode, offset) instead of a copy (see batch.FileBatch)
        origin = (*self._ident, self._offsets[i % self._count])
        try:
            return decode_sample(rec, origin)
        except (
            ValueError,
            struct.error,
            UnicodeDecodeError,
            IndexError,
            TypeError,
            RuntimeError,
            OverflowError,
        ) as e:
            raise self._corrupt(f"sample {i} cannot be decoded ({e})") from e
        finally:
            rec.release()

    def __iter__(self):
        for i in range(self._count):
            yield self[i]

    def close(self) -> None:
        """Unmap the file. Views from :meth:`raw` still held elsewhere keep it mapped until freed."""
        for view in (getattr(self, "_offsets", None), self._buf, self._unchecked):
            if isinstance(view, memoryview):
                view.release()
        self._offsets = ()
        self._buf = None
        self._unchecked = None
        if self._mm is not None:
            # a caller may still hold a raw() view: then the mapping goes when that view does
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
