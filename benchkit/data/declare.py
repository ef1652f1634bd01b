"""``@bench.dataset``: declaring where a dataset's samples come from.

::

    @bench.dataset("train", chunk_bytes="64MB")
    def train_samples():
        for path in sorted(Path("data/train").iterdir()):
            yield bench.File(path), 0 if path.name.startswith("cat") else 1

    @train_samples.transform          # runs while streaming, inside DataLoader workers
    def decode(image, label):
        return TRANSFORM(Image.open(image).convert("RGB")), label

The decorated function may instead return a ``ProcessorDataset`` (the original class API).
The decorator returns a :class:`DeclaredDataset`: iterate it for the raw samples, call it like
the original function. A module whose ``main()`` returns the original's list of
``(ProcessorDataset object, IterableChunk class, name, args, kwargs)`` tuples is read by
:func:`datasets_in_module` too.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from benchkit.data.classic import ProcessorDataset, is_processor, processor_sample
from benchkit.data.index import check_dataset_name
from benchkit.errors import DataError
from benchkit.registry import DATASET, TRAIN, declared, mark
from benchkit.units import parse_size

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DeclaredDataset",
    "dataset",
    "datasets_in_module",
    "parse_bytes",
    "project_root_for",
]

DEFAULT_CHUNK_BYTES = 64_000_000

#: ``parse_bytes`` is the project's one size parser, under the name this module exported first.
parse_bytes = parse_size


def project_root_for(module_file: str | Path | None) -> Path:
    """The project a module belongs to: the nearest directory with ``benchkit.toml`` above it,
    else the module's own directory."""
    from benchkit.settings import find_project_file

    if module_file is None:
        return Path.cwd()
    here = Path(module_file).resolve().parent
    found = find_project_file(here)
    return found.parent if found else here


class DeclaredDataset:
    """A declared dataset: the user's function plus how to chunk and stream it.

    ``name``, ``chunk_bytes`` (int), ``chunk_class``/``chunk_args``/``chunk_kwargs`` (an
    ``IterableChunk`` subclass to stream it with, or None) and ``transform_fn`` (set by
    :meth:`transform`) are what migration and streaming read.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        chunk_bytes: str | int = DEFAULT_CHUNK_BYTES,
        chunk: type | None = None,
        chunk_args: Iterable[Any] = (),
        chunk_kwargs: dict[str, Any] | None = None,
        module_file: str | None = None,
    ) -> None:
        self.name = check_dataset_name(name)
        self.fn = fn
        self.chunk_bytes = parse_bytes(chunk_bytes)
        if chunk is not None and not isinstance(chunk, type):
            raise DataError(
                f"dataset '{name}': chunk= must be an IterableChunk class, got {chunk!r}"
            )
        self.chunk_class = chunk
        self.chunk_args = tuple(chunk_args or ())
        self.chunk_kwargs = dict(chunk_kwargs or {})
        self.transform_fn: Callable[..., Any] | None = None
        if module_file is None:
            try:
                module_file = inspect.getsourcefile(fn)
            except TypeError:
                module_file = None
        self.module_file = module_file
        if hasattr(fn, "__name__"):
            functools.update_wrapper(self, fn)
        mark(self, DATASET, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def transform(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: ``fn`` runs on every sample while streaming (in DataLoader workers).

        A tuple sample is passed as positional arguments (``fn(image, label)``), a dict
        sample as one argument. Returns ``fn`` unchanged.
        """
        if not callable(fn):
            raise DataError(f"dataset '{self.name}': .transform needs a function, got {fn!r}")
        self.transform_fn = fn
        return fn

    def apply_transform(self, sample: Any) -> Any:
        """``sample`` after the registered transform (unchanged when there is none)."""
        fn = self.transform_fn
        if fn is None:
            return sample
        if isinstance(sample, (tuple, list)):
            return fn(*sample)
        return fn(sample)

    @property
    def project_root(self) -> Path:
        """Directory of the user's project (holds ``.benchkit/staging``)."""
        return project_root_for(self.module_file)

    def _source(self) -> Any:
        result = self.fn()
        if result is None:
            raise DataError(
                f"dataset '{self.name}': {getattr(self.fn, '__qualname__', self.fn)} returned None; "
                "it must yield samples or return a ProcessorDataset"
            )
        return result

    def size_hint(self) -> int | None:
        """The number of samples when known without iterating (a ProcessorDataset's length)."""
        src = self._source()
        if is_processor(src):
            return len(src)
        return None

    def samples(self) -> Iterator[Any]:
        """The raw samples, in order (what chunking stores)."""
        src = self._source()
        if is_processor(src):
            return (processor_sample(src, i) for i in range(len(src)))
        if isinstance(src, (str, bytes, dict)) or not isinstance(src, Iterable):
            raise DataError(
                f"dataset '{self.name}': {getattr(self.fn, '__qualname__', self.fn)} returned "
                f"{type(src).__name__}; it must yield samples or return a ProcessorDataset"
            )
        return iter(src)

    def __iter__(self) -> Iterator[Any]:
        return self.samples()

    def __repr__(self) -> str:
        return f"<dataset {self.name!r} from {getattr(self.fn, '__qualname__', self.fn)}>"


