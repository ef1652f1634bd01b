"""Code versions: ``migrate code`` and ``versions list|pull|delete|diff``.

The original's ``show-vs``, ``del-vs`` and ``pull-vs`` are aliases of ``versions list``,
``versions delete`` and ``versions pull``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchkit.cli.common import (
    JSON,
    STORE,
    YES,
    confirm,
    console,
    human_bytes,
    print_json,
    print_table,
)
from benchkit.errors import CodePackageError
from benchkit.settings import load_settings
from benchkit.store import Store, open_store


def _store(
    args: argparse.Namespace, project_dir: str | os.PathLike[str] | None = None
) -> tuple[Store, str]:
    settings = load_settings({"store": getattr(args, "store", None)}, project_dir=project_dir)
    return open_store(settings.store), settings.project


def _version_number(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a version is a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"versions are numbered from 1, got {n}")
    return n


# --- registration ---------------------------------------------------------------------------


def register_migrate(msub: argparse._SubParsersAction) -> None:
    """``migrate code``."""
    p = msub.add_parser(
        "code",
        parents=[STORE],
        help="package the code into a new, reproducible code version",
        description="Package FILE (default: train.py or TrainScript.py here), the project "
        "modules it imports, benchkit.toml and the requirements into a reproducible archive "
        "stored as code/<version>/ in the store. Unchanged code stores nothing new.",
    )
    p.add_argument(
        "file", nargs="?", help="the training module (default: train.py or TrainScript.py)"
    )
    p.add_argument(
        "--version",
        dest="code_version",  # `benchkit --version` owns args.version
        type=_version_number,
        metavar="N",
        help="version number (default: the next free one)",
    )
    p.add_argument("-m", "--message", default="", help="a note stored with the version")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing version, or store identical code again",
    )
    p.add_argument(
        "--max-size",
        default="50MB",
        metavar="SIZE",
        help="refuse packages bigger than this (default 50MB)",
    )
    p.set_defaults(func=cmd_migrate_code)


def _add_list_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_list)


def _add_pull_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("code_version", metavar="N", type=_version_number, help="the version to pull")
    p.add_argument("--dest", metavar="DIR", help="directory to extract into (default: ./code-v<N>)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_pull)


def _add_delete_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument(
        "code_version",
        metavar="N",
        type=_version_number,
        nargs="?" if optional else None,
        help="the version to delete",
    )
    p.set_defaults(func=cmd_delete)


def register(sub: argparse._SubParsersAction) -> None:
    """``versions ...`` and the original's ``show-vs``, ``del-vs``, ``pull-vs``."""
    listing, store, deleting = [JSON, STORE], [STORE], [YES, STORE]
    p = sub.add_parser(
        "versions", parents=listing, help="list, pull, delete and compare stored code versions"
    )
    vsub = p.add_subparsers(dest="versions_command", metavar="ACTION")
    _add_list_args(p)
    _add_list_args(
        vsub.add_parser("list", parents=listing, help="table of the stored code versions (default)")
    )
    _add_pull_args(
        vsub.add_parser(
            "pull", parents=store, help="extract a version into a directory, verifying checksums"
        )
    )
    _add_delete_args(vsub.add_parser("delete", parents=deleting, help="delete a version"))
    d = vsub.add_parser(
        "diff", parents=listing, help="files added, removed and changed between two versions"
    )
    d.add_argument("a", type=_version_number)
    d.add_argument("b", type=_version_number)
    d.set_defaults(func=cmd_diff)

    _add_list_args(
        sub.add_parser("show-vs", parents=listing, help="the original's name for `versions list`")
    )
    _add_delete_args(
        sub.add_parser(
            "del-vs", parents=deleting, help="the original's name for `versions delete`"
        ),
        optional=True,
    )
    _add_pull_args(
        sub.add_parser("pull-vs", parents=store, help="the original's name for `versions pull`")
    )


# --- commands --------------------------------------------------------------------------------


