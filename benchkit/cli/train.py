"""Runs and checkpoints: ``runs list|show|delete``, ``checkpoints list|get|delete`` and the
original's ``show-check``, ``get-check``, ``del-check``."""

from __future__ import annotations

import argparse
import sys
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
from benchkit.cli.remote import register_run_actions
from benchkit.errors import CheckpointError


def register(sub: argparse._SubParsersAction) -> None:
    # runs
    p = sub.add_parser("runs", parents=[JSON, STORE], help="list, show and delete training runs")
    rsub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    p.set_defaults(func=cmd_runs_list)
    s = rsub.add_parser(
        "list",
        parents=[JSON, STORE],
        help="runs: id, name, status, start, duration, last metrics",
    )
    s.set_defaults(func=cmd_runs_list)
    s = rsub.add_parser(
        "show",
        parents=[JSON, STORE],
        help="a run's config, status, last values and a chart per metric (--json: every point)",
    )
    s.add_argument("run", help="run id, unique id prefix, row number or run name (its latest run)")
    s.set_defaults(func=cmd_runs_show)
    s = rsub.add_parser(
        "delete", parents=[YES, STORE], help="delete a run, its metrics and its checkpoints"
    )
    s.add_argument("run")
    s.set_defaults(func=cmd_runs_delete)
    register_run_actions(rsub)  # runs logs, runs stop (remote runs)

    # checkpoints
    p = sub.add_parser(
        "checkpoints", parents=[JSON, STORE], help="list, download and delete checkpoints"
    )
    csub = p.add_subparsers(dest="checkpoints_command", metavar="ACTION")
    _list_flags(p)
    p.set_defaults(func=cmd_ckpt_list)
    s = csub.add_parser("list", parents=[JSON, STORE], help="stored checkpoints (table; --json)")
    _list_flags(s)
    s.set_defaults(func=cmd_ckpt_list)
    s = csub.add_parser("get", parents=[STORE], help="download and unpack a checkpoint")
    _get_flags(s)
    s.set_defaults(func=cmd_ckpt_get)
    s = csub.add_parser("delete", parents=[YES, STORE], help="delete a checkpoint")
    _checkpoint_ref(s, optional=False)
    s.set_defaults(func=cmd_ckpt_delete)

    # the original's names
    s = sub.add_parser("show-check", parents=[JSON, STORE], help="alias of `checkpoints list`")
    _list_flags(s)
    s.set_defaults(func=cmd_ckpt_list)
    s = sub.add_parser(
        "get-check",
        parents=[STORE],
        help="alias of `checkpoints get` (asks for a row when no NAME)",
    )
    _get_flags(s, optional=True)
    s.set_defaults(func=cmd_ckpt_get)
    s = sub.add_parser(
        "del-check",
        parents=[YES, STORE],
        help="alias of `checkpoints delete` (asks for a row when no NAME)",
    )
    _checkpoint_ref(s, optional=True)
    s.set_defaults(func=cmd_ckpt_delete)


def _list_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", metavar="RUN", help="only this run's checkpoints")


def _checkpoint_ref(p: argparse.ArgumentParser, optional: bool) -> None:
    """The NAME positional and --run flag of `checkpoints get` and `checkpoints delete`."""
    p.add_argument(
        "name",
        nargs="?" if optional else None,
        metavar="NAME",
        help="RUN_ID/NAME, a name unique in the store, or a row number of `checkpoints list`",
    )
    p.add_argument("--run", metavar="RUN", help="look the name up in this run")


def _get_flags(p: argparse.ArgumentParser, optional: bool = False) -> None:
    _checkpoint_ref(p, optional)
    p.add_argument(
        "--dest", metavar="DIR", help="where to unpack (default: ./checkpoints/RUN_ID/NAME)"
    )


def _store(args: Any):
    from benchkit.settings import load_settings
    from benchkit.store import open_store

    return open_store(load_settings({"store": getattr(args, "store", None)}).store)


# --- runs --------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


STATUS_STYLE = {"running": "cyan", "finished": "green", "failed": "red", "interrupted": "yellow"}


def cmd_runs_list(args: Any) -> int:
    from benchkit.training import runs

    store = _store(args)
    records = runs.list_records(store)
    rows, out = [], []
    for i, rec in enumerate(records, 1):
        # an ended run carries its last values; a running (or killed) one is read from its metrics
        last = (
            rec.last
            if rec.status != runs.RUNNING and rec.last
            else runs.last_values(runs.read_events(store, rec.id))
        )
        out.append({**rec.to_json(), "duration": rec.duration(), "last": last})
        style = STATUS_STYLE.get(rec.status, "")
        rows.append([
            i, rec.id, rec.name, f"[{style}]{rec.status}[/{style}]" if style else rec.status,
            rec.started.replace("T", " ").split("+")[0], _duration(rec.duration()),
            " ".join(f"{k}={_fmt(v)}" for k, v in list(last.items())[:4]),
        ])  # fmt: skip
    if getattr(args, "json", False):
        print_json(out)
        return 0
    print_table(
        "Runs", ["#", "id", "name", "status", "started (UTC)", "duration", "last metrics"], rows
    )
    return 0


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line chart: ``values`` averaged into at most ``width`` buckets."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    if not nums:
        return ""
    if len(nums) > width:
        step = len(nums) / width
        nums = [
            sum(chunk) / len(chunk)
            for chunk in (
                nums[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]
                for i in range(width)
            )
        ]
    lo, hi = min(nums), max(nums)
    if hi == lo:
        return SPARK[3] * len(nums)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / (hi - lo) * len(SPARK)))] for v in nums)


