"""Runs and checkpoints: ``runs list|show|delete``, ``checkpoints list|get|delete`` and the
original's ``show-check``, ``get-check``, ``del-check``."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
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
    print_hint,
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
    s.add_argument("run", help="run id, short id or name (not a row number)")
    s.set_defaults(func=cmd_runs_delete)
    s = rsub.add_parser(
        "repair",
        parents=[STORE],
        help="rebuild a damaged run record from the run's checkpoints (the damaged one is kept)",
    )
    s.add_argument("run", help="run id or short id")
    s.set_defaults(func=cmd_runs_repair)
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


STATUS_STYLE = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "interrupted": "yellow",
    "lost": "magenta",
}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def _started(rec: Any) -> str:
    return rec.started.replace("T", " ")[:16]


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)


def _tracking(store: Any) -> Any:
    """The server's tracking API when the store is a Bench server (metrics live in its
    database there, not in metric part objects), else None."""
    catalog = store.catalog()
    return catalog if catalog is not None and hasattr(catalog, "tracked_runs") else None


def cmd_runs_list(args: Any) -> int:
    from benchkit.training import runs

    store = _store(args)
    tracking = _tracking(store)
    if tracking is not None:
        return _print_runs(args, _server_rows(tracking))
    records, warnings = runs.read_records(store)
    _warn(warnings)
    listed = []
    for rec in records:
        # an ended run carries its last values; a running (or killed) one is read from its metrics
        last = (
            rec.last
            if rec.status != runs.RUNNING and rec.last
            else runs.last_values(runs.read_events(store, rec.id))
        )
        listed.append((rec, runs.shown_status(store, rec), last, rec.duration()))
    return _print_runs(args, listed)


def _server_rows(tracking: Any) -> list[tuple[Any, str, dict[str, Any], float | None]]:
    """``(record, status, last values, duration)`` per run as the server shows them (the same
    status, ``lost`` included, and values as the dashboard), oldest first."""
    from benchkit.training import runs

    records = {r["id"]: r for r in tracking.runs()}
    out = []
    for view in sorted(tracking.tracked_runs()["runs"], key=lambda v: v["id"]):
        rec = runs.RunRecord.from_json(
            records.get(view["id"], {"id": view["id"], "name": view["name"]})
        )
        last = {k: s["last"] for k, s in view["summaries"].items()}
        out.append((rec, view["status"], last, view["duration"]))
    return out


def _print_runs(args: Any, listed: list[tuple[Any, str, dict[str, Any], float | None]]) -> int:
    from benchkit.training import runs

    rows, out = [], []
    for rec, status, last, duration in listed:
        out.append({**rec.to_json(), "short_id": runs.short_id(rec.id), "status": status,
                    "recorded_status": rec.status, "duration": duration, "last": last})  # fmt: skip
        best = ""
        if rec.monitor and isinstance(last.get(rec.monitor), (int, float)):
            best = f"{rec.monitor}={_fmt(last[rec.monitor])} "
        metrics = best + " ".join(
            f"{k}={_fmt(v)}" for k, v in list(last.items())[:4] if k != rec.monitor
        )
        rows.append([
            runs.short_id(rec.id), rec.name, _styled(status) + ("*" if rec.unsent else ""),
            _started(rec), _duration(duration), metrics,
        ])  # fmt: skip
    if getattr(args, "json", False):
        print_json(out)
        return 0
    print_table(
        "Runs",
        ["id", "name", "status", "started (UTC)", "duration", "last metrics"],
        rows,
        no_wrap=("id", "status", "started (UTC)", "duration"),
    )
    if any(rec.unsent for rec, *_ in listed):
        console.print("[dim]* some metrics are not in the store yet: `benchkit runs show ID`[/dim]")
    return 0


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line chart: ``values`` averaged into at most ``width`` buckets."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
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


@dataclass
class _Metric:
    """One metric of a run as ``runs show`` prints it."""

    key: str
    last: Any
    min: Any
    max: Any
    points: int
    steps: str
    #: finite values over the steps, for the sparkline
    values: list[float]


def _local_metrics(series: dict[str, list[tuple[int, Any]]]) -> list[_Metric]:
    out = []
    for k, pts in series.items():
        vals = [v for _, v in pts if isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v)]  # fmt: skip
        out.append(_Metric(k, pts[-1][1], min(vals) if vals else None, max(vals) if vals else None,
                           len(pts), f"{pts[0][0]}–{pts[-1][0]}", vals))  # fmt: skip
    return out


def _server_metrics(tracking: Any, run_id: str, summaries: dict, width: int) -> list[_Metric]:
    """From the server's summaries; the sparkline from its buckets (the last value of each)."""
    out = []
    for k, s in summaries.items():
        chart = tracking.chart(run_id, k, width)
        vals = [v for v in chart.get("last", []) if isinstance(v, (int, float))]
        out.append(_Metric(k, s["last"], s["min"], s["max"], s["count"],
                           f"{s['first_step']}–{s['max_step']}", vals))  # fmt: skip
    return out


