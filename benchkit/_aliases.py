"""The original package's import paths (``from BenchKit.Data.Helpers import get_dataset``) as
aliases of ``benchkit``, so the original's user code runs unchanged.

There is no ``BenchKit/`` folder and no ``BenchKit.py``: on a case-insensitive filesystem
(macOS, Windows) either would clash with ``benchkit/``. Instead a meta path finder answers for
the module names in :data:`ALIASES` and builds each one on the fly; its attributes are the
``benchkit`` objects themselves (``BenchKit.Data.Datasets.IterableChunk is
benchkit.IterableChunk``), loaded only when they are first used. The finder is installed at
interpreter start-up by ``benchkit-aliases.pth``, which wheels and editable installs put into
site-packages (see ``setup.py``), and again by ``import benchkit``.

The first import of a ``BenchKit`` module emits a :class:`DeprecationWarning` attributed to the
line that imported it, pointing to ``import benchkit``.

This module must stay cheap to import: the ``.pth`` file imports it in every Python process.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["ALIASES", "install"]

ROOT = "BenchKit"

#: alias module -> {name: benchkit module defining it}; modules without names are packages
ALIASES: dict[str, dict[str, str]] = {
    "BenchKit": {},
    "BenchKit.Data": {},
    "BenchKit.Data.Datasets": {
        "ProcessorDataset": "benchkit.data.classic",
        "IterableChunk": "benchkit.data.stream",
    },
    "BenchKit.Data.Helpers": {"get_dataset": "benchkit.data.loader"},
    "BenchKit.Train": {},
    "BenchKit.Train.Helpers": {
        "get_accelerator": "benchkit.training.helpers",
        "wipe_temp": "benchkit.training.helpers",
    },
    "BenchKit.Tracking": {},
    "BenchKit.Tracking.Tracker": {
        "BenchAccelerateTracker": "benchkit.training.tracker",
        "BenchTracker": "benchkit.training.tracker",
    },
    "BenchKit.Tracking.Helpers": {"upload_model_checkpoint": "benchkit.training.helpers"},
}

#: names the original offered that BenchKit replaces with a command: what to use instead
REPLACED: dict[str, dict[str, str]] = {
    "BenchKit.Data.Helpers": {
        name: "`python manage.py migrate-data` (or `benchkit migrate data`) chunks, tests and "
        "uploads the datasets main() returns"
        for name in ("create_dataset_zips", "test_dataloading", "run_upload", "process_datasets")
    },
}

_PACKAGES = {name for name in ALIASES if any(other.startswith(name + ".") for other in ALIASES)}
_warned = False


def _is_package(name: str) -> bool:
    return name in _PACKAGES


def _module_getattr(module_name: str) -> Any:
    names = ALIASES[module_name]

    def __getattr__(attr: str) -> Any:
        source = names.get(attr)
        if source is None:
            instead = REPLACED.get(module_name, {}).get(attr)
            if instead is not None:
                # ImportError (not AttributeError) so `from X import name` shows this message
                raise ImportError(
                    f"{module_name}.{attr} of the original BenchKit is not provided: {instead}",
                    name=module_name,
                )
            raise AttributeError(
                f"module {module_name!r} (an alias of benchkit) has no attribute {attr!r}; "
                f"it provides: {', '.join(sorted(names)) or 'only submodules'}"
            )
        value = getattr(importlib.import_module(source), attr)
        sys.modules[module_name].__dict__[attr] = value
        return value

    return __getattr__


def _importer_frame() -> Any:
    """The frame of the code running the import statement (outside importlib and this module)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename == __file__ or filename.startswith("<frozen importlib")):
            return frame
        frame = frame.f_back
    return None


def _warn_once() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    message = (
        "the 'BenchKit' package name is deprecated: it is an alias of 'benchkit'. Write "
        "`import benchkit as bench` (bench.get_dataset, bench.IterableChunk, "
        "bench.get_accelerator, ...) instead"
    )
    frame = _importer_frame()
    if frame is None:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return
    globs = frame.f_globals
    warnings.warn_explicit(
        message,
        DeprecationWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=globs.get("__name__", "<unknown>"),
        registry=globs.setdefault("__warningregistry__", {}),
    )


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and builds the modules named in :data:`ALIASES`."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=_is_package(fullname), origin="alias of benchkit"
        )

    def create_module(self, spec: Any) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        _warn_once()
        module.__doc__ = f"The original BenchKit's {name}: an alias of benchkit (deprecated)."
        module.__all__ = sorted(ALIASES[name])
        module.__getattr__ = _module_getattr(name)  # type: ignore[attr-defined]
        if _is_package(name):
            module.__path__ = []


_finder = AliasFinder()


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once). It goes last, so a real ``BenchKit`` package
    (the original, installed) still wins."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_finder)


install()
