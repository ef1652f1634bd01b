"""Datasets: ``migrate data`` and ``datasets list|info|delete|verify``.

The original's ``--zip``, ``--tdl`` and ``--up`` are aliases of ``--chunk``, ``--test`` and
``--upload``; its ``show-ds`` and ``del-ds`` are aliases of ``datasets list`` and
``datasets delete``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from benchkit.cli.common import (
    JSON,
    STORE,
    YES,
    confirm,
    console,
    err_console,
    human_bytes,
    print_json,
    print_table,
)
from benchkit.errors import BenchKitError, DataError, DatasetNotFound
from benchkit.settings import load_settings
from benchkit.store import Store, open_store

DEFAULT_FILES = ("train.py", "Datasets/ProjectDatasets.py")


def _store(args: argparse.Namespace, project_dir: str | os.PathLike[str] | None = None) -> Store:
    settings = load_settings({"store": getattr(args, "store", None)}, project_dir=project_dir)
    return open_store(settings.store)


# --- registration ----------------------------------------------------------------------------


def register_migrate(msub: argparse._SubParsersAction) -> None:
    """``migrate data``."""
    p = msub.add_parser(
        "data",
        parents=[STORE],
        help="chunk, test and upload the datasets a module declares",
        usage="benchkit migrate data [FILE] [NAME ...] [--chunk|--zip] [--test|--tdl] "
        "[--upload|--up] [--verify] [--clean] [--workers N] [--store URL] [--yes]",
        description="Chunk the datasets FILE declares (default: train.py here, or "
        "Datasets/ProjectDatasets.py) into <project>/.benchkit/staging, stream them back to "
        "test them, and upload them to the store. With no step flag all three run; NAME limits "
        "it to some datasets.",
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="[FILE] [NAME ...]",
        help="the module declaring the datasets (a .py file), then dataset names",
    )
    p.add_argument(
        "--chunk", "--zip", dest="chunk", action="store_true", help="chunk into the staging area"
    )
    p.add_argument(
        "--test",
        "--tdl",
        dest="test",
        action="store_true",
        help="stream the staged chunks back through the transform with 2 DataLoader workers",
    )
    p.add_argument(
        "--upload",
        "--up",
        dest="upload",
        action="store_true",
        help="upload staged chunks to the store",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="when uploading, also compare the checksums of the chunks already in the store "
        "(a full read of them) and send damaged ones again",
    )
    p.add_argument(
        "--clean",
        action="store_true",
        help="after the upload, verify every chunk in the store and drop the local staging copy",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="chunking processes (default: all cores)"
    )
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="replace changed datasets in the store without asking",
    )
    p.set_defaults(func=cmd_migrate_data)


def _add_list(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    sub.add_parser(name, parents=[JSON, STORE], help=help).set_defaults(func=cmd_list)


def _add_delete(sub: argparse._SubParsersAction, name: str, help: str) -> None:
    p = sub.add_parser(name, parents=[YES, STORE], help=help)
    p.add_argument("name", help="dataset name")
    p.set_defaults(func=cmd_delete)


def register(sub: argparse._SubParsersAction) -> None:
    """``datasets list|info|delete`` and the original's ``show-ds`` and ``del-ds``."""
    p = sub.add_parser(
        "datasets", parents=[JSON, STORE], help="list, inspect and delete datasets in the store"
    )
    p.set_defaults(func=cmd_list)
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    _add_list(dsub, "list", "table of the datasets in the store (default)")
    info = dsub.add_parser(
        "info", parents=[JSON, STORE], help="schema and chunk sizes of one dataset"
    )
    info.add_argument("name", help="dataset name")
    info.set_defaults(func=cmd_info)
    _add_delete(dsub, "delete", "delete a dataset from the store")
    verify = dsub.add_parser(
        "verify",
        parents=[JSON, STORE],
        help="check every chunk in the store against its checksum; --repair fixes bad ones",
        description="Read every chunk of dataset NAME in the store and compare its size and "
        "sha256 with index.json. With --repair, re-upload bad or missing chunks from this "
        "project's staging area (.benchkit/staging) when the staged copy is intact, and say "
        "how to rebuild the others. Exits 1 while bad chunks remain.",
    )
    verify.add_argument("name", help="dataset name")
    verify.add_argument(
        "--repair", action="store_true", help="re-upload bad chunks from the staging area"
    )
    verify.set_defaults(func=cmd_verify)
    _add_list(sub, "show-ds", "the original's name for `datasets list`")
    _add_delete(sub, "del-ds", "the original's name for `datasets delete`")