def cmd_runs_show(args: Any) -> int:
    from rich.table import Table

    from benchkit.training import checkpoints as ckpt
    from benchkit.training import runs

    store = _store(args)
    rec = runs.load_record(store, runs.resolve_run(store, args.run))
    tracking = _tracking(store)
    width = max(10, min(80, console.width - 24))
    if tracking is not None:  # metrics and status as the server (and its dashboard) has them
        view = tracking.tracked_run(rec.id)
        status = view["status"]
        metrics = _server_metrics(tracking, rec.id, view["summaries"], width)
        messages = [line["text"] for line in tracking.run_log(rec.id)]
        points = lambda k: [  # noqa: E731
            {"step": p["step"], "value": p["value"]} for p in tracking.points(rec.id, k)
        ]
    else:
        events = runs.read_events(store, rec.id)
        series = runs.metric_series(events)
        status = runs.shown_status(store, rec)
        metrics = _local_metrics(series)
        messages = [e["message"] for e in events if "message" in e]
        points = lambda k: [{"step": s, "value": v} for s, v in series[k]]  # noqa: E731
    if args.json:
        # epochs count from 1 here too, as in `checkpoints list` and the names (epoch-0001)
        shown = [{**c, "epoch": ckpt.shown_epoch(c.get("epoch"))} for c in rec.checkpoints]
        print_json({**rec.to_json(), "checkpoints": shown, "short_id": runs.short_id(rec.id),
                    "status": status,
                    "recorded_status": rec.status, "duration": rec.duration(),
                    "metrics": {m.key: points(m.key) for m in metrics},
                    "messages": [{"message": m} for m in messages]})  # fmt: skip
        return 0
    console.print(f"[bold]{rec.id}[/bold] (short id {runs.short_id(rec.id)})  name [bold]{rec.name}[/bold]  "
                  f"status {_styled(status)}  started {rec.started}  duration {_duration(rec.duration())}  "
                  f"processes {rec.world_size}", highlight=False)  # fmt: skip
    if status == runs.LOST:
        last, _ = runs.last_sign_of_life(store, rec)
        when = (
            datetime.fromtimestamp(last, timezone.utc).isoformat(timespec="seconds")
            if last
            else "?"
        )
        print_hint(f"[magenta]lost:[/magenta] recorded as running, but its last heartbeat was at {when}; "
                   "the process was killed or its machine is gone. Resume it with:",
                   f"benchkit run --resume {runs.short_id(rec.id)}", to=console)  # fmt: skip
    if rec.resumed:
        console.print(f"resumed at {', '.join(rec.resumed)}")
    if rec.code_version is not None or rec.git:
        code = [f"code version {rec.code_version}"] if rec.code_version is not None else []
        if rec.git:
            code.append(
                f"git {rec.git.get('commit', '')[:12]}"
                + (" (dirty)" if rec.git.get("dirty") else "")
            )
        console.print(", ".join(code), highlight=False)  # fmt: skip
    if rec.monitor:
        console.print(f"criterion: {rec.monitor} ({rec.mode})"
                      + (f", best checkpoint {rec.best_checkpoint}" if rec.best_checkpoint else ""),
                      highlight=False)  # fmt: skip
    if rec.unsent:
        print_hint(f"[yellow]{rec.unsent.get('records')} metric record(s) are not in the store yet[/yellow] "
                   f"(kept in {rec.unsent.get('journal')} on {rec.unsent.get('host')}); there, run:",
                   str(rec.unsent.get("command")), to=console)  # fmt: skip
    if rec.rebuilt:
        console.print(f"[yellow]record rebuilt[/yellow] at {rec.rebuilt.get('time')} from "
                      f"{', '.join(rec.rebuilt.get('from') or []) or 'nothing'}; the damaged one is "
                      f"{rec.rebuilt.get('damaged')}", highlight=False)  # fmt: skip
    cfg = Table(title="config", header_style="bold")
    cfg.add_column("key")
    cfg.add_column("value")
    for k, v in sorted(rec.config.items()):
        cfg.add_row(k, _fmt(v))
    console.print(cfg)
    if metrics:
        t = Table(title="metrics", header_style="bold")
        for col in ("metric", "last", "min", "max", "points", "steps"):
            t.add_column(col)
        charts = []
        label = max(len(m.key) for m in metrics)
        width = max(10, min(80, console.width - label - 4))
        for m in metrics:
            t.add_row(m.key, _fmt(m.last), "" if m.min is None else _fmt(m.min),
                      "" if m.max is None else _fmt(m.max), str(m.points), m.steps)  # fmt: skip
            if len(m.values) > 1:
                charts.append(f"{m.key:>{label}}  [cyan]{sparkline(m.values, width)}[/cyan]")
        console.print(t)
        if charts:
            console.print("[bold]over steps[/bold] (low ▁ to high █, each metric on its own scale)")
            for line in charts:
                console.print(line, highlight=False)
    else:
        console.print("[dim]no metrics logged[/dim]")
    if rec.checkpoints:
        console.print("checkpoints: " + ", ".join(c["name"] for c in rec.checkpoints))
    for text in messages[-10:]:
        console.print(f"[dim]message:[/dim] {text}", highlight=False)
    if rec.traceback:
        console.print("[red]traceback:[/red]")
        console.print(rec.traceback, highlight=False, markup=False)
    return 0


