"""The training progress bar: rich, with rate, ETA and the last logged values."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Iterations per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("- it/s", style="progress.data.speed")
        return Text(
            f"{speed:.1f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it",
            style="progress.data.speed",
        )


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
    from benchkit.cli.common import console

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[values]}"),
    ]
    seen, next_refresh = -1, 0.0
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, values="")
        for item in iterable:
            yield item
            # reading tensor values syncs the device: do it at most twice a second
            if run is not None and run._values_version != seen and time.monotonic() >= next_refresh:
                seen, next_refresh = run._values_version, time.monotonic() + 0.5
                bar.update(task, advance=1, values=format_values(run._last_values))
            else:
                bar.advance(task)
