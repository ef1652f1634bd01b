"""The client side of remote jobs: the ``/api/v1/jobs`` calls and following a job's log.

Every call goes through the Bench server client (:class:`benchkit.api_client.ApiClient`) of
the project's store, so credentials, retries and error messages are the store's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from benchkit.errors import ConfigError, StoreConnectionError
from benchkit.store import Store

ACTIVE = ("queued", "starting", "running")
#: the exit status of ``run --remote`` for each way a job ends (a failed job exits with its own)
EXIT_STATUS = {"succeeded": 0, "cancelled": 130, "timed_out": 124, "lost": 75, "failed": 1}
#: how long a follower keeps trying when the server cannot be reached (it may be restarting)
RECONNECT_S = 900.0


def exit_status(job: dict[str, Any]) -> int:
    """The status ``benchkit run --remote`` exits with for an ended job."""
    if job["state"] == "failed" and job.get("exit_code"):
        code = int(job["exit_code"])
        return code if 0 < code < 256 else 1
    return EXIT_STATUS.get(job["state"], 1)


@dataclass
class LogChunk:
    data: bytes
    offset: int
    state: str
    source: str


class JobsClient:
    """The jobs of the project a Bench server store belongs to."""

    def __init__(self, store: Store) -> None:
        client = getattr(store, "client", None)
        if client is None or not hasattr(client, "json"):
            raise ConfigError(
                f"remote jobs need a Bench server as the store, and the store is {store.url}; "
                "start one (`python -m benchkit server`) and `benchkit login URL --project ID "
                "--key KEY`, or pass --store http://HOST:PORT"
            )
        self.client = client
        self.url = client.url

    def executor(self) -> dict[str, Any]:
        return self.client.json("GET", "executor", what="asking which executor runs jobs")

    def submit(self, **body: Any) -> dict[str, Any]:
        return self.client.json(
            "POST", "jobs", json=body, expect=(200, 201), what="submitting the job"
        )

    def get(self, job_id: str) -> dict[str, Any]:
        return self.client.json("GET", "jobs", job_id, what=f"looking up job {job_id}")

    def list(self, active: bool = False, run: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"active": "true" if active else "false"}
        if run:
            params["run"] = run
        return self.client.json("GET", "jobs", params=params, what="listing jobs")["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.client.json("POST", "jobs", job_id, "cancel", expect=(200, 202),
                                what=f"stopping job {job_id}")  # fmt: skip

    def logs(self, job_id: str, offset: int = 0, wait: float = 0) -> LogChunk:
        resp = self.client.request(
            "GET", self.client.path("jobs", job_id, "logs"),
            params={"offset": offset, "wait": wait}, what=f"reading the log of job {job_id}",
        )  # fmt: skip
        h = resp.headers
        return LogChunk(resp.content, int(h.get("X-Log-Offset", offset)), h.get("X-Job-State", ""),
                        h.get("X-Log-Source", "job"))  # fmt: skip

    def latest_job_of(self, run_id: str) -> dict[str, Any] | None:
        jobs = self.list(run=run_id)
        return jobs[-1] if jobs else None


class Follower:
    """Copies a job's log to ``out`` as it is written; :meth:`run` returns the ended job.

    It keeps its place between calls, so a follower interrupted (Ctrl-C) and run again goes
    on where it was. It survives a server restart (retries for ``RECONNECT_S``)."""

    def __init__(
        self,
        jobs: JobsClient,
        job_id: str,
        out: BinaryIO,
        *,
        wait: float = 10.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.jobs, self.job_id, self.out = jobs, job_id, out
        self.wait, self.on_retry = wait, on_retry
        self.offset, self.source = 0, "job"

    def run(self) -> dict[str, Any]:
        down_since: float | None = None
        while True:
            try:
                chunk = self.jobs.logs(self.job_id, self.offset, self.wait)
            except StoreConnectionError as e:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > RECONNECT_S:
                    raise
                if self.on_retry is not None:
                    self.on_retry(str(e))
                time.sleep(min(5.0, 0.5 + (now - down_since) / 4))
                continue
            down_since = None
            if chunk.source != self.source:  # the job's own log replaced the engine's
                self.source, self.offset = chunk.source, 0
                continue
            if chunk.data:
                self.out.write(chunk.data)
                self.out.flush()
            self.offset = chunk.offset
            if chunk.state not in ACTIVE and not chunk.data:
                return self.jobs.get(self.job_id)


def follow(jobs: JobsClient, job_id: str, out: BinaryIO, **kw: Any) -> dict[str, Any]:
    """Copy the job's log to ``out`` until the job has ended; returns the ended job."""
    return Follower(jobs, job_id, out, **kw).run()
