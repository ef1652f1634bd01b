"""Helpers shared by the remote-execution tests."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.1):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def job_env() -> dict[str, str]:
    """The environment jobs need to import this tree's BenchKit and stay on loopback."""
    return {
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


TINY = """
import json, os, time
import torch
import benchkit as bench


@bench.train(config={"epochs": 1, "steps": 4, "sleep": 0.0, "out": "", "fail": False,
                     "quiet": False})
def tiny(run):
    print("devices", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = run.prepare(model, opt)
    g = torch.Generator().manual_seed(run.process_index)
    for epoch in run.epochs():
        for step in range(run.config.steps):
            x = torch.randn(8, 2, generator=g)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            run.backward(loss)
            opt.step()
            opt.zero_grad()
            run.log({"loss": loss})
            if not run.config.quiet:
                run.print(f"step {step} loss {loss.item():.4f}")
            time.sleep(run.config.sleep)
        run.save_checkpoint()
    if run.config.fail:
        raise RuntimeError("asked to fail")
    weights = [p.detach().flatten().tolist() for p in run.unwrap_model(model).parameters()]
    print(f"rank {run.process_index} of {run.num_processes} weights {json.dumps(weights)}", flush=True)
"""


# --- a Bench server that runs jobs ---------------------------------------------------------------

#: fast job timing for tests: heartbeats every second, a reconciler every half second
FAST_JOBS = {
    "BENCHKIT_JOB_HEARTBEAT_S": "1",
    "BENCHKIT_JOB_FLUSH_S": "0.5",
    "BENCHKIT_JOB_RECONCILE_S": "0.5",
    "BENCHKIT_JOB_LOST_AFTER_S": "20",
    "BENCHKIT_JOB_END_GRACE_S": "5",
    # requirements that are not installed fail at once instead of searching an index
    "PIP_NO_INDEX": "1",
    "GLOO_SOCKET_IFNAME": "lo",
    "OMP_NUM_THREADS": "1",
}


def job_server(tmp_root: Path, *flags: str, **env: str):
    """``python -m benchkit server FLAGS`` (``--executor ...``) on a free port, started."""
    import subprocess
    import sys
    import tempfile

    from serverkit import BenchServer, child_env

    class JobServer(BenchServer):
        def start(self) -> JobServer:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchkit", "server", *self._flags(), "--port",
                 str(self.port), *flags],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(**self.env),
                start_new_session=True,
            )  # fmt: skip
            log.close()
            self.wait_ready()
            return self

    data = Path(tempfile.mkdtemp(prefix="jobsrv-", dir=tmp_root))
    # the server's and its jobs' BenchKit home (caches, run directories): never the real one
    home = {"BENCHKIT_HOME": str(data.parent / f"{data.name}-home")}
    server = JobServer(data, **{**FAST_JOBS, **home, **env})
    server.cli("projects")  # schema and key file, as an admin would before the first start
    return server.start()


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel of one module ``name`` (``source``) in ``directory``, for pip to
    install offline (``PIP_FIND_LINKS=directory PIP_NO_INDEX=1``)."""
    import base64
    import hashlib
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


def bk(capsys, *args) -> tuple[int, str, str]:
    """``benchkit ARGS`` in this process (the commands that only talk to the server: no
    interpreter to start, no torch to import): (exit status, stdout, stderr)."""
    from benchkit.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err