# --- migrate data ----------------------------------------------------------------------------


def _split_targets(targets: list[str]) -> tuple[Path, list[str]]:
    if targets and (targets[0].endswith(".py") or os.path.isfile(targets[0])):
        return Path(targets[0]).expanduser(), targets[1:]
    from benchkit.settings import find_project_file

    project_file = find_project_file()
    dirs = [Path.cwd()] + ([project_file.parent] if project_file else [])
    for directory in dirs:
        for candidate in DEFAULT_FILES:
            if (directory / candidate).is_file():
                return directory / candidate, targets
    raise BenchKitError(
        f"no dataset module given and none of {', '.join(DEFAULT_FILES)} in "
        f"{' or '.join(str(d) for d in dirs)}; run `python -m benchkit migrate data path/to/train.py`"
    )


def cmd_migrate_data(args: argparse.Namespace) -> int:
    from benchkit.data.declare import datasets_in_module, project_root_for
    from benchkit.data.migrate import (
        check_dataset,
        chunk,
        migration_lock,
        probe_store,
        staging_store,
    )
    from benchkit.registry import import_user_module

    module_file, names = _split_targets(list(args.targets))
    module = import_user_module(module_file)
    found = datasets_in_module(module)
    if not found:
        raise DataError(
            f'{module_file} declares no datasets: decorate a generator with @bench.dataset("name") '
            "or return (ProcessorDataset, IterableChunk, name, args, kwargs) tuples from main()"
        )
    unknown = [n for n in names if n not in found]
    if unknown:
        raise DatasetNotFound(
            f"{module_file} declares no dataset named {', '.join(map(repr, unknown))}; "
            f"it declares: {', '.join(found)}"
        )
    selected = [found[n] for n in (names or list(found))]
    steps_given = args.chunk or args.test or args.upload
    do_chunk, do_test, do_upload = (
        (args.chunk, args.test, args.upload) if steps_given else (True, True, True)
    )
    if (args.clean or args.verify) and not do_upload:
        flag = "--clean" if args.clean else "--verify"
        raise DataError(f"{flag} belongs to the upload step: add --upload (or give no step flag)")
    project_root = project_root_for(module_file)
    store = _store(args, project_root) if do_upload else None
    if store is not None:
        probe_store(store)  # an unreachable or read-only store fails now, not after chunking
    staging = staging_store(project_root)
    interactive = console.is_terminal
    skipped: list[str] = []
    for decl in selected:
        with migration_lock(staging.root, decl.name):
            if do_chunk:
                stats = chunk(
                    decl, workers=args.workers, progress=interactive, project_root=project_root
                )
                idx = stats.index
                console.print(
                    f"[green]chunked[/green] '{decl.name}': {idx.num_samples} samples in "
                    f"{len(idx.chunks)} chunks, {human_bytes(idx.total_bytes)} "
                    f"({stats.samples_per_s:,.0f} samples/s, {stats.mb_per_s:,.1f} MB/s, "
                    f"{stats.workers} workers) in {staging.url}",
                    highlight=False,
                )
            if do_test:
                _print_test(check_dataset(decl, project_root=project_root))
            if do_upload:
                assert store is not None
                if not _confirm_replace(decl.name, staging, store, args.yes):
                    skipped.append(decl.name)
                    continue
                _upload(decl.name, staging, store, args, project_root, interactive)
    if skipped:
        err_console.print(
            f"[bold red]error:[/bold red] not uploaded: {', '.join(map(repr, skipped))}: the "
            f"store holds a different version and nobody confirmed replacing it (no terminal "
            "to ask on, or the answer was no). Pass --yes to replace it",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


def _print_test(report: Any) -> None:
    streamed = (
        ""
        if report.streamed is None
        else f", streamed {report.streamed} through 2 DataLoader workers"
    )
    console.print(
        f"[green]tested[/green] '{report.name}': {report.samples} samples in {report.chunks} chunks "
        f"(checksums and schema OK{streamed}{', transform OK' if report.transform else ''}; "
        f"{report.samples_per_s:,.0f} samples/s)",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _upload(
    name: str,
    staging: Store,
    store: Store,
    args: argparse.Namespace,
    project_root: Path,
    interactive: bool,
) -> None:
    from benchkit.data.migrate import clean_staging, upload_dataset

    up = upload_dataset(name, staging, store, progress=interactive, verify=args.verify)
    if up.uploaded == 0 and not up.index_written:
        what = "unchanged, nothing uploaded"
    else:
        what = f"{up.uploaded} chunks ({human_bytes(up.bytes_uploaded)}) uploaded"
    checked = "checksums verified" if up.verified else "sizes checked"
    console.print(
        f"[green]uploaded[/green] '{name}' to {store.url}: {what}, {up.skipped} already there "
        f"({checked})"
        + (f", {up.removed} stale removed" if up.removed else "")
        + (f", {up.swept} leftovers of interrupted uploads removed" if up.swept else ""),
        highlight=False,
    )
    for file, why in up.damaged:
        console.print(
            f"[yellow]repaired[/yellow] chunk {file}: the store's copy was {why}; sent again",
            highlight=False,
        )
    if args.clean:
        report = _verify_with_bar(name, store, interactive)
        if not report.ok:
            raise DataError(
                f"dataset '{name}' in store {store.url} has {len(report.problems)} bad chunks "
                f"right after the upload; the staging copy was kept. Run `python -m benchkit "
                f"datasets verify {name} --repair`"
            )
        folder = clean_staging(name, project_root)
        console.print(
            f"[green]cleaned[/green] '{name}': every chunk in the store verified, staging copy "
            f"{folder} removed",
            highlight=False,
        )


def _confirm_replace(name: str, staging: Store, store: Store, yes: bool) -> bool:
    """Ask before replacing a dataset in the store with different content."""
    from benchkit.data.index import load_index

    try:
        remote = load_index(store, name)
    except DataError:
        return True
    local = load_index(staging, name)
    if [c.sha256 for c in remote.chunks] == [c.sha256 for c in local.chunks]:
        return True
    return confirm(
        f"dataset '{name}' in store {store.url} differs ({remote.num_samples} samples, created "
        f"{remote.created}; new: {local.num_samples} samples). Replace it?",
        yes,
    )


# --- datasets verify ---------------------------------------------------------------------------


def _verify_with_bar(name: str, store: Store, interactive: bool, repair_from: Any = None) -> Any:
    from benchkit.data.index import load_index
    from benchkit.data.migrate import _progress
    from benchkit.data.verify import repair_dataset, verify_dataset

    index = load_index(store, name)
    bar = _progress("verifying", name, index.total_bytes, interactive)
    advance = None if bar is None else (lambda n: bar.update(bar.task_ids[0], advance=n))
    try:
        report = verify_dataset(name, store, advance=advance, index=index)
    finally:
        if bar is not None:
            bar.stop()
    if repair_from is not None and report.problems:
        report = repair_dataset(name, store, repair_from, report=report)
    return report


def cmd_verify(args: argparse.Namespace) -> int:
    from benchkit.data.migrate import staging_store
    from benchkit.data.verify import rebuild_command
    from benchkit.settings import find_project_file

    store = _store(args)
    project = find_project_file()
    staging = staging_store(project.parent if project else Path.cwd())
    report = _verify_with_bar(
        args.name, store, console.is_terminal and not args.json, staging if args.repair else None
    )
    rebuild = rebuild_command(args.name, report.declared_in)
    if args.json:
        print_json({**report.to_dict(), "rebuild": None if report.ok else rebuild})
        return 0 if report.ok else 1
    if report.problems:
        print_table(
            f"Bad chunks of dataset '{args.name}' in {store.url}",
            ["chunk", "problem", "detail"] + (["repair"] if args.repair else []),
            [
                (p.file, p.problem, p.detail)
                + (("re-uploaded" if p.repaired else p.note),) * args.repair
                for p in report.problems
            ],
        )
    if args.repair and report.problems:
        console.print(f"repairs come from the staging area {staging.url}", highlight=False)
    if report.stray:
        console.print(
            f"[yellow]note:[/yellow] {len(report.stray)} objects under the dataset's prefix are "
            "not in its index (left by an interrupted replace; the next upload removes them)",
            highlight=False,
        )
    if report.swept:
        console.print(f"removed {report.swept} leftovers of interrupted uploads", highlight=False)
    summary = f"{report.chunks} chunks, {human_bytes(report.bytes)} in {store.url}"
    if not report.problems:
        console.print(
            f"[green]verified[/green] '{args.name}': {summary}, every checksum matches",
            highlight=False,
        )
        return 0
    repaired = len(report.problems) - len(report.unrepaired)
    if report.ok:
        console.print(
            f"[green]repaired[/green] '{args.name}': {repaired} chunks re-uploaded from "
            f"{staging.url} and verified ({summary})",
            highlight=False,
        )
        return 0
    bad = len(report.unrepaired)
    hint = (
        f"repair them from the staging copy with `python -m benchkit datasets verify {args.name} "
        "--repair`, or rebuild"
        if not args.repair
        else f"{repaired} repaired, the others have no intact copy in {staging.url}. Rebuild"
    )
    err_console.print(
        f"[bold red]error:[/bold red] dataset '{args.name}': {bad} of {report.chunks} chunks "
        f"are bad in {store.url}; {hint} the dataset from its source, in the project: `{rebuild}`",
        highlight=False,
        soft_wrap=True,
    )
    return 1


# --- datasets list / info / delete -----------------------------------------------------------


def _dataset_names(store: Store) -> list[str]:
    return store.list_dirs("datasets/")


def cmd_list(args: argparse.Namespace) -> int:
    from benchkit.data.index import load_index

    store = _store(args)
    catalog = store.catalog()
    rows: list[dict[str, Any]] = catalog.datasets() if catalog is not None else []
    for name in _dataset_names(store) if catalog is None else []:
        try:
            idx = load_index(store, name)
        except DataError:
            rows.append(
                {
                    "name": name,
                    "samples": None,
                    "chunks": None,
                    "bytes": None,
                    "created": None,
                    "complete": False,
                }
            )
            continue
        rows.append(
            {
                "name": name,
                "samples": idx.num_samples,
                "chunks": len(idx.chunks),
                "bytes": idx.total_bytes,
                "created": idx.created,
                "complete": True,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        f"Datasets in {store.url}",
        ["name", "samples", "chunks", "size", "created"],
        [
            (r["name"], r["samples"], r["chunks"], human_bytes(r["bytes"]), r["created"])
            if r["complete"]
            else (r["name"], "-", "-", "-", "incomplete (no index.json)")
            for r in rows
        ],
    )
    return 0


def _schema_lines(schema: dict[str, Any], label: str = "sample", depth: int = 0) -> list[str]:
    kind = schema.get("kind", "?")
    detail = ""
    if "dtype" in schema:
        detail = f" {schema['dtype']}" + (f", {schema['ndim']}-d" if "ndim" in schema else "")
    lines = [f"{'  ' * depth}{label}: {kind}{detail}"]
    if kind == "tuple":
        for k, item in enumerate(schema.get("items", [])):
            lines += _schema_lines(item, f"[{k}]", depth + 1)
    elif kind == "dict":
        for k, item in schema.get("fields", {}).items():
            lines += _schema_lines(item, repr(k), depth + 1)
    elif kind == "list" and "item" in schema:
        lines += _schema_lines(schema["item"], "items", depth + 1)
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    from benchkit.data.index import load_index

    store = _store(args)
    idx = load_index(store, args.name)
    if args.json:
        print_json({**idx.to_dict(), "store": store.url, "total_bytes": idx.total_bytes})
        return 0
    sizes = [c.bytes for c in idx.chunks]
    console.print(f"[bold]dataset '{idx.name}'[/bold] in {store.url}", highlight=False)
    console.print(
        f"{idx.num_samples} samples in {len(idx.chunks)} chunks, {human_bytes(idx.total_bytes)}; "
        f"target chunk size {human_bytes(idx.chunk_bytes)}; format version {idx.format_version}; "
        f"created {idx.created}",
        highlight=False,
    )
    if sizes:
        console.print(
            f"chunk sizes: min {human_bytes(min(sizes))}, median {human_bytes(statistics.median(sizes))}, "
            f"max {human_bytes(max(sizes))}",
            highlight=False,
        )
    console.print("schema:", highlight=False)
    for line in _schema_lines(idx.schema):
        console.print("  " + line, highlight=False, markup=False)
    print_table(
        "Chunks",
        ["file", "samples", "size", "sha256"],
        [(c.file, c.samples, human_bytes(c.bytes), c.sha256[:16]) for c in idx.chunks],
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from benchkit.data.index import INDEX_FILE, dataset_prefix

    store = _store(args)
    prefix = dataset_prefix(args.name)
    keys = store.list(prefix)
    if not keys:
        raise DatasetNotFound(
            f"dataset '{args.name}' is not in store {store.url}; `python -m benchkit datasets list` shows what is"
        )
    if not confirm(
        f"delete dataset '{args.name}' ({len(keys)} objects) from store {store.url}?", args.yes
    ):
        console.print("nothing deleted")
        return 1
    # the index first: from then on readers see no dataset, never a half-deleted one
    store.delete(prefix + INDEX_FILE)
    store.delete_prefix(prefix)
    console.print(
        f"[green]deleted[/green] dataset '{args.name}' ({len(keys)} objects) from {store.url}",
        highlight=False,
    )
    return 0
