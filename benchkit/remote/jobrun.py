"""``benchkit job-run``: what the shim runs inside a job, on any engine and on every node.

1. Read the code version's manifest from the store and check it is the version that was
   submitted (its archive sha256), so a version replaced in between is refused.
2. Check the version out into the working directory, every file's checksum verified
   (:func:`benchkit.code.package.checkout`).
3. Build or reuse the environment for its requirements (:mod:`benchkit.remote.envs`).
4. Replace this process (``exec``) with ``benchkit run`` in that environment: through torchrun
   when the job has several processes, with a static rendezvous when it spans several nodes.

Replacing the process keeps the shim's view simple: its child is the training launcher, so
its signals and exit status are the run's.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from benchkit.errors import CodePackageError, JobError
from benchkit.remote.envs import JobEnv, ensure_env
from benchkit.remote.spec import JobSpec
from benchkit.store import open_store

#: What a job prints about its own preparation goes to stdout: the job's log.
out = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class NodeRole:
    """Where one node of a multi-node job sits in the static rendezvous."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    local_addr: str


def default_env_root() -> Path:
    from benchkit.settings import get_paths

    return get_paths().cache / "envs"


def say(text: str) -> None:
    out.print(f"[benchkit] {text}", markup=False)


def prepare(spec: JobSpec, workdir: Path, env_root: Path) -> tuple[JobEnv, Path]:
    """Check the code out into ``workdir/code`` and make its environment; returns
    (environment, entry module)."""
    from benchkit.code.package import checkout, get_manifest

    store = open_store(spec.store)
    what = f"code version {spec.version}"
    try:
        manifest = get_manifest(store, spec.version)
    except CodePackageError as e:
        raise JobError(f"job {spec.job_id}: {e}") from None
    if spec.archive_sha256 and manifest.archive_sha256 != spec.archive_sha256:
        raise JobError(
            f"job {spec.job_id}: {what} in store {store.url} changed after the job was submitted "
            f"(archive sha256 {manifest.archive_sha256[:12]}…, the job asked for "
            f"{spec.archive_sha256[:12]}…); submit it again"
        )
    code = workdir / "code"
    shutil.rmtree(code, ignore_errors=True)  # an earlier attempt's copy
    checkout(store, spec.version, code)
    say(f"{what} checked out into {code} ({len(manifest.files)} files, checksums verified)")
    env = ensure_env(manifest.requirements, env_root, say=say, what=what)
    return env, code / manifest.entry_point


def run_arguments(spec: JobSpec, entry: Path) -> list[str]:
    """The ``benchkit run`` arguments that train ``spec`` from the checked-out ``entry``."""
    args = [str(entry), "--store", spec.store]
    args += ["--resume", spec.run_id] if spec.resume else ["--run-id", spec.run_id]
    if spec.fn:
        args += ["--fn", spec.fn]
    if spec.name and not spec.resume:
        args += ["--name", spec.name]
    for pair in spec.config:
        args += ["--config", pair]
    if spec.gpus == 0:
        args.append("--cpu")
    return args


def training_command(
    spec: JobSpec, python: str, entry: Path, role: NodeRole | None = None
) -> list[str]:
    """The command that trains ``spec`` on this node."""
    run = run_arguments(spec, entry)
    if role is None:
        return [python, "-m", "benchkit", "run", *run, "--processes", str(spec.nproc_per_node)]
    return [
        python, "-m", "benchkit.training.torchrun",  # torchrun, without its traceback when stopped
        f"--nnodes={role.nnodes}", f"--node-rank={role.node_rank}",
        f"--nproc-per-node={spec.nproc_per_node}",
        f"--master-addr={role.master_addr}", f"--master-port={role.master_port}",
        f"--local-addr={role.local_addr}", "--max-restarts=0",
        # a stopped node's workers get the job's whole grace to checkpoint (torchrun's is 30 s)
        f"--shutdown-timeout={max(1, round(spec.stop_grace_s))}",
        "-m", "benchkit", "run", *run,
    ]  # fmt: skip


def exec_job(
    spec: JobSpec,
    workdir: Path | None = None,
    env_root: Path | None = None,
    role: NodeRole | None = None,
) -> NoReturn:
    """Prepare the job in ``workdir`` (default: the current directory) and become its training
    process. Raises :class:`JobError` when it cannot be prepared."""
    workdir = Path(workdir or os.getcwd()).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env, entry = prepare(spec, workdir, env_root or default_env_root())
    cmd = training_command(spec, env.python, entry, role)
    environ = {**os.environ, **spec.env}
    environ.setdefault("OMP_NUM_THREADS", "1")
    environ["BENCHKIT_CODE_VERSION"] = str(spec.version)
    where = f" as node {role.node_rank} of {role.nnodes}" if role else ""
    say(
        f"starting run {spec.run_id}{where}: {' '.join(cmd[1:4])} … ({spec.world_size} process(es))"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(entry.parent)
    os.execve(cmd[0], cmd, environ)
