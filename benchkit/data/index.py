"""``datasets/<name>/index.json``: what a dataset holds, written last so a dataset is whole or absent."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from benchkit.errors import DataError, DatasetNotFound, ObjectNotFound

__all__ = [
    "INDEX_FILE",
    "ChunkInfo",
    "DatasetIndex",
    "check_dataset_name",
    "dataset_prefix",
    "load_index",
]

INDEX_FILE = "index.json"
DATASETS_PREFIX = "datasets/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it can name a dataset (letters, digits, ``_ . -``), else raise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataError(
            f"invalid dataset name {name!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit), at most 128 characters"
        )
    return name


def dataset_prefix(name: str) -> str:
    """The store prefix of a dataset: ``datasets/<name>/``."""
    return f"{DATASETS_PREFIX}{check_dataset_name(name)}/"


@dataclass
class ChunkInfo:
    """One chunk file of a dataset.

    ``sha256`` is the whole file's; ``blocks`` (optional, newer writers) the digests of its
    ``block_bytes`` blocks, which readers check block by block (see ``format.ChunkDigest``).
    """

    file: str
    samples: int
    bytes: int
    sha256: str
    blocks: str = ""
    block_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.blocks:  # an index without block digests stays as older writers wrote it
            del d["blocks"], d["block_bytes"]
        return d


@dataclass
class DatasetIndex:
    """The contents of ``index.json``. Unknown keys are kept in ``extra`` and written back."""

    name: str
    num_samples: int
    chunks: list[ChunkInfo]
    schema: dict[str, Any]
    format_version: int
    created: str
    chunk_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["chunks"] = [c.to_dict() for c in self.chunks]
        return {**self.extra, **d}

    def to_json(self) -> str:
        """The JSON text (sorted keys, so equal indexes give equal bytes)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "index.json") -> DatasetIndex:
        try:
            known = {f.name for f in fields(cls)} - {"extra"}
            chunks = [
                ChunkInfo(
                    str(c["file"]),
                    int(c["samples"]),
                    int(c["bytes"]),
                    str(c["sha256"]),
                    str(c.get("blocks", "")),
                    int(c.get("block_bytes", 0)),
                )
                for c in d["chunks"]
            ]
            idx = cls(
                name=str(d["name"]),
                num_samples=int(d["num_samples"]),
                chunks=chunks,
                schema=dict(d["schema"]),
                format_version=int(d["format_version"]),
                created=str(d.get("created", "")),
                chunk_bytes=int(d.get("chunk_bytes", 0)),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{source} is not a valid dataset index ({type(e).__name__}: {e})"
            ) from e
        if sum(c.samples for c in chunks) != idx.num_samples:
            raise DataError(
                f"{source} is inconsistent: its chunks hold {sum(c.samples for c in chunks)} "
                f"samples but num_samples is {idx.num_samples}"
            )
        return idx

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "index.json") -> DatasetIndex:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise DataError(f"{source} is not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise DataError(f"{source} is not a valid dataset index (not a JSON object)")
        return cls.from_dict(d, source)


def load_index(store: Any, name: str) -> DatasetIndex:
    """The index of dataset ``name`` in ``store`` (a :class:`~benchkit.store.Store` or URL)."""
    from benchkit.data.format import FORMAT_VERSION
    from benchkit.store import open_store

    store = open_store(store)
    key = dataset_prefix(name) + INDEX_FILE
    try:
        text = store.get(key)
    except ObjectNotFound as e:
        raise DatasetNotFound(
            f"dataset '{name}' is not in store {store.url} (no {key}); "
            "run `python -m benchkit migrate data` to chunk and upload it"
        ) from e
    idx = DatasetIndex.from_json(text, f"dataset '{name}' index {key} in store {store.url}")
    if idx.format_version > FORMAT_VERSION:
        raise DataError(
            f"dataset '{name}' in store {store.url} uses chunk format {idx.format_version}, newer "
            f"than this BenchKit reads ({FORMAT_VERSION}); upgrade benchkit"
        )
    return idx
