"""Shared pieces of the command line: the console, tables, JSON output, confirmation."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from benchkit.units import human_bytes  # noqa: F401  (re-exported for the command modules)

console = Console()
err_console = Console(stderr=True)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as a rich table; an empty listing says so instead of drawing an empty box."""
    rows = list(rows)
    if not rows:
        console.print(f"[dim]no {title.lower() if title else 'rows'}[/dim]")
        return
    table = Table(title=title, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def print_json(value: Any) -> None:
    """Machine-readable output for ``--json`` flags: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask y/N on a terminal; without one, refuse unless ``--yes`` was given."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        err_console.print(f"[red]{question}[/red] needs confirmation: pass --yes")
        return False
    answer = console.input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def add_store_flag(parser: Any) -> None:
    """The ``--store URL`` flag every store-using command takes."""
    parser.add_argument("--store", metavar="URL", help="store URL (default: `benchkit config`)")