def cmd_migrate_code(args: argparse.Namespace) -> int:
    from benchkit.code.package import default_entry, migrate_code, parse_size

    module = Path(args.file).expanduser() if args.file else default_entry()
    limit = parse_size(args.max_size)
    store, project = _store(args, module.resolve().parent)
    with console.status("packaging code…"):
        result = migrate_code(
            module,
            store,
            version=args.code_version,
            message=args.message,
            force=args.force,
            max_size=limit,
            project=project,
        )
    m = result.manifest
    if not result.created:
        console.print(
            f"[yellow]unchanged:[/yellow] code version {result.version} already holds this code "
            f"(sha256 {m.archive_sha256[:12]}, created {m.created}); nothing was stored. "
            "Pass --force to store it again.",
            highlight=False,
        )
        return 0
    verb = "replaced" if result.replaced else "stored"
    console.print(
        f"[green]{verb} code version {result.version}[/green]: {len(m.files)} files, "
        f"{human_bytes(m.total_size)} ({human_bytes(m.archive_size)} packed), entry point "
        f"{m.entry_point}, sha256 {m.archive_sha256[:12]} in store {store.url}",
        highlight=False,
    )
    if m.unresolved_imports:
        console.print(
            f"[yellow]note:[/yellow] no installed distribution provides {', '.join(m.unresolved_imports)}; "
            "add a requirements.txt so the remote machine knows what to install",
            highlight=False,
        )
    console.print(
        f"run it anywhere with: python -m benchkit run --version {result.version}", highlight=False
    )
    return 0


def _created(text: str | None) -> str:
    return (text or "").replace("T", " ").replace("+00:00", " UTC")


def cmd_list(args: argparse.Namespace) -> int:
    from benchkit.code.package import list_versions

    store, _ = _store(args)
    versions = list_versions(store)
    if args.json:
        print_json([m.to_dict() for m in versions])
        return 0
    print_table(
        f"Code versions in {store.url}",
        ["version", "created", "files", "size", "message", "entry point"],
        [
            (
                m.version,
                _created(m.created),
                len(m.files),
                human_bytes(m.archive_size),
                m.message,
                m.entry_point,
            )
            for m in versions
        ],
    )
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from benchkit.code.package import checkout

    store, _ = _store(args)
    version = args.code_version
    dest = Path(args.dest or f"code-v{version}").expanduser().resolve()
    manifest = checkout(store, version, dest, force=args.force)
    console.print(
        f"[green]pulled code version {version}[/green] ({len(manifest.files)} files, checksums "
        f"verified) into {dest}; entry point {manifest.entry_point}",
        highlight=False,
    )
    if manifest.requirements:
        console.print(
            f"requirements ({manifest.requirements_source}): {' '.join(manifest.requirements)}",
            highlight=False,
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from benchkit.code.package import delete_version, get_manifest, list_versions

    store, _ = _store(args)
    version = args.code_version
    if version is None:  # the original's del-vs asked which one
        cmd_list(argparse.Namespace(json=False, store=args.store))
        if not list_versions(store):
            return 0
        if not os.isatty(0):
            raise CodePackageError(
                "say which version to delete: `benchkit versions delete N --yes`"
            )
        answer = console.input("version to delete: ").strip()
        version = _version_number(answer)
    try:
        m = get_manifest(store, version)
        what = f"code version {version} ({len(m.files)} files, created {_created(m.created)})"
    except CodePackageError:
        what = f"code version {version} (incomplete)"
    if not confirm(f"delete {what} from {store.url}?", args.yes):
        return 1
    delete_version(store, version)
    console.print(f"deleted {what}", highlight=False)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from benchkit.code.package import diff_versions

    store, _ = _store(args)
    d = diff_versions(store, args.a, args.b)
    if args.json:
        print_json(
            {
                "a": d.a,
                "b": d.b,
                "added": d.added,
                "removed": d.removed,
                "changed": d.changed,
                "requirements_added": d.requirements_added,
                "requirements_removed": d.requirements_removed,
                "entry_point": list(d.entry_point),
            }
        )
        return 0
    if d.same:
        console.print(f"code versions {d.a} and {d.b} hold the same files", highlight=False)
        return 0
    rows = (
        [("added", p) for p in d.added]
        + [("removed", p) for p in d.removed]
        + [("changed", p) for p in d.changed]
    )
    rows += [("requirement added", r) for r in d.requirements_added]
    rows += [("requirement removed", r) for r in d.requirements_removed]
    if d.entry_point[0] != d.entry_point[1]:
        rows.append(("entry point", f"{d.entry_point[0]} -> {d.entry_point[1]}"))
    print_table(f"Changes from version {d.a} to {d.b}", ["change", "file"], rows)
    return 0
