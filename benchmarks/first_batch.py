"""Time to the first batch of a cold epoch, for BenchKit, at several chunk sizes.

The same images are chunked by BenchKit at 16, 64 and 256 MiB; before each run the chunk files
leave the page cache and BenchKit's record of verified chunks is empty (a fresh BENCHKIT_HOME),
so the epoch is as cold as a first run on a new machine. The clock runs from creating the
loader's iterator (raw mode, ``common.BATCH_SIZE``, ``common.WORKERS`` workers, shuffle on) to
its first batch. Each run is a fresh interpreter.

    python benchmarks/first_batch.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORK,
    data_dir,
    emit,
    evict,
    preset_from_args,
    run_json,
    save_results,
    setup_logging,
    summarize,
)
from convert import convert_benchkit  # noqa: E402
from make_data import ensure_dataset, list_samples  # noqa: E402

log = logging.getLogger("benchmarks.first_batch")

CHUNK_MIB = [16, 64, 256]


def chunked(preset, mib: int) -> Path:
    out = WORK / preset.name / "shards" / f"benchkit-{mib}mib"
    if not (out / "datasets").exists():
        convert_benchkit(list_samples(data_dir(preset)), out, chunk_bytes=mib << 20)
    return out


def run_one(url: str) -> dict:
    from stream import benchkit_loader

    home = tempfile.mkdtemp(prefix="bk-home-", dir=WORK)
    os.environ["BENCHKIT_HOME"] = home  # no checksum marks: every chunk is unverified here
    try:
        import benchkit.data.loader  # noqa: F401 - import time is not the first batch's

        evict(Path(url))
        loader = benchkit_loader(url, "raw")
        t0 = time.perf_counter()
        it = iter(loader)
        files, labels = next(it)
        first = time.perf_counter() - t0
        n = len(labels)
        del it
        return {"first_batch_s": first, "samples": n}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_logging()
    if args.one:
        emit(run_one(args.one))
        return 0
    preset = preset_from_args(args.quick)
    ensure_dataset(data_dir(preset), preset.images)
    repeats = args.repeats or preset.repeats
    dirs = {mib: chunked(preset, mib) for mib in CHUNK_MIB}
    runs: dict[int, list[float]] = {mib: [] for mib in CHUNK_MIB}
    for _ in range(repeats):
        for mib, d in dirs.items():  # interleaved, so background load hits every size alike
            res = run_json([sys.executable, __file__, "--one", str(d)])
            runs[mib].append(res["first_batch_s"])
            log.info("chunks of %d MiB: first batch of a cold epoch in %.3f s", mib, res["first_batch_s"])
    save_results(preset, "first_batch", {"chunk_mib": {str(m): summarize(v) for m, v in runs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
