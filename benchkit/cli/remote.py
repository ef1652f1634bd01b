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
    p.add_argument("--pid-file", type=Path, metavar="FILE",
                   help="write COMMAND's pid, process group and start time here once started")  # fmt: skip
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
    register_jobs(sub)


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
                       remove=remove, cwd=cwd, own_process=True, pid_file=args.pid_file)  # fmt: skip
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


# --- the user's side: run --remote, runs logs|stop, jobs list ----------------------------------


def add_remote_flags(p: argparse.ArgumentParser) -> None:
    """``run``'s flags for running on the Bench server's executor."""
    g = p.add_argument_group("remote (on the Bench server's executor)")
    g.add_argument("--remote", action="store_true",
                   help="package the code, run it on the server's executor and follow its log")  # fmt: skip
    g.add_argument("--nodes", type=int, default=1, metavar="M",
                   help="nodes for a multi-node job (the ray executor); --processes per node")  # fmt: skip
    g.add_argument(
        "--gpus", type=int, default=0, metavar="G", help="GPUs per node (default 0: CPU)"
    )
    g.add_argument("--detach", action="store_true",
                   help="print the run id and return; follow later with `benchkit runs logs RUN -f`")  # fmt: skip
    g.add_argument("--max-duration", type=float, metavar="S",
                   help="stop the job as timed out after S seconds")  # fmt: skip
    g.add_argument("--stall-timeout", type=float, metavar="S",
                   help="stop the job as timed out when it writes no output and no metric for S seconds")  # fmt: skip
    g.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="seconds a stopped job gets between SIGINT and SIGKILL (default 30)")  # fmt: skip


def _remote_store(args: Any):
    from benchkit.settings import load_settings
    from benchkit.store import open_store

    return open_store(load_settings({"store": getattr(args, "store", None)}).store)


def _jobs(args: Any):
    from benchkit.remote.client import JobsClient

    store = _remote_store(args)
    return store, JobsClient(store)


def cmd_run_remote(args: Any) -> int:
    """``run FILE --remote``: everything that can be checked is checked here, before any
    machine is used; then the code is packaged (a new version only if it changed), the job
    submitted and followed."""
    from benchkit.cli.common import err_console
    from benchkit.code.package import migrate_code
    from benchkit.errors import ConfigError
    from benchkit.registry import TRAIN, declared, import_user_module
    from benchkit.settings import load_settings
    from benchkit.training import runner

    file, resume = args.file, args.resume
    if not file and resume and resume.endswith(".py"):  # `run --resume train.py --remote`
        file, resume = resume, ""
    if not file:
        raise ConfigError("give the training module: benchkit run train.py --remote")
    if args.version is not None:
        raise ConfigError("--remote packages FILE itself; leave out --version")
    if args.nodes < 1 or args.gpus < 0:
        raise ConfigError("--nodes must be at least 1 and --gpus 0 or more")
    processes = _remote_processes(args.processes, args.gpus)
    store, jobs = _jobs(args)
    executor = jobs.executor()
    if not executor.get("name"):
        raise ConfigError(f"the Bench server at {jobs.url} runs no jobs: {executor['description']}; "
                          "its admin restarts it with --executor local or --executor ray")  # fmt: skip
    module = import_user_module(file)
    classic = args.fn is None and not declared(module, TRAIN) and runner.is_classic_script(module)
    if classic:
        if args.config or resume is not None:
            raise ConfigError(f"{file} is a classic script (a main() and no @bench.train "
                              "function): --config and --resume need a @bench.train function")  # fmt: skip
        name = args.name or Path(file).stem
    else:
        fn = runner.find_train_function(module, args.fn)
        name = args.name or fn.__benchkit_name__
        # a key the function does not take, or a value of the wrong type, fails here
        runner.apply_overrides(getattr(fn, "config", {}), list(args.config or []))
    job_id = None
    if resume is not None:  # the run to continue, found before anything is uploaded
        import secrets

        target = runner.resolve_resume(store, name, resume or None)
        resume, job_id = target.id, f"{target.id}-r{secrets.token_hex(3)}"
    settings = load_settings({"store": args.store}, project_dir=Path(file).resolve().parent)
    runner.migrate_missing_datasets(module, store, settings.project_root)
    result = migrate_code(file, store, project=settings.project)
    what = "stored as" if result.created else "unchanged:"
    err_console.print(f"[cyan]code {what} version {result.version}[/cyan]", highlight=False)
    from benchkit.training import runs

    body = {
        "version": result.version, "name": name, "fn": args.fn, "config": list(args.config or []),
        "processes": processes, "nodes": args.nodes, "gpus": args.gpus, "resume": resume,
        "run_id": args.run_id or (None if resume is not None else runs.new_run_id(name)),
        "job_id": job_id,
        "max_duration_s": args.max_duration, "stall_timeout_s": args.stall_timeout,
        "stop_grace_s": args.grace,
    }  # fmt: skip
    job = jobs.submit(**body)
    err_console.print(
        f"[bold]run {job['run_id']}[/bold] submitted (job {job['id']}, {executor['description']}, "
        f"{job['nodes']} node(s) x {job['processes']} process(es))",
        highlight=False,
    )
    if args.detach:
        err_console.print(f"follow it with `benchkit runs logs {job['run_id']} --follow`; "
                          f"stop it with `benchkit runs stop {job['run_id']}`", highlight=False)  # fmt: skip
        return 0
    return _follow_until_end(jobs, job, interactive=True)


