"""``benchkit run`` and ``benchkit sync``.

``run`` parses its flags into a :class:`~benchkit.training.runner.RunRequest` and hands it to
the training runner (a torchrun worker joins the run its launcher resolved). ``sync`` sends the
metric records and final run records that runs on this machine could not write.
"""

from __future__ import annotations

import argparse
import os

from benchkit.cli.common import JSON, STORE, console, err_console, print_json, print_table
from benchkit.cli.remote import add_remote_flags
from benchkit.errors import TrainError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        parents=[STORE],
        help="run a module's @bench.train function (one process or several through torchrun)",
        description="Run the @bench.train function of FILE. Datasets it declares that the store "
        "lacks are migrated first.",
    )
    p.add_argument("file", nargs="?", help="the training module, e.g. train.py")
    p.add_argument(
        "--fn", metavar="NAME", help="which @bench.train function, when there are several"
    )
    p.add_argument(
        "--processes",
        "-n",
        metavar="N",
        default="1",
        help="processes to start through torchrun: a number or 'auto' (one per GPU)",
    )
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="Accelerate mixed precision"
    )
    p.add_argument(
        "--config",
        "-c",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config value (typed by its default); repeatable",
    )
    p.add_argument("--name", help="the run's name (default: the function's)")
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="start a new run with this id (letters, digits, '-', '_', '.'; must be unused)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_ID",
        help="continue a run from its latest checkpoint (default: the latest run of this name); "
        "without FILE, the module the run recorded",
    )
    p.add_argument(
        "--version", type=int, metavar="N", help="run stored code version N instead of FILE"
    )
    p.add_argument(
        "--log-with",
        action="append",
        metavar="TRACKER",
        help="also log to this Accelerate tracker (e.g. tensorboard); repeatable",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop, instead of warning, when a declared dataset no longer matches the one in "
        "the store",
    )
    add_remote_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sync",
        parents=[JSON, STORE],
        help="send metrics and run records that runs on this machine could not write",
        description="Send what runs journaled locally but could not write to their store (it "
        "was down, or BENCHKIT_MODE=offline): metric records, and the final record of a run "
        "that ended meanwhile. Idempotent; safe on live and crashed runs. --store sends to "
        "another store than the one each run used.",
    )
    p.add_argument("run", nargs="?", help="run id or short id (default: every journaled run)")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to keep retrying a store that fails (default 60)",
    )
    p.set_defaults(func=cmd_sync)


def request_from(args: argparse.Namespace) -> object:
    """The :class:`RunRequest` the flags ask for."""
    from benchkit.training.runner import RunRequest, processes_from

    file, resume = args.file, args.resume
    if not file and resume and resume.endswith(".py"):  # `run --resume train.py`
        file, resume = resume, ""
    return RunRequest(
        file=file,
        fn=args.fn,
        name=args.name,
        config=list(args.config or []),
        resume=resume,
        version=args.version,
        store=args.store,
        cpu=bool(args.cpu),
        mixed_precision=args.mixed_precision,
        log_with=list(args.log_with or []),
        processes=processes_from(args.processes),
        run_id=args.run_id,
        strict=bool(args.strict),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from benchkit.training import runner

    if args.remote:
        from benchkit.cli.remote import cmd_run_remote

        return cmd_run_remote(args)
    spec_json = os.environ.get(runner.SPEC_ENV)
    if spec_json:  # a torchrun worker: the launcher resolved everything
        return runner.run_worker(spec_json)
    return runner.run(request_from(args))


def cmd_sync(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from benchkit.training import sync

    try:
        ids = [sync.match_run(args.run)] if args.run else sync.journaled_runs()
    except TrainError:
        done = sync.sent_already(args.run, args.store)
        if done is None:
            raise
        console.print(f"[dim]nothing to sync for run {done}: its metrics are in its store[/dim]")
        if args.json:
            print_json([])
        return 0
    if not ids:
        console.print("[dim]nothing to sync: every run's metrics are in their store[/dim]")
        if args.json:
            print_json([])
        return 0
    results = [sync.sync_run(rid, args.store, timeout=args.timeout) for rid in ids]
    if args.json:
        print_json([asdict(r) for r in results])
    else:
        print_table(
            "Synced",
            ["run", "store", "sent", "left", "final record"],
            [
                (r.run_id, r.store, r.sent, r.left, "written" if r.record_written else "")
                for r in results
            ],  # fmt: skip
            no_wrap=("run",),
        )
    for r in results:
        for e in r.errors:
            err_console.print(f"[red]{r.run_id}:[/red] {e}", highlight=False, soft_wrap=True)
    if any(r.left or r.errors for r in results):
        raise TrainError(
            "some records could not be sent (see above); run `benchkit sync` again once the "
            "store is reachable"
        )
    return 0
