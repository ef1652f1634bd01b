"""Training: ``@bench.train``, ``bench.Run``, the tracker, checkpoints and ``benchkit run``.

``bench.train`` is both the public decorator and the name of this package: once any
``benchkit.train.*`` module is imported, Python binds ``benchkit.train`` to this package. So
that ``@bench.train(...)`` works whatever was imported first, calling this package calls the
decorator (:func:`benchkit.train.declare.train`).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from benchkit.train.declare import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
