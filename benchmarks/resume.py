"""Resume cost: time from ``load_state_dict`` to the first batch in the middle of an epoch.

For each library with mid-epoch resume (BenchKit's ``get_dataset`` loader, LitData's and
Streaming's ``StreamingDataLoader``): one process streams half an epoch (raw mode, local shards,
shuffle on) and saves the loader's ``state_dict`` as JSON; a new process builds the same
loader, then the clock runs from ``load_state_dict`` to the first batch. It then reads the
rest of the epoch and checks that first + second half cover every sample exactly once (the
sum of labels and the count must match; ``exact`` says whether they do). For reference, the
same new process's time to the first batch without resuming is measured too (``fresh``).

    python benchmarks/resume.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORK,
    data_dir,
    emit,
    preset_from_args,
    run_json,
    save_results,
    setup_logging,
    summarize,
)
from make_data import read_manifest  # noqa: E402
from stream import build_loader, preimport  # noqa: E402

log = logging.getLogger("benchmarks.resume")

LIBRARIES = ["benchkit", "litdata", "streaming"]


def first_half(library: str, preset_name: str, state_path: Path) -> dict:
    """Stream about half an epoch, save the state; returns what was consumed."""
    preimport(library)
    cache = Path(tempfile.mkdtemp(dir=WORK / preset_name / "cache"))
    loader = build_loader(library, "raw", "local", preset_name, None, cache)
    n = read_manifest(data_dir(preset_from_args(preset_name == "quick")))["images"]
    seen = labels = 0
    for _, y in loader:
        seen += len(y)
        labels += int(y.sum())
        if seen >= n // 2:
            break
    state = loader.state_dict()
    state_path.write_text(json.dumps(state))
    return {"seen": seen, "labels": labels}


def second_half(library: str, preset_name: str, state_path: Path, fresh: bool) -> dict:
    """New loader; time load_state_dict -> first batch, then read the rest of the epoch."""
    preimport(library)
    cache = Path(tempfile.mkdtemp(dir=WORK / preset_name / "cache"))
    loader = build_loader(library, "raw", "local", preset_name, None, cache)
    state = json.loads(state_path.read_text())
    t0 = time.perf_counter()
    if not fresh:
        loader.load_state_dict(state)
    it = iter(loader)
    _, y = next(it)
    first = time.perf_counter() - t0
    seen, labels = len(y), int(y.sum())
    for _, y in it:
        seen += len(y)
        labels += int(y.sum())
    return {"first_batch_s": first, "seen": seen, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--libraries", default=",".join(LIBRARIES))
    ap.add_argument("--phase", choices=["first", "second", "fresh"], help=argparse.SUPPRESS)
    ap.add_argument("--library", help=argparse.SUPPRESS)
    ap.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)
    (WORK / preset.name / "cache").mkdir(parents=True, exist_ok=True)
    # BenchKit's cache and checksum marks live under BENCHKIT_HOME: one under _work shared by
    # the phases, as one machine's would be across a restart (and never the user's own)
    os.environ["BENCHKIT_HOME"] = str(WORK / preset.name / "benchkit-home")
    if args.phase == "first":
        emit(first_half(args.library, preset.name, args.state))
        return 0
    if args.phase in ("second", "fresh"):
        emit(second_half(args.library, preset.name, args.state, fresh=args.phase == "fresh"))
        return 0

    manifest = read_manifest(data_dir(preset))
    n, label_sum = manifest["images"], sum(i % 10 for i in range(manifest["images"]))
    repeats = args.repeats or preset.repeats
    base = [sys.executable, __file__] + (["--quick"] if args.quick else [])
    out = {}
    for library in args.libraries.split(","):
        state_path = WORK / preset.name / f"resume-{library}.json"
        resumed, fresh, exact = [], [], []
        for _ in range(repeats):
            a = run_json(base + ["--phase", "first", "--library", library, "--state", str(state_path)])
            b = run_json(base + ["--phase", "second", "--library", library, "--state", str(state_path)])
            f = run_json(base + ["--phase", "fresh", "--library", library, "--state", str(state_path)])
            ok = a["seen"] + b["seen"] == n and a["labels"] + b["labels"] == label_sum
            resumed.append(b["first_batch_s"])
            fresh.append(f["first_batch_s"])
            exact.append(ok)
            log.info("%s: resumed after %d samples, first batch in %.3f s (fresh start %.3f s), %d left%s",
                     library, a["seen"], b["first_batch_s"], f["first_batch_s"], b["seen"],
                     "" if ok else f" -- NOT the remainder (expected {n - a['seen']})")
        out[library] = {"resume_first_batch_s": summarize(resumed), "fresh_first_batch_s": summarize(fresh),
                        "exact": all(exact), "state_bytes": state_path.stat().st_size}
    save_results(preset, "resume", {"samples": n, "results": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
