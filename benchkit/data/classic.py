"""The original BenchKit class API for the writing side: ``ProcessorDataset``.

A ``ProcessorDataset`` says which files and labels make up a dataset::

    class CatDog(ProcessorDataset):
        def __len__(self): ...
        def get_file(self, item) -> list[str]: ...          # paths of the sample's files
        def get_label_and_numeric_data(self, item): ...     # labels / small numeric data

Its sample ``i`` is ``(labels, [bench.File(p) for p in get_file(i)])``, which is what the
classic ``IterableChunk._data_iterator`` yields back while streaming, as ``(labels, files)``
with each file a :class:`~benchkit.data.sample.ChunkFile`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from benchkit.data.sample import File
from benchkit.errors import DataError

__all__ = ["ProcessorDataset", "is_processor", "processor_sample"]


class ProcessorDataset:
    """Base class: override ``__len__``, ``get_label_and_numeric_data`` and, for file data, ``get_file``."""

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def get_file(self, item: int) -> list[str]:
        """Full paths of the files of sample ``item`` (none by default: labels-only data)."""
        return []

    def get_label_and_numeric_data(self, item: int) -> Any:
        """The labels and small numeric data of sample ``item``, as the model wants them."""
        raise NotImplementedError(f"{type(self).__name__} must define get_label_and_numeric_data")

    def sample(self, item: int) -> tuple[Any, list[File]]:
        """Sample ``item`` as BenchKit stores it: ``(labels, [File, ...])``."""
        return processor_sample(self, item)

    def __iter__(self) -> Iterator[tuple[Any, list[File]]]:
        for i in range(len(self)):
            yield processor_sample(self, i)


def is_processor(obj: Any) -> bool:
    """True for a ``ProcessorDataset`` or an object with the same methods (duck typing, so
    subclasses of the original package's class work too)."""
    return isinstance(obj, ProcessorDataset) or (
        not isinstance(obj, type)
        and callable(getattr(obj, "get_label_and_numeric_data", None))
        and callable(getattr(obj, "__len__", None))
    )


def processor_sample(obj: Any, item: int) -> tuple[Any, list[File]]:
    """``(labels, [File, ...])`` for sample ``item`` of a processor dataset."""
    get_file = getattr(obj, "get_file", None)
    files = get_file(item) if callable(get_file) else []
    if files is None:
        files = []
    if isinstance(files, (str, bytes)) or not isinstance(files, (list, tuple)):
        raise DataError(
            f"{type(obj).__name__}.get_file({item}) returned {type(files).__name__}; "
            "it must return a list of file paths"
        )
    return obj.get_label_and_numeric_data(item), [File(p) for p in files]
