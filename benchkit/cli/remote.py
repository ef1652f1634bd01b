"""Remote-execution commands. The hidden ones run inside jobs: ``job-shim`` (the supervisor),
``job-run`` (prepare the code version and train) and ``job-ray-launch`` (the multi-node driver
on Ray)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "job-shim",
        description="Supervise COMMAND as job ID: its output to the store in log segments, a "
        "heartbeat, exit.json at the end; SIGINT/SIGTERM are passed on as SIGINT, then SIGKILL "
        "after the grace period. Runs inside every remote job.",
    )
    p.add_argument("--job", required=True, metavar="ID", help="the job id")
    p.add_argument("--store", metavar="URL", help="the store to write to (default: configured)")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="seconds between SIGINT and SIGKILL when the job is stopped")  # fmt: skip
    p.add_argument("--heartbeat", type=float, default=15.0, metavar="S", help="heartbeat period")
    p.add_argument("--flush", type=float, default=5.0, metavar="S",
                   help="write buffered output at least this often")  # fmt: skip
    p.add_argument("--cwd", type=Path, metavar="DIR", help="run COMMAND here (made if missing)")
    p.add_argument("--scratch", action="store_true",
                   help="run COMMAND in a new temporary directory, deleted at the end")  # fmt: skip
    p.add_argument("--remove", type=Path, action="append", default=[], metavar="DIR",
                   help="delete DIR once COMMAND has ended; repeatable")  # fmt: skip
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_job_shim)

    p = sub.add_parser(
        "job-run",
        description="Inside a job: check out the job's code version (checksums verified), build "
        "or reuse its environment and start training. Multi-node jobs pass their rendezvous.",
    )
    p.add_argument("--spec-json", required=True, metavar="JSON", help="the job spec")
    p.add_argument("--env-root", type=Path, metavar="DIR", help="where environments are cached")
    p.add_argument("--workdir", type=Path, metavar="DIR", help="default: the current directory")
    p.add_argument("--nnodes", type=int)
    p.add_argument("--node-rank", type=int)
    p.add_argument("--master-addr")
    p.add_argument("--master-port", type=int)
    p.add_argument("--local-addr")
    p.set_defaults(func=cmd_job_run)

    p = sub.add_parser(
        "job-ray-launch",
        description="Inside a Ray job: run the job on --nodes M Ray nodes (a placement group, "
        "torchrun with a static rendezvous on each).",
    )
    p.add_argument("--spec-json", required=True, metavar="JSON", help="the job spec")
    p.add_argument("--placement", default="STRICT_SPREAD",
                   choices=("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK"))  # fmt: skip
    p.set_defaults(func=cmd_job_ray_launch)
    _hide(sub, ("job-shim", "job-run", "job-ray-launch"))


def _hide(sub: argparse._SubParsersAction, names: tuple[str, ...]) -> None:
    """Keep the in-job commands out of ``benchkit --help``."""
    sub._choices_actions = [a for a in sub._choices_actions if a.dest not in names]


def _job_logging() -> None:
    logging.getLogger("benchkit.remote").setLevel(logging.INFO)


def cmd_job_shim(args: Any) -> int:
    import tempfile

    from benchkit.errors import ConfigError
    from benchkit.remote.shim import ShimOptions, run_shim
    from benchkit.settings import load_settings
    from benchkit.store import open_store

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError(
            "job-shim needs the command to supervise: benchkit job-shim --job ID -- CMD"
        )
    _job_logging()
    store = open_store(load_settings({"store": args.store}).store)
    remove = list(args.remove)
    cwd = args.cwd
    if args.scratch:
        cwd = Path(tempfile.mkdtemp(prefix=f"benchkit-job-{args.job}-"))
        remove.append(cwd)
    if cwd is not None:
        cwd.mkdir(parents=True, exist_ok=True)
    opts = ShimOptions(flush_s=args.flush, heartbeat_s=args.heartbeat, grace_s=args.grace,
                       remove=remove, cwd=cwd, own_process=True)  # fmt: skip
    return run_shim(store, args.job, command, opts)


def cmd_job_run(args: Any) -> int:
    from benchkit.errors import ConfigError
    from benchkit.remote.jobrun import NodeRole, exec_job
    from benchkit.remote.spec import JobSpec

    spec = JobSpec.from_json(args.spec_json)
    role = None
    if args.nnodes:
        missing = [f for f in ("node_rank", "master_addr", "master_port", "local_addr")
                   if getattr(args, f) is None]  # fmt: skip
        if missing:
            raise ConfigError(
                "job-run as a node needs " + ", ".join("--" + m.replace("_", "-") for m in missing)
            )
        role = NodeRole(
            args.nnodes, args.node_rank, args.master_addr, args.master_port, args.local_addr
        )
    sys.stdout.flush()
    exec_job(spec, args.workdir, args.env_root, role)
    return 0  # not reached: exec_job replaces this process


def cmd_job_ray_launch(args: Any) -> int:
    from benchkit.remote.ray_launch import launch
    from benchkit.remote.spec import JobSpec

    return launch(JobSpec.from_json(args.spec_json), args.placement)
