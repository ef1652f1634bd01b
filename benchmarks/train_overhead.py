"""Training overhead: step time through ``python -m benchkit run`` against plain Accelerate.

Both sides train the same small CNN on the same in-memory batches for the same number of steps
(``benchmarks/train_task.py``), on the CPU, one process. The figure is the median step time
(the first 10 steps, warm-up, left out) and the whole command's wall time (interpreter start,
imports, run record, ...), each the median over repeats, run alternately; the ratio is
BenchKit / plain. BenchKit's side runs with a throw-away ``BENCHKIT_HOME`` under ``_work``.

    python benchmarks/train_overhead.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, preset_from_args, save_results, setup_logging, summarize  # noqa: E402

log = logging.getLogger("benchmarks.train_overhead")

TASK = Path(__file__).resolve().parent / "train_task.py"
WARMUP = 10


def one(side: str, steps: int, home: Path) -> tuple[float, float]:
    """(median step seconds, command wall seconds) of one run of ``side``."""
    times_path = home / f"steps-{side}.json"
    env = {**os.environ, "BENCH_STEP_TIMES": str(times_path), "BENCHKIT_HOME": str(home / "benchkit-home")}
    if side == "benchkit":
        cmd = [sys.executable, "-m", "benchkit", "run", str(TASK), "--cpu", "--config", f"steps={steps}"]
    else:
        cmd = [sys.executable, str(TASK)]
        env["BENCH_PLAIN_STEPS"] = str(steps)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    times = json.loads(times_path.read_text())
    if len(times) != steps:
        raise RuntimeError(f"{side}: {len(times)} steps timed, expected {steps}")
    return statistics.median(times[WARMUP:]), wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)
    repeats = args.repeats or preset.repeats
    steps = 100 if args.quick else 300
    home = WORK / preset.name / "train"
    home.mkdir(parents=True, exist_ok=True)
    step = {"benchkit": [], "plain": []}
    wall = {"benchkit": [], "plain": []}
    for r in range(repeats):
        for side in ("benchkit", "plain"):
            s, w = one(side, steps, home)
            step[side].append(s)
            wall[side].append(w)
            log.info("%s run %d/%d: median step %.2f ms, command %.1f s", side, r + 1, repeats, s * 1e3, w)
    save_results(preset, "train", {
        "steps": steps, "warmup_steps": WARMUP,
        "step_s": {k: summarize(v) for k, v in step.items()},
        "wall_s": {k: summarize(v) for k, v in wall.items()},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
