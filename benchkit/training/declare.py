"""``@bench.train``: mark the function ``benchkit run`` calls with a :class:`~benchkit.training.run.Run`.

The decorator returns the function itself (still callable with a ``Run``), tagged for the
registry and carrying its default config as ``fn.config``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from benchkit.errors import ConfigError
from benchkit.registry import TRAIN, mark

F = TypeVar("F", bound=Callable[..., Any])


@overload
def train(fn: F, /) -> F: ...


@overload
def train(
    *,
    config: dict[str, Any] | None = None,
    name: str | None = None,
    monitor: str | None = None,
    mode: str | None = None,
) -> Callable[[F], F]: ...


MODES = ("max", "min")


def train(
    fn: Any = None,
    /,
    *,
    config: dict[str, Any] | None = None,
    name: str | None = None,
    monitor: str | None = None,
    mode: str | None = None,
) -> Any:
    """Declare the training function: ``@bench.train(config={"epochs": 10, "lr": 1e-2})``.

    ``config`` gives the defaults that ``--config key=value`` may override (values are typed
    by these defaults); ``name`` names the runs (default: the function's name). ``monitor``
    names the logged metric that says how good a run is and ``mode`` whether more
    (``"max"``, the default) or less (``"min"``) is better: ``runs list`` and the dashboard
    sort by it, and ``save_checkpoint`` keeps the best checkpoint by it besides the last ones.
    """
    if monitor is not None and (not isinstance(monitor, str) or not monitor.strip()):
        raise ConfigError(f"@bench.train(monitor=...) names a logged metric, got {monitor!r}")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"@bench.train(mode=...) is 'max' or 'min', got {mode!r}")
    if mode is not None and monitor is None:
        raise ConfigError("@bench.train(mode=...) needs monitor='<metric name>' too")
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"@bench.train(config=...) takes a dict, got {type(config).__name__}")
    for key in config or {}:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"@bench.train config key {key!r} must be an identifier-like string")

    def wrap(f: F) -> F:
        if not callable(f):
            raise ConfigError(f"@bench.train decorates a function, got {type(f).__name__}")
        f.config = dict(config or {})  # type: ignore[attr-defined]
        f.monitor = monitor  # type: ignore[attr-defined]
        f.mode = (mode or "max") if monitor else None  # type: ignore[attr-defined]
        return mark(f, TRAIN, name or f.__name__)

    if fn is not None:
        if isinstance(fn, dict):
            raise ConfigError("use @bench.train(config={...}) (config is a keyword argument)")
        return wrap(fn)
    return wrap
