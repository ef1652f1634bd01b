"""What a person reads: the rich consoles and the one progress-bar builder.

Library code (data, training, code) prints user-facing notices through :data:`err_console`
and builds every progress bar with :func:`make_progress`; the command line (``benchkit.cli``)
re-exports both consoles. A notice that tells the user what to run next prints the command
on a line of its own with :func:`print_hint`. Diagnostics go through ``logging``, not here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class BenchConsole(Console):
    """A rich console that can outlive its reader.

    When the reader of the output goes away (``benchkit runs | head``), rich quietly exits the
    program, as a command should. Inside :meth:`surviving_broken_pipe` the console instead
    goes quiet (its stream now points at ``/dev/null``, so no later write fails either) and the
    program goes on: a training run must not die because its stdout was closed. ``broken`` says
    that it happened.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broken = False
        self._survive = 0

    @contextlib.contextmanager
    def surviving_broken_pipe(self) -> Iterator[None]:
        self._survive += 1
        try:
            yield
        finally:
            self._survive -= 1

    def on_broken_pipe(self) -> None:
        self.broken = True
        if not self._survive:
            super().on_broken_pipe()  # exits, like any command piped into `head`
            return
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.file.fileno())
        finally:
            os.close(devnull)


#: Results and tables (stdout).
console = BenchConsole()
#: Notices, progress and errors (stderr), so stdout stays clean for ``--json``.
err_console = BenchConsole(stderr=True)


def print_hint(message: str, command: str, to: Console | None = None) -> None:
    """Print ``message`` (rich markup; it may wrap), then ``command`` alone on the next line,
    indented: a command is never split across lines, whatever the terminal's width."""
    out = to if to is not None else err_console
    out.print(message, highlight=False)
    out.print(f"  {command}", highlight=False, markup=False, soft_wrap=True)


class RateColumn(ProgressColumn):
    """Items per second (seconds per item when slower than one a second)."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        text = f"{speed:,.1f} {self.unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{self.unit}"
        return Text(text, style="progress.data.speed")


def make_progress(
    verb: str = "",
    *,
    unit: str = "it",
    info: bool = False,
    to: Console | None = None,
    transient: bool = False,
) -> Progress:
    """A progress bar in BenchKit's one style: ``<verb> <description>``, bar, count, rate,
    elapsed, ETA.

    ``unit="bytes"`` counts bytes (sizes and transfer speed); any other unit counts items
    with that name in the rate. ``info`` adds a text column fed by the task field ``info``
    (``bar.update(task, info="loss=0.3")``). Output goes to ``to`` (default: stderr). Not
    started: use it as a context manager, or call ``start()``/``stop()``.
    """
    label = f"[bold]{verb}[/bold] {{task.description}}" if verb else "[bold]{task.description}"
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn(), RateColumn(unit)]
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=to or err_console, transient=transient)
