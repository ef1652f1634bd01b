"""Shared helpers for the benchmarks: paths, presets, timing statistics, result files.

Each benchmark script imports this module by path (``benchmarks/`` is not a package that gets
installed), so it keeps to the standard library plus numpy.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = Path(os.environ.get("BENCH_WORK", HERE / "_work"))

log = logging.getLogger("benchmarks")

#: every library converts with this many worker processes and streams with this many
#: DataLoader workers, at this batch size and shard size
WORKERS = 2
BATCH_SIZE = 64
SHARD_BYTES = 64 * 1024 * 1024
IMAGE_SIZE = 224
SEED = 7


@dataclass(frozen=True)
class Preset:
    """A size setting: how many images and how many repeats per figure."""

    name: str
    images: int
    repeats: int


PRESETS = {
    "full": Preset("full", 10_000, 3),
    "quick": Preset("quick", 1_000, 1),
}


def preset_from_args(quick: bool) -> Preset:
    return PRESETS["quick" if quick else "full"]


def data_dir(preset: Preset) -> Path:
    """The JPEG folder made by make_data.py for this preset."""
    return WORK / preset.name / "images"


def shards_dir(preset: Preset, library: str) -> Path:
    """Where ``library`` keeps its converted shards for this preset."""
    return WORK / preset.name / "shards" / library


def results_path(preset: Preset, benchmark: str) -> Path:
    return WORK / preset.name / "results" / f"{benchmark}.json"


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("BENCH_LOG", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def summarize(values: list[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements (min, max, and the quartiles when n >= 4)."""
    vals = sorted(values)
    out: dict[str, Any] = {
        "median": statistics.median(vals),
        "min": vals[0],
        "max": vals[-1],
        "n": len(vals),
        "values": vals,
    }
    if len(vals) >= 4:
        q = statistics.quantiles(vals, n=4)
        out["q1"], out["q3"] = q[0], q[2]
    return out


def save_results(preset: Preset, benchmark: str, payload: dict[str, Any]) -> Path:
    """Write one benchmark's results (with the machine description) as JSON, atomically."""
    path = results_path(preset, benchmark)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "preset": preset.name,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        **payload,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    log.info("results written to %s", path)
    return path


def load_results(preset: Preset, benchmark: str) -> dict[str, Any] | None:
    path = results_path(preset, benchmark)
    return json.loads(path.read_text()) if path.exists() else None


def machine() -> dict[str, Any]:
    """CPU count, memory and CPU model, as the doc reports them."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return info


def drop_page_cache() -> bool:
    """Drop the OS page cache (needs root); False when the system refuses."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def evict(*roots: Path) -> bool:
    """Drop the files under ``roots`` from the page cache (``posix_fadvise(DONTNEED)``).

    Only these files: the Python libraries the benchmark imports stay cached, so a cold run
    measures reading the data, not re-reading torch from disk. Returns False if the system
    refused; the caller then reports page-cache (warm) reads.
    """
    ok = True
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            except (OSError, AttributeError):
                ok = False
    return ok


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _rss_kb(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed) resident KB of one process; (0, 0) once it is gone."""
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    anon += int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


class PeakMemory:
    """Peak resident memory of this process and its children (DataLoader workers, chunking
    workers), summed over the tree and sampled every ``interval`` s in a thread.

    ``anon_mb`` is what the processes allocated (heap, buffers, and shared memory such as
    DataLoader batches, counted in each process that maps it); ``file_mb`` the pages of memory-mapped files
    (reclaimable page cache, shared by every process that maps them): reported apart because
    only the first is memory a machine must have free.
    """

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval = interval
        self.anon_mb = self.file_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            anon = file = 0
            for pid in _tree(me):
                a, f = _rss_kb(pid)
                anon, file = anon + a, file + f
            self.anon_mb = max(self.anon_mb, anon / 1024)
            self.file_mb = max(self.file_mb, file / 1024)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def dir_stats(path: Path) -> tuple[int, int]:
    """(total bytes, file count) of every regular file under ``path``."""
    total = count = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            count += 1
    return total, count


def run_json(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run a measurement in a fresh interpreter; its last stdout line is a JSON object.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds, once the whole process
    group (DataLoader workers, helper processes) is killed.
    """
    full_env = {**os.environ, **(env or {})}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            raise
    proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """Print a measurement as the one JSON line run_json() reads."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
