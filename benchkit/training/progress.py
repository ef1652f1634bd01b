"""The training progress bar: rate, ETA and the last logged values."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from benchkit.console import console, make_progress


def format_values(values: dict[str, Any]) -> str:
    """``loss=0.3412 acc=0.91`` from logged values (tensors read here, not in the loop)."""
    parts = []
    for k, v in values.items():
        if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
            v = v.item()
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def progress_bar(
    iterable: Iterable[Any], description: str, total: int | None, run: Any = None
) -> Iterator[Any]:
    """Yield from ``iterable`` while drawing a progress bar; ``run`` supplies the last values."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    seen, next_refresh = -1, 0.0
    with make_progress(info=True, to=console) as bar:
        task = bar.add_task(description, total=total, info="")
        for item in iterable:
            yield item
            # reading tensor values syncs the device: do it at most twice a second
            if run is not None and run._values_version != seen and time.monotonic() >= next_refresh:
                seen, next_refresh = run._values_version, time.monotonic() + 0.5
                bar.update(task, advance=1, info=format_values(run._last_values))
            else:
                bar.advance(task)
