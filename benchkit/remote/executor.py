"""The executor interface: what the server asks of an engine that runs jobs.

An executor only starts, observes and stops processes. The truth about a job is in the store
(written by the shim inside it, :mod:`benchkit.remote.joblog`) and in the server's database;
an executor's answers are evidence, weighed by the server's reconciler:

- ``submit`` is idempotent on the job id: submitting a job the engine already has returns
  its handle and starts nothing.
- ``observe`` never raises: a job the engine does not know, or an engine that cannot be
  reached, is :attr:`EngineState.UNKNOWN` with a message; never "failed".
- ``cancel`` is idempotent and may be repeated until the engine confirms.
- ``release`` frees what the engine holds for an ended job (its directory, its record).
- ``owned`` lists the engine's jobs started by this server, so a restarted server can adopt
  them and stop those it no longer knows.
"""

from __future__ import annotations

import enum
import shlex
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass

from benchkit.remote.spec import JobSpec


class EngineState(str, enum.Enum):
    """A job's state as its engine reports it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    UNKNOWN = "unknown"

    @property
    def ended(self) -> bool:
        return self in (EngineState.SUCCEEDED, EngineState.FAILED, EngineState.STOPPED)


@dataclass(frozen=True)
class Observation:
    """One look at a job through its engine."""

    state: EngineState
    exit_code: int | None = None
    message: str = ""


class Executor(ABC):
    """One engine that runs jobs (this machine's worker slots, a Ray cluster...)."""

    #: the name the server's ``--executor`` flag uses
    name: str = ""

    def check_spec(self, spec: JobSpec) -> None:  # noqa: B027 - optional
        """Raise :class:`JobError` for a job this engine can never run (before any runs)."""

    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start (or queue) ``spec``; returns the engine's handle. Idempotent on the job id."""

    @abstractmethod
    def observe(self, handle: str) -> Observation:
        """The job's state in the engine. Never raises."""

    @abstractmethod
    def engine_logs(self, handle: str, offset: int = 0) -> tuple[str, int]:
        """The engine's own log of the job from ``offset`` and the offset after it: the
        fallback for a job whose shim never wrote a log (it could not even start)."""

    @abstractmethod
    def cancel(self, handle: str, grace_s: float = 30.0) -> bool:
        """Ask the engine to stop the job (SIGINT, SIGKILL after ``grace_s``). Idempotent.
        Returns True once the engine has taken the request; raises :class:`JobError` when it
        could not be reached (the caller repeats)."""

    @abstractmethod
    def release(self, handle: str) -> None:
        """Free what the engine holds for an ended job."""

    @abstractmethod
    def owned(self) -> list[str]:
        """Handles of the engine's jobs that this server started."""

    def describe(self) -> str:
        """A one-line description for logs and ``benchkit project``."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional
        """Stop background threads (the jobs themselves keep running)."""


def shim_command(
    spec: JobSpec,
    python: str,
    inner: list[str],
    *,
    heartbeat_s: float | None = None,
    flush_s: float | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """``python -m benchkit job-shim ... -- <inner>``: ``inner`` supervised as ``spec``'s job."""
    cmd = [python, "-m", "benchkit", "job-shim", "--job", spec.job_id, "--store", spec.store,
           "--grace", f"{spec.stop_grace_s:g}"]  # fmt: skip
    if heartbeat_s is not None:
        cmd += ["--heartbeat", f"{heartbeat_s:g}"]
    if flush_s is not None:
        cmd += ["--flush", f"{flush_s:g}"]
    return cmd + list(extra or []) + ["--", *inner]


def job_run_command(python: str, spec: JobSpec, extra: list[str] | None = None) -> list[str]:
    """``python -m benchkit job-run --spec-json ...``: prepare and train ``spec`` (the
    environment's values are not on the command line; they reach the job through its env)."""
    return [python, "-m", "benchkit", "job-run", "--spec-json", spec.public_json(), *(extra or [])]


def command_line(cmd: list[str]) -> str:
    """A command as one shell string (what Ray's entrypoint takes)."""
    return shlex.join(cmd)


def default_python() -> str:
    return sys.executable
