"""Bench server throughput: upload and download MB/s through the server against the same store
used directly, with the server's memory measured.

    PYTHONPATH=. .venv/bin/python benchmarks/server.py                  # 1 GB object, 3 repeats
    PYTHONPATH=. .venv/bin/python benchmarks/server.py --size 256MB -r 1

Runs in the project's environment (needs ``benchkit[server]`` and psutil, nothing else).

What it measures, on one machine over loopback:

- ``direct``: a :class:`~benchkit.store.LocalStore` in a temporary directory, ``put_file`` then
  ``get_file`` of one large random file (what a local store costs: one copy each way, fsync);
- ``server``: the same calls on an :class:`~benchkit.store.http.HttpStore` whose server keeps its
  blobs in a LocalStore on the same disk (sha256 on both sides, HTTP on loopback, the upload
  session's parts, ``--parallel`` of them in flight, one fsync of the whole and the final
  rename); direct and server rounds alternate, so both see the same load;
- small objects: ``put`` + ``get`` of 64 KiB objects from 8 threads, objects per second;
- the server process's peak RSS (sampled every 10 ms by psutil) and its growth over idle, and
  the client's peak RSS growth: both must stay far below the object's size;
- streaming (``--stream-samples``, 0 to skip): one dataset of 48 KiB tensors chunked once, put in
  the local store and on the server, then read by BenchKit's loader (``bench.get_dataset``, the
  loader ``benchmarks/stream.py`` measures, shuffled, 2 workers) for two epochs from a cold cache:
  epoch 1 downloads every chunk, epoch 2 reads the cache.

Writes ``benchmarks/_work/server.json`` and prints a table (for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit.fsutil import sha256_file  # noqa: E402
from benchkit.store import LocalStore  # noqa: E402
from benchkit.store.http import HttpStore  # noqa: E402
from benchkit.units import human_bytes, parse_size  # noqa: E402

MiB = 1024 * 1024


class Sampler(threading.Thread):
    """Peak RSS of one process, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.01):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = sys.executable
    out = subprocess.run(
        [py, "-m", "benchkit", "server", "create-project", "bench", "--json", "--data-dir", str(data)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    key = json.loads(out.stdout)["api_key"]
    port = free_port()
    with open(data / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [py, "-m", "benchkit", "server", "--data-dir", str(data), "--port", str(port),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(url + "/api/v1/info", timeout=2)
            return proc, url, key
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {data / 'server.log'}") from None
            time.sleep(0.2)


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` so far (all its threads)."""
    t = proc.cpu_times()
    return t.user + t.system


def round_trip(
    store, src: Path, dest: Path, key: str, server: psutil.Process
) -> tuple[float, float, tuple[float, float], tuple[float, float]]:
    """Seconds for put_file and get_file (the page cache is warm for both paths alike), and
    the CPU seconds the client and the server process spent on each: (client, server)."""
    me = psutil.Process()
    c0, s0, t0 = cpu_seconds(me), cpu_seconds(server), time.perf_counter()
    store.put_file(key, src)
    c1, s1, t1 = cpu_seconds(me), cpu_seconds(server), time.perf_counter()
    store.get_file(key, dest)
    c2, s2, t2 = cpu_seconds(me), cpu_seconds(server), time.perf_counter()
    assert dest.stat().st_size == src.stat().st_size
    dest.unlink()
    store.delete(key)
    return t1 - t0, t2 - t1, (c1 - c0, s1 - s0), (c2 - c1, s2 - s1)


def sha256_cpu(path: Path) -> float:
    """CPU seconds of one sha256 pass over ``path`` (page cache warm)."""
    c0 = time.process_time()
    sha256_file(path)
    return time.process_time() - c0


def small_objects(store, n: int, size: int = 64 * 1024, threads: int = 8) -> float:
    data = os.urandom(size)

    def one(i: int) -> None:
        store.put(f"small/{i:06d}", data)
        assert store.get(f"small/{i:06d}") == data

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - t0
    store.delete_prefix("small/")
    return n / elapsed


def stream_epochs(url: str, name: str, home: Path, env: dict[str, str]) -> list[float]:
    """Samples per second of two epochs of BenchKit's loader over dataset ``name`` at ``url``,
    with a fresh cache (BENCHKIT_HOME) so epoch 1 fetches every chunk."""
    import benchkit as bench

    old = {k: os.environ.get(k) for k in ("BENCHKIT_HOME", *env)}
    os.environ.update({"BENCHKIT_HOME": str(home), **env})
    try:
        loader = bench.get_dataset(
            None, url, name, 64, 2, shuffle=True, seed=0, persistent_workers=False
        )
        rates = []
        for _ in range(2):
            n, t0 = 0, time.perf_counter()
            for labels, _data in loader:
                n += len(labels)
            rates.append(n / (time.perf_counter() - t0))
        return rates
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def streaming(work: Path, url: str, key: str, samples: int) -> dict:
    """The streaming comparison: local store against the server (same chunks)."""
    import torch

    from benchkit.data.index import dataset_prefix
    from benchkit.data.writer import chunk_samples

    name = "bench"
    staging = work / "stream-staging"
    gen = torch.Generator().manual_seed(0)
    rows = (
        (i % 10, torch.randint(0, 256, (48 * 1024,), dtype=torch.uint8, generator=gen))
        for i in range(samples)
    )
    index = chunk_samples(rows, name, staging, chunk_bytes=16_000_000, workers=1).index
    server = HttpStore(url, key)
    prefix = dataset_prefix(name)
    for c in index.chunks:
        server.put_file(prefix + c.file, staging / prefix / c.file)
    server.put_file(prefix + "index.json", staging / prefix / "index.json")
    out = {"samples": samples, "chunks": len(index.chunks), "bytes": index.total_bytes}
    out["local"] = stream_epochs(str(staging), name, work / "home-local", {})
    out["server"] = stream_epochs(url, name, work / "home-server", {"BENCHKIT_API_KEY": key})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GB", help="size of the large object (default 1GB)")
    ap.add_argument("--repeats", "-r", type=int, default=3)
    ap.add_argument("--small", type=int, default=2000, help="number of 64 KiB objects")
    ap.add_argument("--stream-samples", type=int, default=4000, help="0 skips the streaming part")
    ap.add_argument(
        "--parallel", type=int, default=None,
        help="parts/ranges of one object in flight (default: HttpStore's)",
    )  # fmt: skip
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "server"))
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "object.bin"
    make_file(src, size)
    data = Path(tempfile.mkdtemp(prefix="srv-", dir=work))
    proc, url, key = start_server(data)
    results: dict = {"size": size, "repeats": args.repeats, "cpus": os.cpu_count()}
    results["load_before"] = os.getloadavg()
    try:
        direct = LocalStore(work / "direct")
        http = HttpStore(url, key, parallel=args.parallel)
        http.put("warm", b"x")
        me = psutil.Process()
        idle_rss = psutil.Process(proc.pid).memory_info().rss
        client_base = me.memory_info().rss
        stores = {"direct": direct, "server": http}
        times: dict[str, tuple[list, list]] = {name: ([], []) for name in stores}
        cpu: dict[str, tuple[list, list]] = {name: ([], []) for name in stores}
        server_proc = psutil.Process(proc.pid)
        sampler = Sampler(proc.pid)
        client = Sampler(me.pid)
        sampler.start()
        client.start()
        for r in range(args.repeats):  # direct and server alternate, so both see the same load
            for name, store in stores.items():
                p, g, pc, gc = round_trip(store, src, work / "back.bin", f"big/{r}.bin", server_proc)
                times[name][0].append(p)
                times[name][1].append(g)
                cpu[name][0].append(pc)
                cpu[name][1].append(gc)
        server_peak, client_peak = sampler.stop(), client.stop()
        for name, store in stores.items():
            puts, gets = times[name]
            results[name] = {
                "put_MBps": size / min(puts) / 1e6,
                "get_MBps": size / min(gets) / 1e6,
                "put_s": puts,
                "get_s": gets,
                "small_objects_per_s": small_objects(store, args.small),
                # (client, server) CPU seconds of each put and get
                "put_cpu_s": cpu[name][0],
                "get_cpu_s": cpu[name][1],
            }
        results["sha256_pass_cpu_s"] = sha256_cpu(src)
        results["server"]["server_idle_rss"] = idle_rss
        results["server"]["server_peak_rss"] = server_peak
        results["server"]["client_rss_growth"] = client_peak - client_base
        if args.stream_samples:
            results["streaming"] = streaming(work, url, key, args.stream_samples)
    finally:
        proc.terminate()
        proc.wait(30)
    results["load_after"] = os.getloadavg()
    results["parallel"] = http.parallel
    d, s = results["direct"], results["server"]
    results["ratio"] = {
        "put": s["put_MBps"] / d["put_MBps"],
        "get": s["get_MBps"] / d["get_MBps"],
        "small": s["small_objects_per_s"] / d["small_objects_per_s"],
    }
    (work.parent / "server.json").write_text(json.dumps(results, indent=1))
    print(
        f"object {human_bytes(size)}, best of {args.repeats}, {http.parallel} part(s) in flight; "
        f"load {results['load_before'][0]:.1f} before, {results['load_after'][0]:.1f} after"
    )
    print(f"{'':8} {'upload MB/s':>12} {'download MB/s':>14} {'64 KiB put+get /s':>18}")
    for name in ("direct", "server"):
        r = results[name]
        print(
            f"{name:8} {r['put_MBps']:12.0f} {r['get_MBps']:14.0f} {r['small_objects_per_s']:18.0f}"
        )
    ratio = results["ratio"]
    print(f"{'ratio':8} {ratio['put']:12.2f} {ratio['get']:14.2f} {ratio['small']:18.2f}")
    print(
        f"server RSS: idle {human_bytes(s['server_idle_rss'])}, peak {human_bytes(s['server_peak_rss'])}; "
        f"client RSS growth {human_bytes(s['client_rss_growth'])}"
    )
    print(
        f"CPU seconds per object, median (client / server process; one sha256 pass of the object: "
        f"{results['sha256_pass_cpu_s']:.2f} s):"
    )
    for name in ("direct", "server"):
        r = results[name]
        up = [statistics.median(x[i] for x in r["put_cpu_s"]) for i in (0, 1)]
        down = [statistics.median(x[i] for x in r["get_cpu_s"]) for i in (0, 1)]
        srv = "" if name == "direct" else f" / {up[1]:.2f}"
        srv_d = "" if name == "direct" else f" / {down[1]:.2f}"
        print(f"  {name:8} upload {up[0]:.2f}{srv}   download {down[0]:.2f}{srv_d}")
    if "streaming" in results:
        st = results["streaming"]
        print(
            f"streaming {st['samples']} samples ({human_bytes(st['bytes'])}, {st['chunks']} chunks), "
            "samples/s epoch 1 (cold cache) / epoch 2 (warm):"
        )
        for name in ("local", "server"):
            print(f"  {name:8} {st[name][0]:10.0f} {st[name][1]:10.0f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
