"""``/api/v1/jobs``: run a stored code version on the server's executor, follow and stop it.

Every route is scoped to the caller's project (the key decides); another project's job is
"not found".
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from benchkit.server.api.deps import API, Reader, ServicesDep, Writer
from benchkit.server.services.jobs import ACTIVE, JobRequest

router = APIRouter(prefix=API, tags=["jobs"])

JobId = Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
#: the longest a logs request waits for new output
MAX_WAIT_S = 30.0
LOG_POLL_S = 0.5


class JobIn(BaseModel):
    """A job to run: a stored code version, its train function's name and config overrides."""

    version: int = Field(ge=1, le=2**31 - 1, description="the stored code version to run")
    name: str = Field(min_length=1, max_length=200, description="the run's name")
    fn: str | None = Field(default=None, max_length=200, description="which @bench.train function")
    config: list[Annotated[str, Field(max_length=10_000)]] = Field(default=[], max_length=1000)
    processes: int = Field(default=1, ge=1, le=1024, description="processes per node")
    nodes: int = Field(default=1, ge=1, le=1024)
    gpus: int = Field(default=0, ge=0, le=1024, description="GPUs per node")
    cpus: float | None = Field(default=None, gt=0, le=100_000, description="CPUs per node")
    resume: str | None = Field(
        default=None, max_length=255,
        description='continue a run: "" for the latest run of this name, or a run id',
    )  # fmt: skip
    run_id: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    job_id: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="chosen by the client, so that a repeated request finds its job",
    )  # fmt: skip
    max_duration_s: float | None = Field(default=None, gt=0, le=10**8)
    stall_timeout_s: float | None = Field(default=None, gt=0, le=10**8)
    stop_grace_s: float = Field(default=30.0, ge=0, le=3600)


class JobOut(BaseModel):
    id: str
    run_id: str
    name: str
    version: int
    state: str
    executor: str
    exit_code: int | None
    message: str
    processes: int
    nodes: int
    gpus: int
    resume: bool
    config: list[str]
    max_duration_s: float | None
    stall_timeout_s: float | None
    cancel_requested: bool
    created: str | None
    started: str | None
    ended: str | None
    duration_s: float | None


class JobList(BaseModel):
    jobs: list[JobOut]


class ExecutorOut(BaseModel):
    name: str | None
    description: str


@router.get("/executor", response_model=ExecutorOut)
def get_executor(principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """What runs this server's jobs (``name`` is null when it runs none)."""
    return services.jobs.executor_info()


@router.post("/jobs", response_model=JobOut, status_code=201)
def create_job(body: JobIn, principal: Writer, services: ServicesDep) -> dict[str, Any]:
    """Run a code version: checked (the version, the run to resume, what the executor can
    run) before anything starts; the answer is the queued job."""
    req = JobRequest(**body.model_dump())
    return services.jobs.submit(principal.project_id, principal.project_name, req)


@router.get("/jobs", response_model=JobList)
def list_jobs(
    principal: Reader,
    services: ServicesDep,
    active: Annotated[bool, Query(description="only queued, starting and running jobs")] = False,
    run: Annotated[str | None, Query(max_length=255, description="only this run's jobs")] = None,
) -> JobList:
    return JobList(jobs=services.jobs.list(principal.project_id, active, run))


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    return services.jobs.get(principal.project_id, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, status_code=202)
def cancel_job(job_id: JobId, principal: Writer, services: ServicesDep) -> dict[str, Any]:
    """Stop the job: recorded first, then sent (SIGINT so the run can checkpoint, SIGKILL
    after its grace period) and repeated until the engine confirms."""
    return services.jobs.cancel(principal.project_id, job_id)


@router.get(
    "/jobs/{job_id}/logs",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "log bytes from offset"}},
)
async def job_logs(
    job_id: JobId,
    principal: Reader,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=8 * 1024 * 1024)] = 1024 * 1024,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for output")
    ] = 0,
) -> Response:
    """The job's log from byte ``offset``. Headers: ``X-Log-Offset`` (where to read next),
    ``X-Job-State``, ``X-Log-Source`` (``job``, or ``engine`` before the job's supervisor
    started: start again from 0 when it changes). With ``wait`` an active job's request
    returns as soon as there is output, or after that many seconds."""
    jobs = services.jobs
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        data, nxt, state, source = await to_thread.run_sync(
            jobs.logs, principal.project_id, job_id, offset, limit
        )
        if data or state not in ACTIVE or loop.time() >= deadline:
            break
        await asyncio.sleep(LOG_POLL_S)
    headers = {"X-Log-Offset": str(nxt), "X-Job-State": state, "X-Log-Source": source}
    return Response(data, media_type="text/plain; charset=utf-8", headers=headers)