def cmd_runs_delete(args: Any) -> int:
    from benchkit.training import runs

    store = _store(args)
    run_id = runs.resolve_run(store, args.run, rows=False)
    if not confirm(
        f"delete run {run_id}, its metrics and its checkpoints from {store.url}?", args.yes
    ):
        return 1
    n = runs.delete_run(store, run_id)
    console.print(f"deleted run {run_id} ({n} objects)")
    return 0


def cmd_runs_repair(args: Any) -> int:
    from benchkit.training import runs

    store = _store(args)
    run_id = runs.resolve_run(store, args.run, rows=False)
    try:
        runs.load_record(store, run_id)
    except runs.RecordDamaged:
        rec = runs.rebuild_record(store, run_id)
        assert rec.rebuilt is not None
        console.print(
            f"run {run_id}: record rebuilt from {', '.join(rec.rebuilt['from']) or 'nothing'}; "
            f"the damaged one is kept as {rec.rebuilt['damaged']}",
            highlight=False,
        )
        if not rec.rebuilt["config"]:
            err_console.print(
                "[yellow]its config could not be recovered (no checkpoint holds it)[/yellow]"
            )
        return 0
    console.print(f"the record of run {run_id} is readable: nothing to repair")
    return 0


# --- checkpoints -------------------------------------------------------------------------------


def _resolve_run_flag(store: Any, ref: str | None) -> str | None:
    if not ref:
        return None
    from benchkit.training import runs

    return runs.resolve_run(store, ref)


def cmd_ckpt_list(args: Any) -> int:
    from benchkit.training import checkpoints as ckpt
    from benchkit.training import runs

    store = _store(args)
    found = ckpt.list_checkpoints(store, _resolve_run_flag(store, args.run))
    if args.json:  # epochs count from 1, as in the table and the names (epoch-0001)
        print_json([{**c.__dict__, "epoch": c.shown_epoch, "ref": c.ref,
                     "short_ref": c.short_ref} for c in found])  # fmt: skip
        return 0
    rows = [[i, runs.short_id(c.run_id), c.name, c.shown_epoch, c.step, human_bytes(c.size),
             (c.time or "").replace("T", " ")[:16]] for i, c in enumerate(found, 1)]  # fmt: skip
    print_table("Checkpoints", ["#", "run", "name", "epoch", "step", "size", "saved (UTC)"], rows,
                no_wrap=("#", "run", "name", "saved (UTC)"))  # fmt: skip
    return 0


def _pick(args: Any, store: Any, verb: str, rows: bool = True):
    """The checkpoint named by NAME (and --run); asked for on a terminal when missing. Row
    numbers only where ``rows`` (never to delete: rows shift as checkpoints come and go)."""
    from benchkit.training import checkpoints as ckpt

    run_id = _resolve_run_flag(store, args.run)
    ref = args.name
    what = "NAME, RUN/NAME or a row number" if rows else "NAME or RUN/NAME"
    if not ref:
        if not sys.stdin.isatty():
            raise CheckpointError(
                f"which checkpoint to {verb}? give {what} (see `benchkit checkpoints list`)"
            )
        cmd_ckpt_list(
            argparse.Namespace(run=args.run, json=False, store=getattr(args, "store", None))
        )
        ref = console.input(f"checkpoint to {verb} ({what}): ").strip()
    return ckpt.resolve_checkpoint(store, ref, run_id, rows=rows)


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
    info = _pick(args, store, "delete", rows=False)
    if not confirm(f"delete checkpoint {info.ref} from {store.url}?", args.yes):
        return 1
    ckpt.delete_checkpoint(store, info)
    err_console.print(f"deleted checkpoint {info.ref}")
    return 0
