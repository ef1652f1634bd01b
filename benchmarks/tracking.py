#!/usr/bin/env python
"""Experiment tracking on a Bench server: ingest rate, chart latency, runs page.

    PYTHONPATH=. .venv/bin/python benchmarks/tracking.py                 # SQLite and PostgreSQL
    PYTHONPATH=. .venv/bin/python benchmarks/tracking.py --db sqlite --points 200000 --runs 100

Runs in the project's environment (``benchkit[server]``; PostgreSQL from Debian's package for
``--db postgresql``). For each database it starts a real server (``python -m benchkit server``
on 127.0.0.1, a fresh data directory; PostgreSQL in a temporary cluster) and measures over HTTP:

- **ingest**: one writer posting its journal in batches of 2,500 records of two metrics (5,000
  points, what the tracker's sender sends at most), back to back, for ``--points`` points: points
  stored per second, each batch one transaction acknowledged before the next is sent; then four
  writers (four runs) at once, aggregate points per second;
- **chart**: the latency of ``GET /api/v1/runs/<run>/chart`` on that run's metric of
  ``--points / 2`` points (with ``--points 2000000``: a million), whole run in 1,000 buckets,
  a 10% zoom, and a zoom on 2,000 steps (raw points), median and 95th percentile of 20;
- **runs page**: ``--runs`` runs (each a ``run.json`` and 3 metrics of 20 steps), then the
  dashboard's runs table ``GET /runs`` (HTML, every hyperparameter and metric a column) and the
  JSON table ``GET /api/v1/tracking/runs``, median of 5;
- **log() cost**: ``BenchTracker.log`` of three floats, per call, with the server as the store
  and with a local directory store (``--log-calls`` calls each, the median of 5 rounds), and
  how long ``finish()`` then takes to have everything in the store (SQLite run only).

Writes ``benchmarks/_work/tracking.json`` and prints a table (for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchkit.store.http import HttpStore  # noqa: E402

RECORDS_PER_BATCH = 2500
WORK = ROOT / "benchmarks" / "_work"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m benchkit server`` with its own data directory (and database URL)."""

    def __init__(self, data: Path, db: str | None) -> None:
        self.data = data
        self.flags = ["--data-dir", str(data)] + (["--db", db] if db else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        py = sys.executable
        out = subprocess.run(
            [py, "-m", "benchkit", "server", "create-project", "bench", "--json", *self.flags],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        self.key = json.loads(out.stdout)["api_key"]
        port = free_port()
        self.log = open(data / "server.log", "wb")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [py, "-m", "benchkit", "server", *self.flags, "--port", str(port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(self.url + "/api/v1/info", timeout=2)
                break
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()  # never leave a server behind
                    self.proc.wait()
                    raise SystemExit(
                        f"the server did not start; see {data / 'server.log'}"
                    ) from None
                time.sleep(0.2)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def batches(run_id: str, n_points: int, t0: float):
    """The journal of one writer logging ``loss`` and ``accuracy`` every step."""
    steps = n_points // 2
    for first in range(0, steps, RECORDS_PER_BATCH):
        recs = [
            {
                "t": t0 + i * 0.01,
                "step": i,
                "values": {
                    "loss": math.exp(-i / steps) + 0.01 * math.sin(i),
                    "accuracy": i / steps,
                },
            }
            for i in range(first, min(steps, first + RECORDS_PER_BATCH))
        ]
        yield {"writer": f"{run_id}-w", "first_seq": first + 1, "records": recs}


def ingest(server: Server, run_id: str, n_points: int) -> float:
    """Seconds to store ``n_points`` points of one writer, batch after batch."""
    bodies = [json.dumps(b).encode() for b in batches(run_id, n_points, time.time())]
    session = requests.Session()
    session.headers.update(server.session.headers)
    session.headers["Content-Type"] = "application/json"
    url = f"{server.url}/api/v1/runs/{run_id}/metrics"
    t0 = time.perf_counter()
    for body in bodies:
        r = session.post(url, data=body, timeout=600)
        r.raise_for_status()
    return time.perf_counter() - t0


def timed(fn, n: int) -> dict:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "n": n,
    }


def chart_latency(server: Server, run_id: str, steps: int) -> dict:
    url = f"{server.url}/api/v1/runs/{run_id}/chart"

    def get(**params):
        r = server.session.get(url, params={"key": "loss", **params}, timeout=60)
        r.raise_for_status()
        return r.json()["series"][0]

    whole = get(n=1000)
    assert whole["points"] == steps, whole["points"]
    out = {"points": steps, "buckets": len(whole["x"]), "tier": whole["tier"]}
    out["whole_1000_buckets"] = timed(lambda: get(n=1000), 20)
    lo = steps // 2
    out["zoom_10pct"] = timed(lambda: get(n=1000, x0=lo, x1=lo + steps // 10), 20)
    out["zoom_2000_steps_raw"] = timed(lambda: get(n=1000, x0=lo, x1=lo + 1999), 20)
    return out


def runs_page(server: Server, n_runs: int) -> dict:
    store = HttpStore(server.url, server.key)

    def make(i: int) -> None:
        rid = f"20261201-000000-run{i:05d}-{i:04x}"
        store.put_json(
            f"runs/{rid}/run.json",
            {"id": rid, "name": f"sweep-{i}", "status": "finished", "world_size": 1,
             "config": {"lr": 10 ** -(1 + i % 4), "batch_size": 2 ** (4 + i % 3), "seed": i},
             "started": "2026-12-01T00:00:00+00:00", "ended": "2026-12-01T00:10:00+00:00",
             "monitor": "val_accuracy", "mode": "max"},
        )  # fmt: skip
        recs = [
            {"t": 1e9 + s, "step": s,
             "values": {"loss": 1 / (s + 1 + i % 7), "val_accuracy": s / 20, "lr": 0.1}}
            for s in range(20)
        ]  # fmt: skip
        r = server.session.post(
            f"{server.url}/api/v1/runs/{rid}/metrics",
            json={"writer": "w", "first_seq": 1, "records": recs},
            timeout=120,
        )
        r.raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(n_runs)))
    made = time.perf_counter() - t0
    store.close()

    def html():
        r = server.session.get(f"{server.url}/runs", timeout=120)
        r.raise_for_status()
        assert r.text.count('data-run="') == n_runs

    def api():
        r = server.session.get(f"{server.url}/api/v1/tracking/runs", timeout=120)
        r.raise_for_status()
        assert len(r.json()["runs"]) == n_runs

    html()  # warm
    return {
        "runs": n_runs,
        "created_s": round(made, 1),
        "html_runs_table": timed(html, 5),
        "json_runs_table": timed(api, 5),
    }


def log_cost(server: Server, calls: int, work: Path) -> dict:
    """Per-call cost of ``BenchTracker.log`` with the server as the store and with a local one."""
    os.environ["BENCHKIT_API_KEY"] = server.key
    os.environ.setdefault("BENCHKIT_HOME", tempfile.mkdtemp(prefix="home-", dir=work))
    from benchkit.training.tracker import BenchTracker

    out = {}
    for label, store in (("server", server.url), ("local", str(work / "local-store"))):
        rounds, finish = [], []
        for r in range(5):
            tracker = BenchTracker(f"cost-{label}-{r}", store=store)
            tracker.start()
            t0 = time.perf_counter()
            for i in range(calls):
                tracker.log({"loss": 0.5, "acc": 0.25, "lr": 1e-3}, step=i)
            rounds.append((time.perf_counter() - t0) / calls * 1e6)
            t0 = time.perf_counter()
            tracker.finish()
            finish.append(time.perf_counter() - t0)
            assert tracker.unsent is None, tracker.unsent
        out[label] = {
            "us_per_call": round(statistics.median(rounds), 2),
            "finish_s": round(statistics.median(finish), 2),
            "calls": calls,
        }
    return out


def bench_db(kind: str, args, work: Path) -> dict:
    pg = None
    db = None
    if kind == "postgresql":
        from serverkit import Postgres, pg_bin

        pg = Postgres(pg_bin()).start()
        db = pg.create_database()
    data = Path(tempfile.mkdtemp(prefix=f"track-{kind}-", dir=work))
    server = Server(data, db)
    try:
        out: dict = {"db": kind}
        dt = ingest(server, "big-run", args.points)
        out["ingest_1_writer"] = {"points": args.points, "seconds": round(dt, 2),
                                  "points_per_s": round(args.points / dt)}  # fmt: skip
        print(f"[{kind}] ingest, 1 writer: {args.points / dt:,.0f} points/s", flush=True)
        per = args.points // 4
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=ingest, args=(server, f"par-{i}", per)) for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt4 = time.perf_counter() - t0
        out["ingest_4_writers"] = {"points": per * 4, "seconds": round(dt4, 2),
                                   "points_per_s": round(per * 4 / dt4)}  # fmt: skip
        print(f"[{kind}] ingest, 4 writers: {per * 4 / dt4:,.0f} points/s", flush=True)
        out["chart"] = chart_latency(server, "big-run", args.points // 2)
        print(f"[{kind}] chart: {out['chart']}", flush=True)
        out["runs_page"] = runs_page(server, args.runs)
        print(f"[{kind}] runs page: {out['runs_page']}", flush=True)
        if kind == "sqlite" and args.log_calls:
            out["log_cost"] = log_cost(server, args.log_calls, work)
            print(f"[{kind}] log() cost: {out['log_cost']}", flush=True)
        return out
    finally:
        server.stop()
        if pg is not None:
            pg.stop()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument(
        "--points", type=int, default=2_000_000, help="points of the ingest run (two metrics)"
    )
    p.add_argument("--runs", type=int, default=1000, help="runs for the runs page")
    p.add_argument("--log-calls", type=int, default=100_000, help="log() calls per round (0: skip)")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = {
        "machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "results": [bench_db(k, args, WORK) for k in kinds],
    }
    (WORK / "tracking.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
