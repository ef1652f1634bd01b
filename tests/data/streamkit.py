"""Helpers for the streaming tests: small datasets chunked with the real writer, put in real stores."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchkit.data.index import dataset_prefix
from benchkit.data.writer import chunk_samples
from benchkit.store import open_store

#: does not divide evenly by 2 or 3, so padding and drop_last matter
N_SAMPLES = 103


def toy_samples(n: int = N_SAMPLES) -> Iterable[tuple[int, str]]:
    return ((i, f"sample-{i}") for i in range(n))


def make_dataset(
    store_url: str,
    tmp: Path,
    name: str = "toy",
    n: int = N_SAMPLES,
    chunk_bytes: int = 400,
    samples: Iterable[Any] | None = None,
) -> Any:
    """Chunk samples into a local staging dir with the real writer and upload them to ``store_url``
    (chunks first, ``index.json`` last). Returns the dataset's index."""
    staging = tmp / f"staging-{name}"
    stats = chunk_samples(
        samples if samples is not None else toy_samples(n),
        name,
        staging,
        chunk_bytes=chunk_bytes,
        workers=1,
    )
    store = open_store(store_url)
    prefix = dataset_prefix(name)
    local = staging / prefix
    if Path(store.url) == staging.resolve():
        return stats.index
    for c in stats.index.chunks:
        store.put_file(prefix + c.file, local / c.file)
    store.put_file(prefix + "index.json", local / "index.json")
    return stats.index


def ids(batches: Iterable[Any]) -> list[int]:
    """Sample ids from batches collated by the default collate (``(tensor of ids, [names])``)."""
    out: list[int] = []
    for b in batches:
        out.extend(int(x) for x in b[0])
    return out