def _remote_processes(value: Any, gpus: int) -> int:
    from benchkit.errors import ConfigError

    if value in (None, "", "auto"):
        return max(1, gpus)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--processes takes a number or 'auto', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"--processes must be at least 1, got {n}")
    return n


def _follow_until_end(jobs: Any, job: dict[str, Any], interactive: bool) -> int:
    """Follow the job's log; Ctrl-C asks whether to cancel the job or stop following."""
    from benchkit.cli.common import err_console
    from benchkit.remote.client import Follower, exit_status

    def retrying(reason: str) -> None:
        err_console.print(f"[yellow]{reason}; still trying…[/yellow]", highlight=False)

    follower = Follower(jobs, job["id"], sys.stdout.buffer, on_retry=retrying)
    cancelled = False
    while True:
        try:
            final = follower.run()
            break
        except KeyboardInterrupt:
            if cancelled or not _ask_cancel(job, interactive):
                err_console.print(
                    f"[yellow]stopped following; job {job['id']} goes on[/yellow] — "
                    f"`benchkit runs logs {job['run_id']} -f` follows it again, "
                    f"`benchkit runs stop {job['run_id']}` stops it", highlight=False,
                )  # fmt: skip
                return 130
            jobs.cancel(job["id"])
            cancelled = True
            err_console.print("[yellow]stop requested: the run gets SIGINT to checkpoint and end "
                              "(Ctrl-C again stops following)[/yellow]")  # fmt: skip
    _print_end(final)
    return exit_status(final)


def _ask_cancel(job: dict[str, Any], interactive: bool) -> bool:
    """True to cancel the job; a terminal is asked, anything else cancels."""
    from benchkit.cli.common import console

    if not (interactive and sys.stdin.isatty()):
        return True
    try:
        answer = console.input(
            f"\n[bold]cancel job {job['id']}[/bold] (c, the default) or only stop following (f)? "
        )
    except (KeyboardInterrupt, EOFError):
        return True
    return not answer.strip().lower().startswith("f")


STATE_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "timed_out": "yellow",
               "lost": "red", "queued": "dim", "starting": "cyan", "running": "cyan"}  # fmt: skip


def _print_end(job: dict[str, Any]) -> None:
    from benchkit.cli.common import err_console

    style = STATE_STYLE.get(job["state"], "")
    err_console.print(
        f"[{style}]job {job['id']} {job['state'].replace('_', ' ')}[/{style}]: {job['message']} — "
        f"`benchkit runs show {job['run_id']}`",
        highlight=False,
    )


def register_run_actions(rsub: argparse._SubParsersAction) -> None:
    """``runs logs RUN [--follow]`` and ``runs stop RUN`` (added to the ``runs`` group)."""
    from benchkit.cli.common import STORE

    s = rsub.add_parser("logs", parents=[STORE], help="the log of a remote run's job(s)")
    s.add_argument("run", help="run id, unique id prefix, row number or run name")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    s.set_defaults(func=cmd_runs_logs)
    s = rsub.add_parser("stop", parents=[STORE],
                        help="stop a remote run (SIGINT so it can checkpoint, SIGKILL after the grace)")  # fmt: skip
    _stop_flags(s)


def _stop_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("run", help="run id, unique id prefix, row number or run name")
    s.add_argument("--wait", action="store_true", help="wait until the job has ended")
    s.set_defaults(func=cmd_runs_stop)


def _run_jobs(args: Any) -> tuple[Any, str, list[dict[str, Any]]]:
    from benchkit.errors import JobError
    from benchkit.training import runs

    store, jobs = _jobs(args)
    ref = args.run
    found = jobs.list(run=ref)
    if not found:  # a prefix, a row number or a name
        ref = runs.resolve_run(store, ref)
        found = jobs.list(run=ref)
    if not found:
        raise JobError(
            f"run {ref} has no remote job (it ran locally?); see it with `benchkit runs show {ref}`"
        )
    return jobs, ref, found


