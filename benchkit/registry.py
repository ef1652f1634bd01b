"""What the decorators declare, and how a user's module is loaded to find it.

The registry imports nothing heavy and runs nothing: ``@bench.dataset`` and ``@bench.train``
mark their objects with ``__benchkit_kind__`` ("dataset" or "train") and this module finds
them in a module's globals.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from benchkit.errors import BenchKitError

DATASET = "dataset"
TRAIN = "train"


def mark(obj: Any, kind: str, name: str) -> Any:
    """Tag ``obj`` as a BenchKit declaration of ``kind`` called ``name``."""
    obj.__benchkit_kind__ = kind
    obj.__benchkit_name__ = name
    return obj


def kind_of(obj: Any) -> str | None:
    return getattr(obj, "__benchkit_kind__", None) if not isinstance(obj, type) else None


def declared(module: ModuleType, kind: str) -> dict[str, Any]:
    """The declarations of ``kind`` in ``module``, by their BenchKit name, in definition order."""
    found: dict[str, Any] = {}
    for value in vars(module).values():
        if kind_of(value) == kind:
            found.setdefault(value.__benchkit_name__, value)
    return found


def user_module_path(
    path: str | os.PathLike[str], error: type[BenchKitError] = BenchKitError
) -> Path:
    """The resolved path of a user's module; ``error`` if it is missing or not a .py file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise error(f"{path} does not exist; give the path of your training module, e.g. train.py")
    if path.suffix != ".py":
        raise error(f"{path} is not a Python file (.py)")
    return path


def import_user_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a user's Python file by path, with its directory first on ``sys.path``.

    A module imported twice is imported once: the same path gives the same module object.
    """
    path = user_module_path(path)
    for mod in list(sys.modules.values()):
        if getattr(mod, "__file__", None) and Path(mod.__file__).resolve() == path:
            return mod
    name = "__benchkit_user__." + path.stem if path.stem in sys.modules else path.stem
    project_dir = str(path.parent)
    if project_dir not in sys.path:
        sys.path.insert(0, project_dir)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BenchKitError:
        sys.modules.pop(name, None)
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))
        raise BenchKitError(f"importing {path} failed: {type(e).__name__}: {e}\n{tb}") from e
    return module
