"""BenchKit: take a PyTorch training project from a laptop to cloud machines.

The public API is what this module exports. Names are imported lazily so that
``import benchkit`` (and the decorators in a user's module) stay cheap: torch and accelerate
load only when something that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchkit import _aliases  # noqa: F401  (installs the original's BenchKit.* import paths)
from benchkit._version import __version__
from benchkit.errors import BenchKitError

#: public name -> module that defines it
_EXPORTS = {
    # store
    "Store": "benchkit.store",
    "open_store": "benchkit.store",
    # data: declaring, the original class API, streaming
    "dataset": "benchkit.data.declare",
    "File": "benchkit.data.sample",
    "ProcessorDataset": "benchkit.data.classic",
    "IterableChunk": "benchkit.data.stream",
    "open_dataset": "benchkit.data.stream",
    "get_dataset": "benchkit.data.loader",
    "StreamingDataLoader": "benchkit.data.loader",
    "mix": "benchkit.data.mix",
    "MixedDataset": "benchkit.data.mix",
    # training
    "train": "benchkit.training.declare",
    "Run": "benchkit.training.run",
    "BenchTracker": "benchkit.training.tracker",
    "BenchAccelerateTracker": "benchkit.training.tracker",
    "get_accelerator": "benchkit.training.helpers",
    "upload_model_checkpoint": "benchkit.training.helpers",
    "wipe_temp": "benchkit.training.helpers",
}

__all__ = ["BenchKitError", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'benchkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