def cmd_runs_show(args: Any) -> int:
    from rich.table import Table

    from benchkit.training import runs

    store = _store(args)
    rec = runs.load_record(store, runs.resolve_run(store, args.run))
    events = runs.read_events(store, rec.id)
    series = runs.metric_series(events)
    if args.json:
        print_json({**rec.to_json(), "duration": rec.duration(),
                    "metrics": {k: [{"step": s, "value": v} for s, v in pts] for k, pts in series.items()},
                    "messages": [e for e in events if "message" in e]})  # fmt: skip
        return 0
    style = STATUS_STYLE.get(rec.status, "")
    console.print(f"[bold]{rec.id}[/bold]  name [bold]{rec.name}[/bold]  status [{style}]{rec.status}[/{style}]  "
                  f"started {rec.started}  duration {_duration(rec.duration())}  processes {rec.world_size}")  # fmt: skip
    if rec.resumed:
        console.print(f"resumed at {', '.join(rec.resumed)}")
    cfg = Table(title="config", header_style="bold")
    cfg.add_column("key")
    cfg.add_column("value")
    for k, v in sorted(rec.config.items()):
        cfg.add_row(k, _fmt(v))
    console.print(cfg)
    if series:
        t = Table(title="metrics", header_style="bold")
        for col in ("metric", "last", "min", "max", "points", "steps"):
            t.add_column(col)
        charts = []
        label = max(len(k) for k in series)
        width = max(10, min(80, console.width - label - 4))
        for k, pts in series.items():
            vals = [v for _, v in pts if isinstance(v, (int, float)) and not isinstance(v, bool)]
            t.add_row(k, _fmt(pts[-1][1]), _fmt(min(vals)) if vals else "", _fmt(max(vals)) if vals else "",
                      str(len(pts)), f"{pts[0][0]}–{pts[-1][0]}")  # fmt: skip
            if len(vals) > 1:
                charts.append(f"{k:>{label}}  [cyan]{sparkline(vals, width)}[/cyan]")
        console.print(t)
        if charts:
            console.print("[bold]over steps[/bold] (low ▁ to high █, each metric on its own scale)")
            for line in charts:
                console.print(line, highlight=False)
    else:
        console.print("[dim]no metrics logged[/dim]")
    if rec.checkpoints:
        console.print("checkpoints: " + ", ".join(c["name"] for c in rec.checkpoints))
    messages = [e for e in events if "message" in e]
    for e in messages[-10:]:
        console.print(f"[dim]message:[/dim] {e['message']}", highlight=False)
    if rec.traceback:
        console.print("[red]traceback:[/red]")
        console.print(rec.traceback, highlight=False, markup=False)
    return 0


def cmd_runs_delete(args: Any) -> int:
    from benchkit.training import runs

    store = _store(args)
    run_id = runs.resolve_run(store, args.run)
    if not confirm(
        f"delete run {run_id}, its metrics and its checkpoints from {store.url}?", args.yes
    ):
        return 1
    n = runs.delete_run(store, run_id)
    console.print(f"deleted run {run_id} ({n} objects)")
    return 0


# --- checkpoints -------------------------------------------------------------------------------


def _resolve_run_flag(store: Any, ref: str | None) -> str | None:
    if not ref:
        return None
    from benchkit.training import runs

    return runs.resolve_run(store, ref)


def cmd_ckpt_list(args: Any) -> int:
    from benchkit.training import checkpoints as ckpt

    store = _store(args)
    found = ckpt.list_checkpoints(store, _resolve_run_flag(store, args.run))
    if args.json:
        print_json([{**c.__dict__, "ref": c.ref} for c in found])
        return 0
    rows = [[i, c.run_id, c.name, "" if c.epoch is None else c.epoch + 1, c.step, human_bytes(c.size),
             (c.time or "").replace("T", " ").split("+")[0]] for i, c in enumerate(found, 1)]  # fmt: skip
    print_table("Checkpoints", ["#", "run", "name", "epoch", "step", "size", "saved (UTC)"], rows)
    return 0


def _pick(args: Any, store: Any, verb: str):
    from benchkit.training import checkpoints as ckpt

    run_id = _resolve_run_flag(store, args.run)
    ref = args.name
    if not ref:
        if not sys.stdin.isatty():
            raise CheckpointError(
                f"which checkpoint to {verb}? give NAME or a row number of `checkpoints list`"
            )
        cmd_ckpt_list(
            argparse.Namespace(run=args.run, json=False, store=getattr(args, "store", None))
        )
        ref = console.input(f"row number of the checkpoint to {verb}: ").strip()
    return ckpt.resolve_checkpoint(store, ref, run_id)


def cmd_ckpt_get(args: Any) -> int:
    from benchkit.training import checkpoints as ckpt

    store = _store(args)
    info = _pick(args, store, "get")
    dest = Path(args.dest) if args.dest else Path("checkpoints") / info.run_id / info.name
    ckpt.fetch_checkpoint(store, info.run_id, info.name, dest)
    console.print(f"checkpoint {info.ref} unpacked into {dest} ({human_bytes(info.size)})")
    return 0


def cmd_ckpt_delete(args: Any) -> int:
    from benchkit.training import checkpoints as ckpt

    store = _store(args)
    info = _pick(args, store, "delete")
    if not confirm(f"delete checkpoint {info.ref} from {store.url}?", args.yes):
        return 1
    ckpt.delete_checkpoint(store, info)
    err_console.print(f"deleted checkpoint {info.ref}")
    return 0
