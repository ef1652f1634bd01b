"""The ``ray`` executor: jobs on a Ray cluster through the Ray Jobs REST API, with ``requests``.

No Ray SDK on this side: the server speaks HTTP to the cluster's dashboard (``--ray-address
http://HEAD:8265``), with a bearer token when the cluster wants one (``RAY_AUTH_TOKEN``).

- The job's Ray submission id is its job id, so submitting is idempotent: look it up first,
  post only when Ray does not have it, and look again after a post that failed (Ray answers a
  duplicate id with an error, and a post may have been taken even though its answer was lost).
- The entrypoint is the shim around ``benchkit job-run`` (one node: torchrun on the node Ray
  picks, which holds ``nproc_per_node`` CPUs for the job so Ray queues jobs that do not fit) or
  around :mod:`benchkit.remote.ray_launch` (several nodes: a placement group, torchrun on each).
  The code is not uploaded: the job fetches its version from the store.
- Stopping is Ray's ``POST /stop`` with ``RAY_JOB_STOP_SIGNAL=SIGINT`` and a wait longer than
  the job's grace, so the run gets its SIGINT and the shim its time to write ``exit.json``.
- Ray keeps a record of every job until it is deleted; :meth:`release` deletes it once the job
  has ended (the server archives the log first: the shim already wrote it to the store).
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from typing import Any

import requests

from benchkit.errors import EngineUnavailable, JobError
from benchkit.remote.executor import (
    EngineState,
    Executor,
    Observation,
    job_run_command,
    shim_command,
)
from benchkit.remote.spec import JobSpec

log = logging.getLogger(__name__)

_STATES = {
    "PENDING": EngineState.QUEUED,
    "RUNNING": EngineState.RUNNING,
    "SUCCEEDED": EngineState.SUCCEEDED,
    "FAILED": EngineState.FAILED,
    "STOPPED": EngineState.STOPPED,
}
#: Seconds a Ray job must have been terminal before its record is deleted: Ray's job monitor
#: polls about once a second and writes the final status once more (see ``RayExecutor.release``).
RELEASE_SETTLE_S = float(os.environ.get("BENCHKIT_RAY_RELEASE_SETTLE_S") or 10.0)

PLACEMENTS = ("STRICT_SPREAD", "SPREAD", "PACK", "STRICT_PACK")


class RayExecutor(Executor):
    """Jobs as Ray jobs on the cluster whose dashboard is at ``address``."""

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        server_id: str = "benchkit",
        python: str = "python",
        env: dict[str, str] | None = None,
        placement: str = "STRICT_SPREAD",
        heartbeat_s: float | None = None,
        flush_s: float | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        if "://" not in address:
            address = f"http://{address}"
        self.address = address.rstrip("/")
        token = token if token is not None else os.environ.get("RAY_AUTH_TOKEN")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.server_id = server_id
        self.python = python
        self.env = dict(env or {})
        if placement not in PLACEMENTS:
            raise JobError(f"Ray placement {placement!r}: choose one of {', '.join(PLACEMENTS)}")
        self.placement = placement
        self.heartbeat_s = heartbeat_s
        self.flush_s = flush_s
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return f"ray ({self.address})"

    # --- HTTP --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.address}/api/jobs/{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, self._url(path), timeout=kwargs.pop("timeout", self.timeout_s), **kwargs
            )
        except requests.RequestException as e:
            raise EngineUnavailable(
                f"the Ray cluster at {self.address} could not be reached: {e}"
            ) from e

    def _info(self, handle: str) -> dict[str, Any] | None:
        r = self._request("GET", handle)
        if r.status_code == 404:
            return None
        self._check(r, f"looking up Ray job {handle}")
        return r.json()

    def _check(self, r: requests.Response, what: str) -> None:
        if r.status_code in (401, 403):
            raise JobError(
                f"{what}: the Ray cluster at {self.address} refused the request "
                f"(HTTP {r.status_code}); give the server its token (RAY_AUTH_TOKEN)"
            )
        if r.status_code >= 500:
            raise EngineUnavailable(
                f"{what}: HTTP {r.status_code} from {self.address}: {r.text[:500]}"
            )
        if r.status_code >= 400:
            raise JobError(f"{what}: HTTP {r.status_code} from {self.address}: {r.text[:500]}")

    def check(self) -> str:
        """The cluster's Ray version; a clear error when it cannot be used."""
        try:
            r = self.session.get(f"{self.address}/api/version", timeout=self.timeout_s)
        except requests.RequestException as e:
            raise JobError(
                f"no Ray cluster answers at {self.address} ({e}); give the dashboard's address, "
                "e.g. --ray-address http://HEAD:8265"
            ) from e
        self._check(r, "checking the Ray cluster")
        self._check(self._request("GET", ""), "listing Ray jobs")
        return str(r.json().get("ray_version", "?"))

    # --- the job's command -------------------------------------------------------------------

    def entrypoint(self, spec: JobSpec) -> str:
        if spec.nnodes > 1:
            inner = [self.python, "-m", "benchkit", "job-ray-launch", "--placement",
                     self.placement, "--spec-json", spec.public_json()]  # fmt: skip
        else:
            inner = job_run_command(self.python, spec)
        cmd = shim_command(
            spec, self.python, inner, heartbeat_s=self.heartbeat_s, flush_s=self.flush_s,
            extra=["--scratch"],
        )  # fmt: skip
        return shlex.join(cmd)

    def payload(self, spec: JobSpec) -> dict[str, Any]:
        env = {**self.env, **spec.env}
        env.setdefault("OMP_NUM_THREADS", "1")
        env["RAY_JOB_STOP_SIGNAL"] = "SIGINT"
        # Ray kills the job's processes after this wait: leave the shim time after its grace
        env["RAY_JOB_STOP_WAIT_TIME_S"] = str(int(spec.stop_grace_s + 30))
        body: dict[str, Any] = {
            "submission_id": spec.job_id,
            "entrypoint": self.entrypoint(spec),
            "runtime_env": {"env_vars": env},
            "metadata": {
                "benchkit_job": spec.job_id,
                "benchkit_server": self.server_id,
                "benchkit_run": spec.run_id,
            },  # fmt: skip
        }
        if spec.nnodes == 1:  # Ray holds these for the job, and queues jobs that do not fit
            body["entrypoint_num_cpus"] = spec.cpus_per_node
            if spec.gpus:
                body["entrypoint_num_gpus"] = spec.gpus
        return body

    # --- the interface -----------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> str:
        handle = spec.job_id
        if self._info(handle) is not None:
            return handle
        try:
            r = self._request("POST", "", json=self.payload(spec), timeout=60)
            self._check(r, f"submitting job {handle} to Ray")
        except JobError:
            if self._info(handle) is not None:  # taken, though the answer was an error
                return handle
            raise
        return handle

    def observe(self, handle: str) -> Observation:
        try:
            info = self._info(handle)
        except JobError as e:
            return Observation(EngineState.UNKNOWN, None, str(e))
        if info is None:
            return Observation(EngineState.UNKNOWN, None, f"Ray has no job {handle}")
        state = _STATES.get(str(info.get("status")), EngineState.UNKNOWN)
        code = info.get("driver_exit_code")
        message = str(info.get("message") or info.get("status"))
        return Observation(state, code if isinstance(code, int) else None, message)

    def engine_logs(self, handle: str, offset: int = 0) -> tuple[str, int]:
        try:
            r = self._request("GET", f"{handle}/logs")
        except JobError:
            return "", offset
        if r.status_code != 200:
            return "", offset
        text = r.json().get("logs", "")
        return text[offset:], len(text)

    def cancel(self, handle: str, grace_s: float = 30.0) -> bool:
        r = self._request("POST", f"{handle}/stop")
        if r.status_code == 404:
            return True  # Ray does not have it: nothing runs
        self._check(r, f"stopping Ray job {handle}")
        return True

    def release(self, handle: str) -> None:
        """Delete Ray's record of an ended job. Ray's job monitor writes a job's status once
        more after it ends, and a write to a deleted record makes a new one (\"Entrypoint not
        found.\", without our metadata, so no sweep would find it): the record is deleted only
        once it has been terminal for :data:`RELEASE_SETTLE_S`, and checked gone afterwards;
        otherwise a :class:`JobError` has the caller retry later."""
        info = self._info(handle)
        if info is None:
            return
        ended_ms = info.get("end_time")
        if info.get("status") not in ("SUCCEEDED", "FAILED", "STOPPED") or not ended_ms:
            raise JobError(f"Ray job {handle} is still {info.get('status')}: released later")
        if time.time() - ended_ms / 1000 < RELEASE_SETTLE_S:
            raise JobError(f"Ray job {handle} ended moments ago: released once Ray settles")
        r = self._request("DELETE", handle)
        if r.status_code not in (200, 404):
            self._check(r, f"deleting Ray job {handle}")
        if self._info(handle) is not None:
            raise JobError(f"Ray wrote job {handle} again after it was deleted: deleted later")

    def owned(self) -> list[str]:
        r = self._request("GET", "")
        self._check(r, "listing Ray jobs")
        jobs = r.json()
        return sorted(
            str(j.get("submission_id"))
            for j in jobs
            if (j.get("metadata") or {}).get("benchkit_server") == self.server_id
            and j.get("submission_id")
        )

    def close(self) -> None:
        self.session.close()
