"""Multi-node training on a Ray cluster: torchrun on M nodes with a static rendezvous.

Runs inside the cluster (``benchkit job-ray-launch``, the driver of a Ray job, under the shim),
where ``ray`` is installed:

1. A placement group of M bundles of ``{"CPU": k, "GPU": g}`` (``STRICT_SPREAD`` by default:
   one bundle per machine; ``PACK`` puts them on one machine, for tests).
2. One actor per bundle. Actor 0 reports its node's IP address and a free port: the master.
3. Actor ``i`` runs ``benchkit job-run`` as node ``i`` of M, which prepares the code and its
   environment on that node and becomes ``torchrun --nnodes=M --node-rank=i
   --nproc-per-node=k --master-addr=IP0 --master-port=P --local-addr=<its IP>
   --max-restarts=0 -m benchkit run ...``. The bundle index is the node rank, so ranks are
   deterministic, and ``--local-addr`` keeps torchrun from advertising a name the other
   nodes cannot resolve.
4. The driver prints every node's output prefixed with ``[node i]`` (it asks the actors for
   it, so no line is lost to log forwarding), fails fast when a node fails (the others are
   stopped), and on SIGINT stops every node: SIGTERM, then SIGKILL after the grace.

A stop is SIGTERM, not the SIGINT a one-machine job gets, because the nodes get it at different
moments: on SIGTERM each rank asks for a stop at the next step boundary and the ranks agree on
it (``Run.request_stop``), so they checkpoint and stop together; a loop with no boundaries stops
after ``BENCHKIT_STOP_GRACE`` (a third of the job's grace here), and a rank whose peer left first
records the run interrupted, not failed.

This is the rendezvous SkyPilot, dstack and Modal use; training keeps the one
torchrun/Accelerate code path it has on one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchkit.remote.procs import signal_group
from benchkit.remote.spec import JobSpec

POLL_S = 0.3
#: How long the other nodes get to stop after one of them failed.
FAIL_GRACE_S = 10.0


def _say(text: str) -> None:
    sys.stdout.write(f"[benchkit] {text}\n")
    sys.stdout.flush()


class NodeProcess:
    """One node of the job, inside a Ray actor: ``benchkit job-run`` as node ``rank``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.workdir: str | None = None
        self.reader: threading.Thread | None = None

    def address(self) -> tuple[str, int]:
        import ray

        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def start(self, spec_json: str, nnodes: int, rank: int, master: tuple[str, int]) -> str:
        ip, _ = self.address()
        self.workdir = tempfile.mkdtemp(prefix=f"benchkit-job-node{rank}-")
        cmd = [sys.executable, "-m", "benchkit", "job-run", "--spec-json", spec_json,
               "--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", master[0],
               "--master-port", str(master[1]), "--local-addr", ip]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        grace = float(json.loads(spec_json).get("stop_grace_s", 30.0))
        env.setdefault("BENCHKIT_STOP_GRACE", f"{max(1.0, grace / 3):g}")  # see the module doc
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            # Ray blocks SIGINT in its workers and children inherit the mask
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}),
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return ip

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.lock:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def poll(self) -> tuple[list[str], int | None]:
        """New output lines and the exit status (None while it runs)."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None and self.reader is not None:
            self.reader.join(5)  # every line before the status
        with self.lock:
            lines, self.lines = self.lines, []
        return lines, code

    def stop(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, sig)

    def cleanup(self) -> None:
        if self.proc is not None:
            signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _Nodes:
    """The driver's view of the job's nodes."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.codes: dict[int, int] = {}

    def pump(self) -> None:
        import ray

        results = ray.get([a.poll.remote() for a in self.actors])
        for rank, (lines, code) in enumerate(results):
            for line in lines:
                sys.stdout.write(f"[node {rank}] {line}\n")
            if code is not None:
                self.codes.setdefault(rank, code)
        sys.stdout.flush()

    def running(self) -> list[int]:
        return [r for r in range(len(self.actors)) if r not in self.codes]

    def stop(self, sig: int, grace_s: float) -> None:
        import ray

        ray.get([self.actors[r].stop.remote(sig) for r in self.running()])
        deadline = time.monotonic() + grace_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(POLL_S)
            self.pump()
        if self.running():
            ray.get([self.actors[r].stop.remote(signal.SIGKILL) for r in self.running()])
            time.sleep(POLL_S)
            self.pump()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def launch(spec: JobSpec, placement: str = "STRICT_SPREAD") -> int:
    """Run ``spec`` on ``spec.nnodes`` nodes of the Ray cluster this job runs in; returns the
    exit status (the first failing node's, 130 when stopped)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    ray.init(address="auto", log_to_driver=False, logging_level="WARNING")
    bundle: dict[str, float] = {"CPU": spec.cpus_per_node}
    if spec.gpus:
        bundle["GPU"] = float(spec.gpus)
    m = spec.nnodes
    pg = placement_group([dict(bundle) for _ in range(m)], strategy=placement)
    nodes: _Nodes | None = None
    try:
        _say(f"waiting for {m} node(s) of {bundle} ({placement})")
        while True:
            ready, _ = ray.wait([pg.ready()], timeout=60)
            if ready:
                break
            _say(
                f"still waiting for {m} x {bundle}; the cluster has {ray.available_resources()} free"
            )
        actor_cls = ray.remote(NodeProcess)
        actors = [
            actor_cls.options(
                num_cpus=0,  # the bundle's resources are the node's; the actor only watches
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                ),
                **({"num_gpus": spec.gpus} if spec.gpus else {}),
            ).remote()
            for i in range(m)
        ]
        nodes = _Nodes(actors)
        master = ray.get(actors[0].address.remote())
        _say(
            f"rendezvous: master {master[0]}:{master[1]}, {m} node(s) x {spec.nproc_per_node} process(es)"
        )
        spec_json = spec.public_json()
        ips = ray.get([a.start.remote(spec_json, m, i, master) for i, a in enumerate(actors)])
        for i, ip in enumerate(ips):
            _say(f"node {i} on {ip}")
        while nodes.running():
            time.sleep(POLL_S)
            nodes.pump()
            failed = {r: c for r, c in nodes.codes.items() if c != 0}
            if failed and nodes.running():
                rank, code = next(iter(failed.items()))
                _say(f"node {rank} failed (exit status {code}); stopping the others")
                nodes.stop(signal.SIGTERM, FAIL_GRACE_S)
        failed = {r: c for r, c in nodes.codes.items() if c != 0}
        if failed:
            rank, code = min(failed.items())
            return code if code > 0 else 128 - code
        return 0
    except KeyboardInterrupt:
        # once: Ray's stop signals the shim and every process under it, then the shim passes its
        # own on, so the request comes twice; a second KeyboardInterrupt here would skip the
        # nodes' grace and kill them mid-checkpoint (the grace and SIGKILL are kept below)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        _say(f"stopping {m} node(s)")
        if nodes is not None:
            nodes.stop(signal.SIGTERM, spec.stop_grace_s)  # an agreed stop: see the module doc
        return 130
    finally:
        if nodes is not None:
            with contextlib.suppress(Exception):  # the actors are killed below anyway
                ray.get([a.cleanup.remote() for a in nodes.actors], timeout=30)
            for a in nodes.actors:
                ray.kill(a)
        remove_placement_group(pg)
