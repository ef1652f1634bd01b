"""``benchkit migrate data|code``: the parent command; each half lives with its own group."""

from __future__ import annotations

import argparse
import importlib

#: modules providing ``register_migrate(migrate_subparsers)``
MIGRATE_MODULES = [
    "benchkit.cli.data",
    "benchkit.cli.code",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="chunk and upload datasets, or package code versions")
    msub = p.add_subparsers(dest="migrate_command", metavar="WHAT")
    for name in MIGRATE_MODULES:
        importlib.import_module(name).register_migrate(msub)
