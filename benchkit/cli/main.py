"""``benchkit`` / ``bench-kit`` / ``python -m benchkit``: the command line.

Each command group lives in its own module with a ``register(subparsers)`` function; this
module only assembles them and turns BenchKit errors into short messages and exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from benchkit._version import __version__
from benchkit.cli.common import console, err_console
from benchkit.errors import BenchKitError

#: Command modules, in the order their commands appear in ``--help``.
COMMAND_MODULES = [
    "benchkit.cli.project",
    "benchkit.cli.migrate",
    "benchkit.cli.run",
    "benchkit.cli.train",
    "benchkit.cli.code",
    "benchkit.cli.data",
    "benchkit.cli.remote",
    "benchkit.cli.server",
]

LOGO = r"""[bold cyan]
  ___              _    _  ___ _
 | _ ) ___ _ _  __| |_ | |/ (_) |_
 | _ \/ -_) ' \/ _| ' \| ' <| |  _|
 |___/\___|_||_\__|_||_|_|\_\_|\__|[/bold cyan]"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchkit",
        description="BenchKit: chunked streaming datasets, Accelerate training wiring, "
        "checkpoints and versioned code for PyTorch projects.",
    )
    # dest differs from "version" so that subcommand options such as `run --version N` do not
    # overwrite it in the shared namespace
    parser.add_argument(
        "--version", dest="show_version", action="store_true", help="print the version and exit"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.show_version:
        if sys.stdout.isatty():
            console.print(LOGO)
        console.print(f"benchkit {__version__}", highlight=False)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except BenchKitError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        if args.verbose or os.environ.get("BENCHKIT_TRACEBACK"):
            err_console.print_exception()
        return 1
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