def cmd_runs_logs(args: Any) -> int:
    from benchkit.cli.common import err_console
    from benchkit.remote.client import exit_status

    jobs, _, found = _run_jobs(args)
    out = sys.stdout.buffer
    for job in found[:-1]:  # earlier jobs of a resumed run
        err_console.print(f"[dim]--- job {job['id']} ({job['state']})[/dim]", highlight=False)
        _print_log(jobs, job["id"], out)
    last = found[-1]
    if len(found) > 1:
        err_console.print(f"[dim]--- job {last['id']} ({last['state']})[/dim]", highlight=False)
    if args.follow:
        return _follow_until_end(jobs, last, interactive=True)
    _print_log(jobs, last["id"], out)
    if last["state"] not in ("queued", "starting", "running"):
        _print_end(last)
        return exit_status(last)
    return 0


def _print_log(jobs: Any, job_id: str, out: Any) -> None:
    offset = 0
    while True:
        chunk = jobs.logs(job_id, offset)
        if not chunk.data:
            return
        out.write(chunk.data)
        out.flush()
        offset = chunk.offset


def cmd_runs_stop(args: Any) -> int:
    from benchkit.cli.common import err_console

    jobs, run_id, found = _run_jobs(args)
    active = [j for j in found if j["state"] in ("queued", "starting", "running")]
    if not active:
        last = found[-1]
        err_console.print(f"run {run_id} is not running (its last job {last['id']} {last['state']})",
                          highlight=False)  # fmt: skip
        return 0
    for job in active:
        jobs.cancel(job["id"])
        err_console.print(f"[yellow]stop requested for job {job['id']} of run {run_id}[/yellow] "
                          "(SIGINT so it can checkpoint, SIGKILL after its grace period)", highlight=False)  # fmt: skip
    if not args.wait:
        return 0
    import time

    while True:
        states = [jobs.get(j["id"]) for j in active]
        if all(j["state"] not in ("queued", "starting", "running") for j in states):
            for j in states:
                _print_end(j)
            return 0
        time.sleep(1.0)


def register_jobs(sub: argparse._SubParsersAction) -> None:
    """``jobs list|show`` and the original's ``show-ex`` and ``stop-svr``."""
    from benchkit.cli.common import JSON, STORE

    p = sub.add_parser(
        "jobs",
        parents=[JSON, STORE],
        help="remote jobs: queued and running work (--all: every job)",
    )
    p.add_argument("--all", action="store_true", help="ended jobs too")
    jsub = p.add_subparsers(dest="jobs_command", metavar="ACTION")
    p.set_defaults(func=cmd_jobs_list)
    s = jsub.add_parser(
        "list", parents=[JSON, STORE], help="queued and running jobs (--all: every job)"
    )
    s.add_argument("--all", action="store_true", help="ended jobs too")
    s.set_defaults(func=cmd_jobs_list)
    s = jsub.add_parser(
        "show", parents=[JSON, STORE], help="one job: state, exit status, message, limits"
    )
    s.add_argument("job", help="job id")
    s.set_defaults(func=cmd_jobs_show)
    s = sub.add_parser("show-ex", parents=[JSON, STORE], help="the original's name for `jobs list`")
    s.add_argument("--all", action="store_true", help="ended jobs too")
    s.set_defaults(func=cmd_jobs_list)
    s = sub.add_parser("stop-svr", parents=[STORE], help="the original's name for `runs stop`")
    _stop_flags(s)


def cmd_jobs_list(args: Any) -> int:
    from benchkit.cli.common import print_json, print_table

    _, jobs = _jobs(args)
    found = jobs.list(active=not args.all)
    if args.json:
        print_json(found)
        return 0
    rows = []
    for i, j in enumerate(found, 1):
        style = STATE_STYLE.get(j["state"], "")
        rows.append([i, j["id"], j["run_id"] if j["run_id"] != j["id"] else "", f"[{style}]{j['state']}[/{style}]",
                     j["version"], f"{j['nodes']}x{j['processes']}", j["executor"],
                     (j["created"] or "").replace("T", " ").split("+")[0], _duration(j["duration_s"]),
                     j["message"][:60]])  # fmt: skip
    title = "Jobs" if args.all else "Queued and running jobs"
    print_table(title, ["#", "job", "run", "state", "version", "nodes x procs", "executor",
                        "created (UTC)", "duration", "message"], rows,
                no_wrap=("job", "run"))  # fmt: skip
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def cmd_jobs_show(args: Any) -> int:
    from benchkit.cli.common import console, print_json

    _, jobs = _jobs(args)
    job = jobs.get(args.job)
    if args.json:
        print_json(job)
        return 0
    for key in ("id", "run_id", "name", "state", "executor", "version", "exit_code", "message",
                "processes", "nodes", "gpus", "config", "max_duration_s", "stall_timeout_s",
                "cancel_requested", "created", "started", "ended", "duration_s"):  # fmt: skip
        console.print(f"[bold]{key:>16}[/bold]  {job.get(key)}", highlight=False)
    return 0
