"""Shared pieces of the command line: the consoles, tables, JSON output, confirmation, and
the parent parsers for the flags many commands take.

Parent parsers (``sub.add_parser("list", parents=[STORE, JSON])``) give every command the same
spelling and help for ``--store``, ``--json`` and ``--yes``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from benchkit.console import console, err_console, print_hint  # noqa: F401  (re-exported)
from benchkit.units import human_bytes  # noqa: F401  (re-exported for the command modules)


def _parent(*flags: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*flags, **kwargs)
    return parser


#: ``--store URL``: every command that uses a store.
STORE = _parent("--store", metavar="URL", help="store URL (default: `benchkit config`)")
#: ``--json``: machine-readable output on stdout.
JSON = _parent("--json", action="store_true", help="print JSON")
#: ``--yes`` / ``-y``: skip the confirmation of a destructive command.
YES = _parent("-y", "--yes", action="store_true", help="do not ask for confirmation")


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    no_wrap: Sequence[str] = (),
) -> None:
    """Print rows as a rich table; an empty listing says so instead of drawing an empty box.
    Columns named in ``no_wrap`` (ids, dates) are never folded; the others fold to fit."""
    rows = list(rows)
    if not rows:
        console.print(f"[dim]no {title.lower() if title else 'rows'}[/dim]")
        return
    table = Table(title=title, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col in no_wrap)
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
