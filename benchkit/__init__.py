"""BenchKit: take a PyTorch training project from a laptop to cloud machines.

The public API is what this module exports.
"""

from __future__ import annotations

from benchkit._version import __version__
from benchkit.errors import BenchKitError
from benchkit.store import Store, open_store

__all__ = [
    "BenchKitError",
    "Store",
    "__version__",
    "open_store",
]