def dataset(
    name: str | Callable[..., Any] | None = None,
    chunk_bytes: str | int = DEFAULT_CHUNK_BYTES,
    chunk: type | None = None,
    chunk_args: Iterable[Any] = (),
    chunk_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Declare a dataset named ``name`` (default: the function's name).

    ``chunk_bytes``: target size of a chunk file (``"64MB"``). ``chunk``, ``chunk_args``,
    ``chunk_kwargs``: an ``IterableChunk`` subclass (and its extra constructor arguments) to
    stream the dataset with, as the original ``main()`` tuples named them.
    """
    if callable(name):  # bare @bench.dataset
        return DeclaredDataset(name.__name__, name)

    def wrap(fn: Callable[..., Any]) -> DeclaredDataset:
        return DeclaredDataset(
            name or fn.__name__,
            fn,
            chunk_bytes=chunk_bytes,
            chunk=chunk,
            chunk_args=chunk_args,
            chunk_kwargs=chunk_kwargs,
        )

    return wrap


def _is_classic_module(module: ModuleType) -> bool:
    """A module whose ``main()`` lists datasets: ``ProjectDatasets.py``, or one that defines
    (not merely imports) a ``ProcessorDataset`` subclass and declares no ``@bench.train``."""
    if not callable(getattr(module, "main", None)) or declared(module, TRAIN):
        return False
    if Path(getattr(module, "__file__", "") or "").name == "ProjectDatasets.py":
        return True
    return any(
        isinstance(v, type)
        and issubclass(v, ProcessorDataset)
        and v is not ProcessorDataset
        and v.__module__ == module.__name__
        for v in vars(module).values()
    )


def _classic_datasets(module: ModuleType) -> dict[str, DeclaredDataset]:
    where = getattr(module, "__file__", module.__name__)
    try:
        entries = module.main()
    except Exception as e:
        raise DataError(f"{where}: main() failed: {type(e).__name__}: {e}") from e
    if not isinstance(entries, (list, tuple)):
        raise DataError(
            f"{where}: main() returned {type(entries).__name__}; it must return a list of "
            "(ProcessorDataset object, IterableChunk class, name, args, kwargs) tuples"
        )
    found: dict[str, DeclaredDataset] = {}
    for k, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or not 3 <= len(entry) <= 5:
            raise DataError(
                f"{where}: main() entry {k} is not a (ProcessorDataset object, IterableChunk "
                "class, name, args, kwargs) tuple"
            )
        obj, cls, name = entry[0], entry[1], entry[2]
        args = entry[3] if len(entry) > 3 else ()
        kwargs = entry[4] if len(entry) > 4 else {}
        if not is_processor(obj):
            raise DataError(
                f"{where}: main() entry {k} ({name!r}): the first item must be a ProcessorDataset "
                f"object, got {type(obj).__name__}"
            )
        if cls is not None and not isinstance(cls, type):
            raise DataError(
                f"{where}: main() entry {k} ({name!r}): the second item must be a class"
            )
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise DataError(
                f"{where}: main() entry {k} ({name!r}): args must be a list, kwargs a dict"
            )
        if name in found:
            raise DataError(f"{where}: main() declares dataset {name!r} twice")
        found[name] = DeclaredDataset(
            name,
            functools.partial(_identity, obj),
            chunk=cls,
            chunk_args=args,
            chunk_kwargs=kwargs,
            module_file=getattr(module, "__file__", None),
        )
    return found


def _identity(obj: Any) -> Any:
    return obj


def datasets_in_module(module: ModuleType) -> dict[str, DeclaredDataset]:
    """Every dataset ``module`` declares: ``@bench.dataset`` ones, then a classic ``main()``'s.

    ``main()`` is called only in a module that looks classic (``ProjectDatasets.py``, or one
    defining a ``ProcessorDataset`` subclass), never in an ordinary training script.
    """
    found: dict[str, DeclaredDataset] = dict(declared(module, DATASET))
    if _is_classic_module(module):
        for name, decl in _classic_datasets(module).items():
            found.setdefault(name, decl)
    return found


_BENCHKIT = Path(__file__).resolve().parents[1]


def datasets_in_project(module: ModuleType, project_root: str | Path) -> dict[str, DeclaredDataset]:
    """The datasets ``module`` declares, then those of the project modules it has imported
    (a training script's ``Datasets/ProjectDatasets.py``, say): what it may stream. Modules
    outside ``project_root`` and installed packages are not looked at."""
    found = dict(datasets_in_module(module))
    root = Path(project_root).resolve()
    seen = {Path(module.__file__).resolve()} if getattr(module, "__file__", None) else set()
    for other in list(sys.modules.values()):
        # vars(), not getattr(): some modules (torch.classes) answer every attribute lookup
        file = vars(other).get("__file__") if isinstance(other, ModuleType) else None
        if not isinstance(file, str):
            continue
        path = Path(file).resolve()
        installed = "site-packages" in path.parts or "dist-packages" in path.parts
        if path in seen or installed or root not in path.parents or _BENCHKIT in path.parents:
            continue
        seen.add(path)
        for name, decl in datasets_in_module(other).items():
            found.setdefault(name, decl)
    return found
