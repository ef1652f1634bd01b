""":class:`JobSpec`: everything one job needs, as data that travels to any engine as JSON.

The code travels by reference: a job names a stored code version and its archive's sha256,
and the job itself fetches and verifies it from the store, so no engine upload limit applies.
Credentials for the store travel in ``env`` (the engine's environment for the job), never in
the command line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from benchkit.errors import JobError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it can name a job everywhere (a store key segment, a Ray submission id)."""
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise JobError(
            f"invalid job id {job_id!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit, at most 128 characters"
        )
    return job_id


@dataclass
class JobSpec:
    """One job: which code version to run, how, where its store is, and its limits."""

    job_id: str
    #: the store URL the job reads its code and datasets from and writes its run to
    store: str
    #: the stored code version to run
    version: int
    #: the version's archive sha256 when the job was submitted (a replaced version is refused)
    archive_sha256: str = ""
    #: the run this job trains (default: the job id); with ``resume`` the run to continue
    run_id: str = ""
    resume: bool = False
    name: str | None = None
    fn: str | None = None
    #: ``key=value`` overrides of the train function's config
    config: list[str] = field(default_factory=list)
    nnodes: int = 1
    nproc_per_node: int = 1
    #: per node; 0 trains on the CPU
    gpus: int = 0
    #: CPUs per node the engine reserves (default: one per process)
    cpus: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    max_duration_s: float | None = None
    stall_timeout_s: float | None = None
    stop_grace_s: float = 30.0
    project: str | None = None

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        if not self.run_id:
            self.run_id = self.job_id
        check_job_id(self.run_id)
        if not isinstance(self.version, int) or self.version < 1:
            raise JobError(
                f"job {self.job_id}: code versions are numbered from 1, got {self.version!r}"
            )
        for what in ("nnodes", "nproc_per_node"):
            value = getattr(self, what)
            if not isinstance(value, int) or value < 1:
                raise JobError(f"job {self.job_id}: {what} must be at least 1, got {value!r}")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise JobError(f"job {self.job_id}: gpus must be 0 or more, got {self.gpus!r}")
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in self.env.items()):
            raise JobError(f"job {self.job_id}: env holds strings only")

    @property
    def cpus_per_node(self) -> float:
        return float(self.cpus) if self.cpus else float(self.nproc_per_node)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        if not isinstance(data, dict):
            raise JobError(f"a job spec is a JSON object, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as e:
            raise JobError(f"invalid job spec: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise JobError(f"a job spec must be JSON: {e}") from None
        return cls.from_dict(data)

    def without_env(self) -> dict[str, Any]:
        """The spec as a dict with the environment's values hidden (for command lines, logs)."""
        data = self.to_dict()
        data["env"] = {}
        return data

    def public_json(self) -> str:
        """The spec as JSON for a command line: without its environment, which may hold a
        store key and reaches the job through the engine's environment instead."""
        return json.dumps(self.without_env(), sort_keys=True)
